#!/bin/bash
# Install, upgrade or remove methane-agent as a hardened systemd service. Idempotent: running it
# again converges on the same tree and never overwrites the operator's config or data.
# Usage and the layout it creates: systemd/README.md and docs/install.md.
set -eu
set -o pipefail

NAME=methane-agent
OPT=/opt/$NAME
ETC=/etc/$NAME
STATE=/var/lib/$NAME
LOGS=/var/log/$NAME
UNIT=/etc/systemd/system/$NAME.service
UDEV_RULE=/etc/udev/rules.d/60-$NAME-i2c.rules
MODULES_CONF=/etc/modules-load.d/$NAME.conf

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=/
PYTHON=python3
MODE=install
VENV_MODE=build
VENV_FROM=
PURGE=0

usage() {
    cat <<EOF
usage: $0 [--root DIR] [--python PY] [--venv-from DIR | --skip-venv] [--uninstall [--purge]]

  --root DIR       install into DIR instead of / (images, tests). The user is created with
                   useradd --root when DIR/etc/passwd exists, otherwise skipped; systemctl is
                   never called.
  --python PY      interpreter for the venv (>= 3.11; default python3)
  --venv-from DIR  use an existing venv (symlinked) instead of building one (development, tests)
  --skip-venv      install everything but the venv
  --uninstall      remove unit, venv and user; keep $ETC, $STATE and $LOGS
  --purge          with --uninstall: also remove config, state (spool, identity) and logs
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
        --venv-from) [ $# -ge 2 ] || die "--venv-from needs a directory"; VENV_MODE=from; VENV_FROM=$2; shift 2 ;;
        --skip-venv) VENV_MODE=skip; shift ;;
        --uninstall) MODE=uninstall; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[ "$PURGE" = 0 ] || [ "$MODE" = uninstall ] || die "--purge only goes with --uninstall"
[ -d "$ROOT" ] || die "--root $ROOT is not a directory"
ROOT=$(cd "$ROOT" && pwd)
# R PATH: PATH inside the target root.
R() { if [ "$ROOT" = / ]; then printf '%s' "$1"; else printf '%s%s' "$ROOT" "$1"; fi; }

IS_ROOT_USER=0
[ "$(id -u)" = 0 ] && IS_ROOT_USER=1
if [ "$ROOT" = / ] && [ "$IS_ROOT_USER" = 0 ]; then
    die "installing into / needs root (sudo $0 ...)"
fi
SYSTEMD_RUNNING=0
[ "$ROOT" = / ] && [ -d /run/systemd/system ] && SYSTEMD_RUNNING=1

# --- users and groups ---------------------------------------------------------------------------
# Accounts are managed in the target root's own /etc (useradd --root), never on the build host.
ACCOUNTS=1
if [ "$ROOT" != / ] && [ ! -f "$(R /etc/passwd)" ]; then
    ACCOUNTS=0
fi
useradd_root=()
[ "$ROOT" = / ] || useradd_root=(--root "$ROOT")

group_exists() { [ -f "$(R /etc/group)" ] && awk -F: -v g="$1" '$1 == g { found = 1 } END { exit !found }' "$(R /etc/group)"; }
user_exists() { [ -f "$(R /etc/passwd)" ] && awk -F: -v u="$1" '$1 == u { found = 1 } END { exit !found }' "$(R /etc/passwd)"; }
uid_of() { awk -F: -v u="$1" '$1 == u { print $3 }' "$(R /etc/passwd)"; }
gid_of() { awk -F: -v g="$1" '$1 == g { print $3 }' "$(R /etc/group)"; }

ensure_accounts() {
    if [ "$ACCOUNTS" = 0 ]; then
        say "no $ROOT/etc/passwd: skipping creation of user $NAME and groups (files stay owned by $(id -un))"
        return
    fi
    if ! group_exists dialout; then
        groupadd "${useradd_root[@]}" --system dialout
        say "created group dialout"
    fi
    # Raspberry Pi OS ships an i2c group and a udev rule giving it /dev/i2c-*; plain Debian has
    # neither, and systemd refuses to start a unit whose SupplementaryGroups= names a missing group.
    if ! group_exists i2c; then
        groupadd "${useradd_root[@]}" --system i2c
        mkdir -p "$(R /etc/udev/rules.d)"
        printf '%s\n' '# Installed by methane-agent: let the i2c group use I2C buses (as Raspberry Pi OS does).' \
            'SUBSYSTEM=="i2c-dev", GROUP="i2c", MODE="0660"' >"$(R "$UDEV_RULE")"
        chmod 0644 "$(R "$UDEV_RULE")"
        say "created group i2c and $UDEV_RULE"
    fi
    if ! user_exists "$NAME"; then
        local group_opt=(--user-group)
        # A group left behind by an earlier uninstall (userdel keeps it where USERGROUPS_ENAB is off).
        group_exists "$NAME" && group_opt=(--gid "$NAME")
        useradd "${useradd_root[@]}" --system "${group_opt[@]}" --home-dir "$STATE" --no-create-home \
            --shell /usr/sbin/nologin --comment "methane-agent service" "$NAME" 2> >(grep -v 'missing or non-executable shell' >&2)
        say "created system user $NAME"
    fi
    usermod "${useradd_root[@]}" --append --groups dialout,i2c "$NAME"
}

# own USER GROUP MODE PATH: owner and mode, owner only when we can.
own() {
    local user=$1 group=$2 mode=$3 path=$4
    chmod "$mode" "$path"
    [ "$IS_ROOT_USER" = 1 ] || return 0
    local uid=0 gid=0
    if [ "$user" != root ]; then
        [ "$ACCOUNTS" = 1 ] || return 0
        uid=$(uid_of "$user")
    fi
    if [ "$group" != root ]; then
        [ "$ACCOUNTS" = 1 ] || return 0
        gid=$(gid_of "$group")
    fi
    chown "$uid:$gid" "$path"
}

ensure_dir() {  # ensure_dir PATH USER GROUP MODE
    mkdir -p "$(R "$1")"
    own "$2" "$3" "$4" "$(R "$1")"
}

# --- the venv -----------------------------------------------------------------------------------
source_id() {
    # Content hash of what goes into the venv: the same sources and lock give the same venv.
    (
        cd "$SRC"
        sha256sum requirements.lock pyproject.toml
        find agent drivers provisioning emulator cloud iotmqtt -type f \( -name '*.py' -o -name '*.json' -o -name '*.toml' -o -name '*.conf' \) \
            -not -path '*/__pycache__/*' 2>/dev/null | LC_ALL=C sort | xargs -r sha256sum
    ) | sha256sum | cut -c1-16
}

build_venv() {
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is older than 3.11 (use --python)"
    local id target stage
    id=$(source_id)
    target=$(R "$OPT/venvs/$id")
    if [ -f "$target/.complete" ] && [ -x "$target/bin/$NAME" ]; then
        say "venv $OPT/venvs/$id is up to date"
    else
        rm -rf "$target"
        mkdir -p "$(R "$OPT/venvs")"
        say "building venv $OPT/venvs/$id (on armv7 awscrt builds from source: see docs/install.md)"
        "$PYTHON" -m venv "$target"
        "$target/bin/python" -m pip install --disable-pip-version-check --no-input -q \
            --require-hashes -r "$SRC/requirements.lock"
        # Build from a copy so the source tree gets no build/ or *.egg-info litter.
        stage=$(mktemp -d)
        trap 'rm -rf "$stage"' EXIT
        cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$stage/"
        for pkg in agent drivers provisioning emulator cloud iotmqtt; do
            [ -d "$SRC/$pkg" ] && cp -r "$SRC/$pkg" "$stage/"
        done
        find "$stage" -name __pycache__ -type d -prune -exec rm -rf {} +
        "$target/bin/python" -m pip install --disable-pip-version-check --no-input -q --no-deps "$stage"
        rm -rf "$stage"
        trap - EXIT
        "$target/bin/python" -m compileall -q "$target/lib" >/dev/null || true
        touch "$target/.complete"
    fi
    switch_venv "venvs/$id"
    # Keep only the venv in use: an upgrade leaves no stale copies behind.
    local d
    for d in "$(R "$OPT/venvs")"/*; do
        [ "$d" = "$target" ] || rm -rf "$d"
    done
}

switch_venv() {  # atomically point $OPT/venv at $1 (a running agent keeps its old files until restart)
    local link
    link=$(R "$OPT/venv")
    if [ -d "$link" ] && [ ! -L "$link" ]; then
        rm -rf "$link"
    fi
    ln -sfn "$1" "$link.new"
    mv -T "$link.new" "$link"
}

# --- install ------------------------------------------------------------------------------------
do_install() {
    [ -f "$SRC/systemd/$NAME.service" ] || die "no unit file at $SRC/systemd/$NAME.service"
    [ -f "$SRC/config/agent.example.toml" ] || die "no config/agent.example.toml in $SRC"
    umask 022
    ensure_accounts

    ensure_dir "$OPT" root root 0755
    case "$VENV_MODE" in
        build) build_venv ;;
        from)
            [ -x "$VENV_FROM/bin/python" ] || die "--venv-from $VENV_FROM is not a venv (no bin/python)"
            switch_venv "$(cd "$VENV_FROM" && pwd)"
            say "venv: using $VENV_FROM" ;;
        skip) say "venv: skipped (--skip-venv)" ;;
    esac
    if [ -f "$SRC/docs/install.md" ]; then
        mkdir -p "$(R "$OPT/docs")"
        install -m 0644 "$SRC/docs/install.md" "$(R "$OPT/docs/install.md")"
    fi

    # /etc/methane-agent: root owns it, the agent's group may read it (ConfigurationDirectory= is
    # read-only under ProtectSystem=strict anyway).
    ensure_dir "$ETC" root "$NAME" 0750
    local conf
    conf=$(R "$ETC/agent.toml")
    if [ -e "$conf" ]; then
        say "keeping existing $ETC/agent.toml"
    else
        install -m 0640 "$SRC/config/agent.example.toml" "$conf"
        own root "$NAME" 0640 "$conf"
        say "installed $ETC/agent.toml from config/agent.example.toml"
    fi
    ensure_dir "$STATE" "$NAME" "$NAME" 0700
    # The fleet's claim certificate and key go here: the agent deletes them once its own identity
    # is verified (under ProtectSystem=strict it could not delete them from $ETC).
    ensure_dir "$STATE/claim" "$NAME" "$NAME" 0700
    ensure_dir "$LOGS" "$NAME" "$NAME" 0750

    # DeviceAllow=char-ttyUSB (and -ACM, -i2c) resolve to majors when the service starts, from the
    # drivers loaded then: load them at boot so a USB adapter plugged in later is still allowed.
    mkdir -p "$(R /etc/modules-load.d)"
    printf '%s\n' '# Installed by methane-agent: device classes its unit allows (DeviceAllow=char-...).' \
        i2c-dev usbserial cdc_acm >"$(R "$MODULES_CONF")"
    chmod 0644 "$(R "$MODULES_CONF")"

    mkdir -p "$(R /etc/systemd/system)"
    install -m 0644 "$SRC/systemd/$NAME.service" "$(R "$UNIT")"
    own root root 0644 "$(R "$UNIT")"

    if [ "$SYSTEMD_RUNNING" = 1 ]; then
        systemctl daemon-reload
        # An upgrade takes effect now; a first install stays stopped until provisioned.
        systemctl try-restart "$NAME.service"
    elif [ "$ROOT" = / ]; then
        say "systemd is not running: skipped systemctl daemon-reload"
    fi

    cat <<EOF

methane-agent is installed$([ "$ROOT" = / ] || printf " in %s" "$ROOT"). Next steps:
  1. edit $ETC/agent.toml (connection.endpoint, sensors) and copy the fleet's claim files:
       install -o $NAME -g $NAME -m 0600 claim.pem.crt claim.pem.key $STATE/claim/
     (the agent deletes them once provisioned: the claim key is the whole fleet's secret)
  2. provision the device identity:
       sudo -u $NAME $OPT/venv/bin/$NAME provision --config $ETC/agent.toml
  3. check it:   sudo -u $NAME $OPT/venv/bin/$NAME doctor --config $ETC/agent.toml
  4. start it:   sudo systemctl enable --now $NAME
EOF
}

# --- uninstall ----------------------------------------------------------------------------------
do_uninstall() {
    if [ "$SYSTEMD_RUNNING" = 1 ] && [ -f "$UNIT" ]; then
        systemctl disable --now "$NAME.service" || say "could not stop $NAME.service; removing it anyway"
    fi
    rm -f "$(R "$UNIT")"
    rm -rf "$(R "$OPT")"
    rm -f "$(R "$UDEV_RULE")" "$(R "$MODULES_CONF")"
    if [ "$ACCOUNTS" = 1 ] && user_exists "$NAME"; then
        userdel "${useradd_root[@]}" "$NAME"
        say "removed user $NAME"
    fi
    if [ "$ACCOUNTS" = 1 ] && group_exists "$NAME"; then
        groupdel "${useradd_root[@]}" "$NAME"
    fi
    if [ "$SYSTEMD_RUNNING" = 1 ]; then
        systemctl daemon-reload
    fi
    if [ "$PURGE" = 1 ]; then
        rm -rf "$(R "$ETC")" "$(R "$STATE")" "$(R "$LOGS")"
        say "purged $ETC, $STATE and $LOGS"
    else
        say "kept $ETC (config), $STATE (spool, identity) and $LOGS; --purge removes them"
    fi
}

if [ "$MODE" = install ]; then do_install; else do_uninstall; fi
