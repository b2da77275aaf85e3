/*
 * methane_authz: the emulator's IoT Core authorisation inside mosquitto 2.0 (plugin API v5).
 *
 * Why a plugin: IoT Core decides per X.509 certificate (status + attached policies), applies
 * changes at once, and answers some requests to one connection only. mosquitto's own ACL file
 * knows usernames, not certificates, and is reloaded only on SIGHUP.
 *
 * Input: an authz file (plugin_opt_authz_file) the Python registry rewrites atomically (rename):
 *   S <certId> <STATUS> <role>          role: device | admin
 *   R <certId> <A|D> <C|P|S|R> <glob>   Allow/Deny Connect/Publish/Subscribe/Receive on a resource
 *                                       ("client/<id>", "topic/<t>", "topicfilter/<f>"); the glob
 *                                       knows '*' and '?' and the variable ${iot:ClientId}.
 * The file is re-read whenever its inode/mtime/size change (checked at every CONNECT and tick);
 * connected clients whose certificate is no longer ACTIVE are then disconnected.
 *
 * Output:
 *   - the stats file (plugin_opt_stats_file), JSON, rewritten about once a second: per client id
 *     the certificate, publishes in and out, and the largest count seen in one second.
 *   - messages on "$aws/..." from devices carry user properties emu-client-id / emu-cert-id so
 *     the services know who asked (clients may not set these names themselves).
 *   - an admin publishing to "$emulator/deliver" with payload "<clientId>\n<topic>\n<payload>"
 *     makes the broker deliver <payload> on <topic> to that one client, without a subscription.
 *
 * The certificate id is the SHA-256 of the certificate's DER encoding in lower-case hex, as on
 * IoT Core.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <mqtt_protocol.h>

#define CERT_ID_LEN 64
#define DELIVER_TOPIC "$emulator/deliver"
#define PROP_CLIENT "emu-client-id"
#define PROP_CERT "emu-cert-id"

struct rule {
	char effect;   /* 'A' or 'D' */
	char action;   /* 'C', 'P', 'S', 'R' */
	char *pattern;
};

struct cert {
	char id[CERT_ID_LEN + 1];
	char status[24];
	int admin;
	struct rule *rules;
	size_t nrules, caprules;
};

struct conn {
	const struct mosquitto *client;
	char *client_id;
	char cert_id[CERT_ID_LEN + 1];
	unsigned long in, out, window_count, max_per_s;
	time_t window;
	struct conn *next;
};

static mosquitto_plugin_id_t *plugin_id;
static char *authz_path;
static char *stats_path;
static struct cert *certs;
static size_t ncerts;
static struct stat authz_stat;
static int authz_loaded;
static struct conn *conns;
static time_t last_stats;

static void free_certs(struct cert *list, size_t n)
{
	for(size_t i = 0; i < n; i++){
		for(size_t j = 0; j < list[i].nrules; j++) free(list[i].rules[j].pattern);
		free(list[i].rules);
	}
	free(list);
}

static struct cert *find_cert_in(struct cert *list, size_t n, const char *id)
{
	for(size_t i = 0; i < n; i++){
		if(!strcmp(list[i].id, id)) return &list[i];
	}
	return NULL;
}

static struct cert *find_cert(const char *id)
{
	return find_cert_in(certs, ncerts, id);
}

/* Parse the whole file first and swap only on success: a torn or bad file changes nothing. */
static int load_authz(void)
{
	FILE *f = fopen(authz_path, "r");
	if(!f){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "methane_authz: cannot open %s: %s", authz_path, strerror(errno));
		return -1;
	}
	struct cert *list = NULL;
	size_t n = 0, cap = 0;
	char *line = NULL;
	size_t linecap = 0;
	ssize_t len;
	int ok = 1, lineno = 0;
	while((len = getline(&line, &linecap, f)) >= 0){
		lineno++;
		while(len > 0 && (line[len-1] == '\n' || line[len-1] == '\r')) line[--len] = '\0';
		if(len == 0 || line[0] == '#') continue;
		if(line[0] == 'S' && line[1] == ' '){
			char id[CERT_ID_LEN + 2], status[24], role[16];
			if(sscanf(line + 2, "%65s %23s %15s", id, status, role) != 3 || strlen(id) != CERT_ID_LEN){ ok = 0; break; }
			if(n == cap){
				cap = cap ? cap * 2 : 16;
				struct cert *grown = realloc(list, cap * sizeof(*list));
				if(!grown){ ok = 0; break; }
				list = grown;
			}
			memset(&list[n], 0, sizeof(list[n]));
			memcpy(list[n].id, id, CERT_ID_LEN + 1);
			memcpy(list[n].status, status, sizeof(status));
			list[n].admin = !strcmp(role, "admin");
			n++;
		}else if(line[0] == 'R' && line[1] == ' '){
			char id[CERT_ID_LEN + 2];
			char effect, action;
			int consumed = 0;
			if(sscanf(line + 2, "%65s %c %c %n", id, &effect, &action, &consumed) != 3 || consumed == 0){ ok = 0; break; }
			if((effect != 'A' && effect != 'D') || !strchr("CPSR", action)){ ok = 0; break; }
			struct cert *c = find_cert_in(list, n, id);
			if(!c){ ok = 0; break; }
			if(c->nrules == c->caprules){
				c->caprules = c->caprules ? c->caprules * 2 : 8;
				struct rule *grown = realloc(c->rules, c->caprules * sizeof(*c->rules));
				if(!grown){ ok = 0; break; }
				c->rules = grown;
			}
			char *pat = strdup(line + 2 + consumed);
			if(!pat){ ok = 0; break; }
			c->rules[c->nrules].effect = effect;
			c->rules[c->nrules].action = action;
			c->rules[c->nrules].pattern = pat;
			c->nrules++;
		}else{
			ok = 0;
			break;
		}
	}
	free(line);
	fclose(f);
	if(!ok){
		mosquitto_log_printf(MOSQ_LOG_ERR, "methane_authz: %s line %d is malformed; keeping the previous rules", authz_path, lineno);
		free_certs(list, n);
		return -1;
	}
	free_certs(certs, ncerts);
	certs = list;
	ncerts = n;
	return 0;
}

static void kick_inactive(void)
{
	/* Collect first, kick afterwards: a kick runs on_disconnect, which frees list entries. */
	size_t n = 0, cap = 0;
	char **victims = NULL;
	for(struct conn *c = conns; c; c = c->next){
		struct cert *cert = find_cert(c->cert_id);
		if(cert && !strcmp(cert->status, "ACTIVE")) continue;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "methane_authz: disconnecting %s: certificate %s is no longer ACTIVE", c->client_id, c->cert_id);
		if(n == cap){
			cap = cap ? cap * 2 : 8;
			char **grown = realloc(victims, cap * sizeof(*victims));
			if(!grown) break;
			victims = grown;
		}
		victims[n] = strdup(c->client_id);
		if(victims[n]) n++;
	}
	for(size_t i = 0; i < n; i++){
		mosquitto_kick_client_by_clientid(victims[i], false);
		free(victims[i]);
	}
	free(victims);
}

/* Reload when the file was replaced; returns 1 if the rules changed. */
static int refresh(void)
{
	struct stat st;
	if(stat(authz_path, &st) != 0) return 0;
	if(authz_loaded && st.st_ino == authz_stat.st_ino && st.st_size == authz_stat.st_size
			&& st.st_mtim.tv_sec == authz_stat.st_mtim.tv_sec && st.st_mtim.tv_nsec == authz_stat.st_mtim.tv_nsec){
		return 0;
	}
	if(load_authz() != 0) return 0;
	authz_stat = st;
	authz_loaded = 1;
	return 1;
}

static int cert_id_of(const struct mosquitto *client, char out[CERT_ID_LEN + 1])
{
	X509 *x = mosquitto_client_certificate(client);
	if(!x) return -1;
	unsigned char *der = NULL;
	int len = i2d_X509(x, &der);
	X509_free(x);
	if(len <= 0) return -1;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	int rc = EVP_Digest(der, (size_t)len, md, &mdlen, EVP_sha256(), NULL);
	OPENSSL_free(der);
	if(rc != 1 || mdlen != 32) return -1;
	for(unsigned int i = 0; i < 32; i++) sprintf(out + 2 * i, "%02x", md[i]);
	out[CERT_ID_LEN] = '\0';
	return 0;
}

static struct conn *find_conn(const struct mosquitto *client)
{
	for(struct conn *c = conns; c; c = c->next){
		if(c->client == client) return c;
	}
	return NULL;
}

static int glob_match(const char *p, const char *s)
{
	const char *star = NULL, *resume = NULL;
	while(*s){
		if(*p == '?' || (*p && *p == *s && *p != '*')){ p++; s++; }
		else if(*p == '*'){ star = p++; resume = s; }
		else if(star){ p = star + 1; s = ++resume; }
		else return 0;
	}
	while(*p == '*') p++;
	return *p == '\0';
}

/* Substitute ${iot:ClientId}; the only variable that is known only at connect time. */
static char *expand(const char *pattern, const char *client_id)
{
	static const char var[] = "${iot:ClientId}";
	size_t vlen = sizeof(var) - 1, clen = strlen(client_id), count = 0;
	for(const char *q = strstr(pattern, var); q; q = strstr(q + vlen, var)) count++;
	char *out = malloc(strlen(pattern) + count * clen + 1);
	if(!out) return NULL;
	char *w = out;
	const char *r = pattern;
	for(const char *q = strstr(r, var); q; q = strstr(r, var)){
		memcpy(w, r, (size_t)(q - r)); w += q - r;
		memcpy(w, client_id, clen); w += clen;
		r = q + vlen;
	}
	strcpy(w, r);
	return out;
}

/* IoT Core policy logic: an explicit Deny wins, else any Allow, else denied. */
static int allowed(const struct cert *cert, char action, const char *resource, const char *client_id)
{
	int allow = 0;
	for(size_t i = 0; i < cert->nrules; i++){
		const struct rule *r = &cert->rules[i];
		if(r->action != action) continue;
		char *pat = expand(r->pattern, client_id ? client_id : "");
		if(!pat) return 0;
		int m = glob_match(pat, resource);
		free(pat);
		if(m && r->effect == 'D') return 0;
		if(m) allow = 1;
	}
	return allow;
}

static int check_resource(const struct cert *cert, char action, const char *prefix, const char *name, const char *client_id)
{
	size_t len = strlen(prefix) + strlen(name) + 1;
	char *res = malloc(len);
	if(!res) return 0;
	snprintf(res, len, "%s%s", prefix, name);
	int ok = allowed(cert, action, res, client_id);
	free(res);
	return ok;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	(void)event; (void)userdata;
	struct mosquitto_evt_basic_auth *ed = event_data;
	refresh();
	char id[CERT_ID_LEN + 1];
	const char *client_id = mosquitto_client_id(ed->client);
	if(cert_id_of(ed->client, id) != 0){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "methane_authz: refused %s: no client certificate", client_id ? client_id : "?");
		return MOSQ_ERR_AUTH;
	}
	struct cert *cert = find_cert(id);
	if(!cert || strcmp(cert->status, "ACTIVE")){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "methane_authz: refused %s: certificate %s is %s", client_id ? client_id : "?", id, cert ? cert->status : "unknown");
		return MOSQ_ERR_AUTH;
	}
	if(!cert->admin && !check_resource(cert, 'C', "client/", client_id ? client_id : "", client_id)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "methane_authz: refused %s: policy does not allow iot:Connect", client_id ? client_id : "?");
		return MOSQ_ERR_AUTH;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if(!c) return MOSQ_ERR_NOMEM;
	c->client = ed->client;
	c->client_id = strdup(client_id ? client_id : "");
	if(!c->client_id){ free(c); return MOSQ_ERR_NOMEM; }
	memcpy(c->cert_id, id, sizeof(id));
	c->window = time(NULL);
	c->next = conns;
	conns = c;
	return MOSQ_ERR_SUCCESS;
}

static void count(struct conn *c, int inbound)
{
	time_t now = time(NULL);
	if(now != c->window){ c->window = now; c->window_count = 0; }
	c->window_count++;
	if(c->window_count > c->max_per_s) c->max_per_s = c->window_count;
	if(inbound) c->in++; else c->out++;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	(void)event; (void)userdata;
	struct mosquitto_evt_acl_check *ed = event_data;
	struct conn *c = find_conn(ed->client);
	if(!c) return MOSQ_ERR_ACL_DENIED;
	struct cert *cert = find_cert(c->cert_id);
	if(!cert || strcmp(cert->status, "ACTIVE")) return MOSQ_ERR_ACL_DENIED;
	int ok;
	switch(ed->access){
		case MOSQ_ACL_SUBSCRIBE:
			ok = cert->admin || check_resource(cert, 'S', "topicfilter/", ed->topic, c->client_id);
			if(!strncmp(ed->topic, DELIVER_TOPIC, strlen(DELIVER_TOPIC))) ok = 0;
			break;
		case MOSQ_ACL_WRITE:
			if(!strcmp(ed->topic, DELIVER_TOPIC)){ ok = cert->admin; break; }
			ok = cert->admin || check_resource(cert, 'P', "topic/", ed->topic, c->client_id);
			break;
		case MOSQ_ACL_READ:
			ok = cert->admin || check_resource(cert, 'R', "topic/", ed->topic, c->client_id);
			if(ok) count(c, 0);
			break;
		case MOSQ_ACL_UNSUBSCRIBE:
			ok = 1;
			break;
		default:
			ok = 0;
	}
	return ok ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
}

static int has_emu_property(const mosquitto_property *props)
{
	char *name = NULL, *value = NULL;
	const mosquitto_property *p = mosquitto_property_read_string_pair(props, MQTT_PROP_USER_PROPERTY, &name, &value, false);
	while(p){
		int bad = name && !strncmp(name, "emu-", 4);
		free(name); free(value);
		name = value = NULL;
		if(bad) return 1;
		p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, true);
	}
	return 0;
}

static int deliver(const struct mosquitto_evt_message *ed)
{
	const char *buf = ed->payload;
	const char *end = buf + ed->payloadlen;
	const char *nl1 = memchr(buf, '\n', ed->payloadlen);
	if(!nl1) return MOSQ_ERR_INVAL;
	const char *nl2 = memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1));
	if(!nl2) return MOSQ_ERR_INVAL;
	char *client_id = strndup(buf, (size_t)(nl1 - buf));
	char *topic = strndup(nl1 + 1, (size_t)(nl2 - nl1 - 1));
	int rc = MOSQ_ERR_NOMEM;
	if(client_id && topic){
		rc = mosquitto_broker_publish_copy(client_id, topic, (int)(end - nl2 - 1), nl2 + 1, 1, false, NULL);
	}
	free(client_id); free(topic);
	return rc;
}

static int on_message(int event, void *event_data, void *userdata)
{
	(void)event; (void)userdata;
	struct mosquitto_evt_message *ed = event_data;
	struct conn *c = find_conn(ed->client);
	if(!c) return MOSQ_ERR_ACL_DENIED;
	count(c, 1);
	struct cert *cert = find_cert(c->cert_id);
	if(cert && cert->admin && !strcmp(ed->topic, DELIVER_TOPIC)){
		if(deliver(ed) != MOSQ_ERR_SUCCESS){
			mosquitto_log_printf(MOSQ_LOG_WARNING, "methane_authz: malformed delivery request from %s", c->client_id);
		}
		return MOSQ_ERR_SUCCESS;
	}
	if(!strncmp(ed->topic, "$aws/", 5) && !(cert && cert->admin)){
		if(has_emu_property(ed->properties)) return MOSQ_ERR_ACL_DENIED;
		mosquitto_property_add_string_pair(&ed->properties, MQTT_PROP_USER_PROPERTY, PROP_CLIENT, c->client_id);
		mosquitto_property_add_string_pair(&ed->properties, MQTT_PROP_USER_PROPERTY, PROP_CERT, c->cert_id);
	}
	return MOSQ_ERR_SUCCESS;
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for(; *s; s++){
		unsigned char ch = (unsigned char)*s;
		if(ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
		else if(ch < 0x20) fprintf(f, "\\u%04x", ch);
		else fputc(ch, f);
	}
	fputc('"', f);
}

static void write_stats(void)
{
	if(!stats_path) return;
	size_t len = strlen(stats_path) + 8;
	char *tmp = malloc(len);
	if(!tmp) return;
	snprintf(tmp, len, "%s.tmp", stats_path);
	FILE *f = fopen(tmp, "w");
	if(!f){ free(tmp); return; }
	fprintf(f, "{\"time\":%ld,\"clients\":{", (long)time(NULL));
	for(struct conn *c = conns; c; c = c->next){
		json_string(f, c->client_id);
		fprintf(f, ":{\"cert\":\"%s\",\"in\":%lu,\"out\":%lu,\"max_per_s\":%lu}%s",
				c->cert_id, c->in, c->out, c->max_per_s, c->next ? "," : "");
	}
	fputs("}}\n", f);
	if(fclose(f) == 0) rename(tmp, stats_path);
	free(tmp);
}

static int on_tick(int event, void *event_data, void *userdata)
{
	(void)event; (void)event_data; (void)userdata;
	if(refresh()) kick_inactive();
	time_t now = time(NULL);
	if(now != last_stats){
		last_stats = now;
		write_stats();
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_disconnect(int event, void *event_data, void *userdata)
{
	(void)event; (void)userdata;
	struct mosquitto_evt_disconnect *ed = event_data;
	for(struct conn **pp = &conns; *pp; pp = &(*pp)->next){
		if((*pp)->client == ed->client){
			struct conn *dead = *pp;
			*pp = dead->next;
			free(dead->client_id);
			free(dead);
			break;
		}
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *opts, int opt_count)
{
	(void)userdata;
	plugin_id = identifier;
	for(int i = 0; i < opt_count; i++){
		if(!strcmp(opts[i].key, "authz_file")) authz_path = strdup(opts[i].value);
		else if(!strcmp(opts[i].key, "stats_file")) stats_path = strdup(opts[i].value);
	}
	if(!authz_path){
		mosquitto_log_printf(MOSQ_LOG_ERR, "methane_authz: plugin_opt_authz_file is required");
		return MOSQ_ERR_INVAL;
	}
	refresh();
	int rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	if(!rc) rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	if(!rc) rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
	if(!rc) rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_TICK, on_tick, NULL, NULL);
	if(!rc) rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL, NULL);
	return rc;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	(void)userdata; (void)opts; (void)opt_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_DISCONNECT, on_disconnect, NULL);
	free_certs(certs, ncerts);
	certs = NULL; ncerts = 0;
	while(conns){ struct conn *n = conns->next; free(conns->client_id); free(conns); conns = n; }
	free(authz_path); free(stats_path);
	authz_path = stats_path = NULL;
	return MOSQ_ERR_SUCCESS;
}
