"""The emulator's IoT registry: things, certificates (status, owner), policies and what is attached
to what, in SQLite in the state dir so it survives restarts and the admin CLI can read and change it
while ``emulator serve`` runs.

Every change rewrites the broker's authz file (see ``emulator/authz.py``) atomically before the call
returns, so the mosquitto plugin judges the very next CONNECT, PUBLISH or SUBSCRIBE by it: no broker
restart, no reload signal.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emulator import authz

DB_FILE = "registry.db"
STATUSES = ("ACTIVE", "INACTIVE", "REVOKED", "PENDING_ACTIVATION")
ROLES = ("device", "admin")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    id TEXT PRIMARY KEY, pem TEXT NOT NULL, status TEXT NOT NULL, role TEXT NOT NULL DEFAULT 'device',
    created REAL NOT NULL, ownership_token TEXT, token_expires REAL, token_used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS things (
    name TEXT PRIMARY KEY, attributes TEXT NOT NULL DEFAULT '{}', thing_type TEXT, groups TEXT NOT NULL DEFAULT '[]',
    billing_group TEXT, version INTEGER NOT NULL DEFAULT 1, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS policies (name TEXT PRIMARY KEY, document TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cert_policies (
    cert_id TEXT NOT NULL, policy TEXT NOT NULL, PRIMARY KEY (cert_id, policy));
CREATE TABLE IF NOT EXISTS thing_principals (
    thing TEXT NOT NULL, cert_id TEXT NOT NULL, PRIMARY KEY (thing, cert_id));
"""


class RegistryError(ValueError):
    """A request the registry cannot honour (unknown id, bad status); the message says which."""


@dataclass(frozen=True)
class Certificate:
    certificate_id: str
    status: str
    role: str
    created: float
    policies: tuple[str, ...] = ()
    things: tuple[str, ...] = ()
    pem: str = field(default="", repr=False)

    def summary(self) -> dict[str, Any]:
        return {"certificateId": self.certificate_id, "status": self.status, "role": self.role,
                "created": self.created, "policies": list(self.policies), "things": list(self.things)}


@dataclass(frozen=True)
class Thing:
    name: str
    attributes: dict[str, str]
    thing_type: str | None
    groups: tuple[str, ...]
    billing_group: str | None
    version: int
    principals: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        return {"thingName": self.name, "attributes": self.attributes, "thingTypeName": self.thing_type,
                "thingGroups": list(self.groups), "billingGroup": self.billing_group, "version": self.version,
                "principals": list(self.principals)}


class Registry:
    """One SQLite file; safe to use from several threads of one process and from several
    processes (WAL, busy timeout)."""

    def __init__(self, state_dir: Path | str, authz_file: Path | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.authz_file = authz_file or self.state_dir / authz.AUTHZ_FILE
        self._lock = threading.RLock()
        self._hold = False
        # cert id -> (what its authz lines depend on, the lines); None until the first full build
        self._authz_cache: dict[str, tuple[Any, str]] | None = None
        self._changed: set[str] | None = None  # certificates the current transaction touched
        self._data_version: int | None = None
        self._db = sqlite3.connect(self.state_dir / DB_FILE, timeout=10, check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self, authz_changes: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction; the authz file is rewritten after it commits unless the change
        cannot affect authorisation (``authz_changes=False``: ownership-token bookkeeping)."""
        with self._lock:
            self._changed = set()  # mutators add the certificates they touch; None = maybe all
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if authz_changes:
                self.write_authz(self._changed)

    def _touch(self, *cert_ids: str) -> None:
        if self._changed is not None:
            self._changed.update(cert_ids)

    def _touch_thing(self, db: sqlite3.Connection, thing: str) -> None:
        self._touch(*(r[0] for r in db.execute("SELECT cert_id FROM thing_principals WHERE thing=?", (thing,))))

    # -- policies --------------------------------------------------------------------------------
    def put_policy(self, name: str, document: Mapping[str, Any]) -> None:
        authz.check_policy(document)
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO policies(name, document) VALUES (?, ?)", (name, json.dumps(document)))
            self._changed = None

    def policy(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT document FROM policies WHERE name=?", (name,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # -- certificates ----------------------------------------------------------------------------
    def add_certificate(self, cert_id: str, pem: str, status: str, role: str = "device",
                        policies: Sequence[str] = (), ownership_token: str | None = None,
                        token_ttl_s: float = 3600.0, created: float | None = None) -> None:
        if status not in STATUSES:
            raise RegistryError(f"status must be one of {', '.join(STATUSES)}")
        if role not in ROLES:
            raise RegistryError(f"role must be one of {', '.join(ROLES)}")
        now = time.time() if created is None else created
        with self._tx() as db:
            for p in policies:
                if db.execute("SELECT 1 FROM policies WHERE name=?", (p,)).fetchone() is None:
                    raise RegistryError(f"policy {p!r} does not exist")
            db.execute(
                "INSERT INTO certificates(id, pem, status, role, created, ownership_token, token_expires) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET status=excluded.status, "
                "role=excluded.role",
                (cert_id, pem, status, role, now, ownership_token,
                 now + token_ttl_s if ownership_token else None))
            for p in policies:
                db.execute("INSERT OR IGNORE INTO cert_policies VALUES (?, ?)", (cert_id, p))
            self._touch(cert_id)

    def set_status(self, cert_id: str, status: str) -> None:
        if status not in STATUSES:
            raise RegistryError(f"status must be one of {', '.join(STATUSES)}")
        with self._tx() as db:
            cur = db.execute("UPDATE certificates SET status=? WHERE id=?", (status, cert_id))
            if cur.rowcount == 0:
                raise RegistryError(f"no certificate with id {cert_id!r}")
            self._touch(cert_id)

    def revoke(self, cert_id: str) -> Certificate:
        """Mark REVOKED; the broker refuses and disconnects it from now on."""
        self.set_status(cert_id, "REVOKED")
        cert = self.certificate(cert_id)
        assert cert is not None
        return cert

    def take_token(self, token: str, now: float | None = None) -> str:
        """Redeem an ownership token: returns its certificate id. Single use, 1 hour."""
        now = time.time() if now is None else now
        with self._tx(authz_changes=False) as db:
            row = db.execute("SELECT id, token_expires, token_used FROM certificates WHERE ownership_token=?",
                             (token,)).fetchone()
            if row is None:
                raise TokenError("Invalid certificate ownership token.")
            cert_id, expires, used = row
            if used:
                raise TokenError("Certificate ownership token has already been used.")
            if expires is None or now > expires:
                raise TokenError("Certificate ownership token has expired.")
            db.execute("UPDATE certificates SET token_used=1 WHERE id=?", (cert_id,))
        return str(cert_id)

    def release_token(self, cert_id: str) -> None:
        """Undo ``take_token`` when RegisterThing fails after redeeming (IoT Core lets the device retry)."""
        with self._tx(authz_changes=False) as db:
            db.execute("UPDATE certificates SET token_used=0 WHERE id=?", (cert_id,))

    def certificate(self, cert_id: str) -> Certificate | None:
        certs = self._certificates(cert_id)
        return certs[0] if certs else None

    def certificates(self) -> list[Certificate]:
        return self._certificates(None)

    def _certificates(self, only: str | None) -> list[Certificate]:
        # Three queries for any number of certificates: the authz file is rebuilt from all of them
        # on every change, so per-row lookups made a thousand-device fleet's provisioning quadratic.
        with self._lock:
            rows = self._db.execute(
                "SELECT id, status, role, created, pem FROM certificates WHERE ? IS NULL OR id = ? "
                "ORDER BY created, id", (only, only)).fetchall()
            pols = _grouped(self._db.execute(
                "SELECT cert_id, policy FROM cert_policies WHERE ? IS NULL OR cert_id = ? ORDER BY policy",
                (only, only)))
            things = _grouped(self._db.execute(
                "SELECT cert_id, thing FROM thing_principals WHERE ? IS NULL OR cert_id = ? ORDER BY thing",
                (only, only)))
        return [Certificate(cid, status, role, created, pols.get(cid, ()), things.get(cid, ()), pem)
                for cid, status, role, created, pem in rows]

    def expire_pending(self, now: float | None = None) -> list[str]:
        """IoT Core deletes a certificate still PENDING_ACTIVATION when its token expires."""
        now = time.time() if now is None else now
        with self._tx() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM certificates WHERE status='PENDING_ACTIVATION' AND token_expires < ?", (now,))]
            for cid in ids:
                db.execute("DELETE FROM certificates WHERE id=?", (cid,))
                db.execute("DELETE FROM cert_policies WHERE cert_id=?", (cid,))
            self._touch(*ids)
        return ids

    # -- things ----------------------------------------------------------------------------------
    def thing(self, name: str) -> Thing | None:
        things = self._things(name)
        return things[0] if things else None

    def things(self) -> list[Thing]:
        return self._things(None)

    def _things(self, only: str | None) -> list[Thing]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, attributes, thing_type, groups, billing_group, version FROM things "
                "WHERE ? IS NULL OR name = ? ORDER BY name", (only, only)).fetchall()
            principals = _grouped(self._db.execute(
                "SELECT thing, cert_id FROM thing_principals WHERE ? IS NULL OR thing = ? ORDER BY cert_id",
                (only, only)))
        return [Thing(name, json.loads(attrs), ttype, tuple(json.loads(groups)), billing, version,
                      principals.get(name, ()))
                for name, attrs, ttype, groups, billing, version in rows]

    def group_members(self, group: str) -> list[str]:
        """Things in a (static) thing group, by name; groups exist while they have members here."""
        with self._lock:
            rows = self._db.execute("SELECT t.name FROM things t, json_each(t.groups) g WHERE g.value = ? "
                                    "ORDER BY t.name", (group,)).fetchall()
        return [str(r[0]) for r in rows]

    def groups(self) -> dict[str, int]:
        """Every thing group with its member count."""
        with self._lock:
            rows = self._db.execute("SELECT g.value, count(*) FROM things t, json_each(t.groups) g "
                                    "GROUP BY g.value ORDER BY g.value").fetchall()
        return {str(name): int(n) for name, n in rows}

    def apply_provisioning(self, cert_id: str, thing: Mapping[str, Any] | None, cert_status: str | None,
                           policies: Sequence[str]) -> None:
        """RegisterThing's effect in one transaction: upsert the thing, attach the certificate and
        policies, set the certificate status. ``thing`` holds name/attributes/thing_type/groups/
        billing_group/override_settings as evaluated from the template."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM certificates WHERE id=?", (cert_id,)).fetchone() is None:
                raise RegistryError(f"no certificate with id {cert_id!r}")
            for p in policies:
                if db.execute("SELECT 1 FROM policies WHERE name=?", (p,)).fetchone() is None:
                    raise RegistryError(f"policy {p!r} does not exist")
            self._touch(cert_id)
            if thing is not None:
                self._upsert_thing(db, thing)
                db.execute("INSERT OR IGNORE INTO thing_principals VALUES (?, ?)", (thing["name"], cert_id))
                self._touch_thing(db, thing["name"])  # its attributes may have changed for every cert
            for p in policies:
                db.execute("INSERT OR IGNORE INTO cert_policies VALUES (?, ?)", (cert_id, p))
            if cert_status is not None:
                db.execute("UPDATE certificates SET status=? WHERE id=?", (cert_status, cert_id))

    def _upsert_thing(self, db: sqlite3.Connection, t: Mapping[str, Any]) -> None:
        row = db.execute("SELECT attributes, thing_type, groups, billing_group FROM things WHERE name=?",
                         (t["name"],)).fetchone()
        if row is None:
            db.execute("INSERT INTO things(name, attributes, thing_type, groups, billing_group, created) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (t["name"], json.dumps(dict(t.get("attributes", {}))), t.get("thing_type"),
                        json.dumps(list(t.get("groups", ()))), t.get("billing_group"), time.time()))
            return
        overrides: Mapping[str, str] = t.get("override_settings", {})
        attrs, ttype, groups, billing = json.loads(row[0]), row[1], json.loads(row[2]), row[3]

        def decide(prop: str, old: Any, new: Any, merge: Any = None) -> Any:
            action = overrides.get(prop, "DO_NOTHING")
            if action == "FAIL" and old != new:
                raise ResourceConflictError(f"Thing {t['name']} already exists with a different {prop}.")
            if action == "REPLACE":
                return new
            if action == "MERGE":
                return merge
            return old

        attrs = decide("AttributePayload", attrs, dict(t.get("attributes", {})),
                       {**attrs, **dict(t.get("attributes", {}))})
        groups = decide("ThingGroups", groups, list(t.get("groups", ())),
                        groups + [g for g in t.get("groups", ()) if g not in groups])
        ttype = decide("ThingTypeName", ttype, t.get("thing_type"))
        billing = decide("BillingGroup", billing, t.get("billing_group"))
        db.execute("UPDATE things SET attributes=?, thing_type=?, groups=?, billing_group=?, version=version+1 "
                   "WHERE name=?", (json.dumps(attrs), ttype, json.dumps(groups), billing, t["name"]))

    def put_thing(self, name: str, attributes: Mapping[str, str] | None = None,
                  principals: Sequence[str] = ()) -> None:
        """Create or replace a thing directly (operator action, e.g. the emulator's ready-made device)."""
        with self._tx() as db:
            self._upsert_thing(db, {"name": name, "attributes": dict(attributes or {}),
                                    "override_settings": {"AttributePayload": "REPLACE"}})
            for cid in principals:
                db.execute("INSERT OR IGNORE INTO thing_principals VALUES (?, ?)", (name, cid))
            self._touch_thing(db, name)

    def delete_thing(self, name: str) -> None:
        """Detach every principal and delete the thing (an operator re-enrolling a wiped gateway:
        ``aws iot detach-thing-principal`` for each certificate, then ``aws iot delete-thing``)."""
        with self._tx() as db:
            if db.execute("DELETE FROM things WHERE name=?", (name,)).rowcount == 0:
                raise RegistryError(f"no thing named {name!r}")
            self._touch_thing(db, name)  # its certificates lose the thing's policy variables
            db.execute("DELETE FROM thing_principals WHERE thing=?", (name,))

    # -- authz -----------------------------------------------------------------------------------
    def hold_devices(self, hold: bool) -> None:
        """While held, the authz file marks every non-admin certificate INACTIVE (the registry is
        untouched): the broker refuses devices until the emulator's own clients are back after a
        broker restart (``Emulator.restart_broker``)."""
        with self._lock:
            self._hold = hold
            self.write_authz(None)

    def write_authz(self, changed: set[str] | None = None) -> None:
        """Rebuild the broker's authz file. Each certificate's lines are compiled once and kept
        until something they depend on changes; ``changed`` names the certificates a change touched
        (None: any may have), so provisioning one more device recompiles one certificate, not the
        fleet. The file is replaced atomically but not fsynced: it is derived, and rewritten from
        the registry at every start."""
        with self._lock:
            # Another process (the admin CLI revoking a certificate) may have committed since our
            # last build: SQLite's data_version moves only for other connections' commits.
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if changed is None or self._authz_cache is None or version != self._data_version:
                self._data_version = version
                certs = self._certificates(None)
                things = {t.name: t for t in self._things(None)}
                self._authz_cache = {}
            else:
                certs = [c for cid in changed for c in self._certificates(cid)]
                for cid in changed - {c.certificate_id for c in certs}:
                    self._authz_cache.pop(cid, None)  # deleted
                names = {c.things[0] for c in certs if c.things}
                things = {t.name: t for n in names for t in self._things(n)}
            docs = dict(self._db.execute("SELECT name, document FROM policies").fetchall())
            policies = {name: json.loads(doc) for name, doc in docs.items()}
            cache = self._authz_cache
            for cert in certs:
                if self._hold and cert.role != "admin":
                    cert = replace(cert, status="INACTIVE")
                thing = things.get(cert.things[0]) if cert.things else None
                key = (cert.status, cert.role, cert.policies, tuple(docs.get(p) for p in cert.policies),
                       None if thing is None else (thing.name, thing.thing_type, json.dumps(thing.attributes)))
                hit = cache.get(cert.certificate_id)
                if hit is None or hit[0] != key:
                    lines = authz.render_chunk(authz.compile_rules([cert], things, policies))
                    cache[cert.certificate_id] = (key, lines)
            chunks = [chunk for _, chunk in cache.values()]
        authz.write_text(self.authz_file, chunks)


def _grouped(rows: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for key, value in rows:
        out.setdefault(key, []).append(value)
    return {k: tuple(v) for k, v in out.items()}


class TokenError(RegistryError):
    """An ownership token that is unknown, used or expired."""


class ResourceConflictError(RegistryError):
    """A template's OverrideSettings says FAIL and the existing resource differs."""
