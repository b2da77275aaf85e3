"""Device Shadow service (classic and named) over the MQTT reserved topics, as IoT Core runs it
(reference §3): validation with IoT Core's error codes and messages, merge, versions, metadata,
delta and documents. Pure logic over a SQLite store; the runner moves the bytes."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.services.jsonio import JsonInputError, is_int, parse_json
from emulator.services.outgoing import Outgoing, encode
from emulator.services.shadow_state import (
    delta,
    delta_metadata,
    depth,
    has_null_in_array,
    merge,
    merge_metadata,
    stamp,
)

TOPIC_RE = re.compile(r"^\$aws/things/([^/]+)/shadow(?:/name/([^/]+))?/(get|update|delete)$")
NAME_RE = re.compile(r"^[a-zA-Z0-9:_-]+$")
MAX_THING_NAME = 128
MAX_SHADOW_NAME = 64
MAX_CLIENT_TOKEN_BYTES = 64
SECTIONS = ("desired", "reported")
UNSUPPORTED_ENCODING = "Unsupported documented encoding; supported encoding is UTF-8"
VERSION_RETENTION_S = 48 * 3600  # a deleted shadow's version survives this long (DG)

# Subscriptions the runner needs: `#` after `shadow/` covers classic and named shadows; the
# runner subscribes with no-local so the service's own replies are not echoed back to it.
SUBSCRIPTIONS: tuple[str, ...] = ("$aws/things/+/shadow/#",)


@dataclass
class ShadowSettings:
    max_state_bytes: int = 8192
    max_depth: int = 6
    # True: publish /update/delta after every accepted update that leaves desired != reported
    # (what AWS's own Greengrass shadow manager does). False: only when the update touched
    # `desired`. IoT Core's choice for reported-only updates is UNVERIFIED (docs/emulator.md).
    delta_on_any_update: bool = True


class ShadowRejected(Exception):
    """A request IoT Core would reject; carries its HTTP-like code and exact message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


@dataclass
class _Shadow:
    thing: str
    name: str  # "" = classic shadow
    version: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    present: bool = False
    deleted_at: float | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.thing


class ShadowStore:
    """One row per (thing, shadow name); a deleted shadow keeps its row to keep its version."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS shadow (thing TEXT NOT NULL, name TEXT NOT NULL,"
            " version INTEGER NOT NULL, state TEXT NOT NULL, metadata TEXT NOT NULL,"
            " present INTEGER NOT NULL, deleted_at REAL, PRIMARY KEY (thing, name))"
        )

    def load(self, thing: str, name: str) -> _Shadow:
        row = self._db.execute(
            "SELECT version, state, metadata, present, deleted_at FROM shadow WHERE thing=? AND name=?",
            (thing, name),
        ).fetchone()
        if row is None:
            return _Shadow(thing, name)
        return _Shadow(thing, name, row[0], json.loads(row[1]), json.loads(row[2]), bool(row[3]), row[4])

    def save(self, sh: _Shadow) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO shadow VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sh.thing, sh.name, sh.version, json.dumps(sh.state), json.dumps(sh.metadata),
             int(sh.present), sh.deleted_at),
        )

    def close(self) -> None:
        self._db.close()


class ShadowService:
    subscriptions: tuple[str, ...] = SUBSCRIPTIONS

    def __init__(self, db_path: Path | str, settings: ShadowSettings | None = None) -> None:
        self.settings = settings or ShadowSettings()
        self._store = ShadowStore(db_path)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._store.close()

    # ---- MQTT entry point ------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, now: float) -> list[Outgoing]:
        """Answer one request published on a shadow topic; anything else (including the service's
        own response topics) yields nothing."""
        m = TOPIC_RE.match(topic)
        if m is None:
            return []
        thing, name, op = m.group(1), m.group(2) or "", m.group(3)
        if not _valid_name(thing, MAX_THING_NAME) or (m.group(2) is not None and not _valid_name(
                name, MAX_SHADOW_NAME)):
            return []  # IoT Core refuses such topics at the policy level; there is no reply topic
        ts = int(now)
        token: str | None = None
        try:
            doc = self._parse(payload, allow_empty=op != "update")
            token = _client_token(doc)
            with self._lock:
                if op == "get":
                    return [Outgoing(topic + "/accepted", encode(self._get_doc(thing, name, ts, token)))]
                if op == "delete":
                    return [Outgoing(topic + "/accepted", encode(self._delete(thing, name, ts, token)))]
                return self._update(topic, thing, name, doc, ts, token)
        except ShadowRejected as rej:
            return [Outgoing(topic + "/rejected", encode(_error(rej, ts, token)))]

    # ---- admin API (same rules, same messages) ---------------------------------------------

    def get(self, thing: str, name: str = "", now: float = 0.0) -> dict[str, Any]:
        """The get/accepted document; raises ShadowRejected (404) when there is no shadow."""
        _check_names(thing, name)
        with self._lock:
            return self._get_doc(thing, name, int(now), None)

    def set_desired(self, thing: str, name: str, desired: Any, now: float) -> list[Outgoing]:
        """Apply ``{"state": {"desired": desired}}`` as if a client had published it; returns the
        messages to publish. Raises ShadowRejected with IoT Core's reason on bad input."""
        _check_names(thing, name)
        topic = _prefix(thing, name) + "/update"
        with self._lock:
            return self._update(topic, thing, name, {"state": {"desired": desired}}, int(now), None)

    # ---- operations ------------------------------------------------------------------------

    def _parse(self, payload: bytes, *, allow_empty: bool) -> dict[str, Any]:
        if allow_empty and not payload.strip():
            return {}
        try:
            doc = parse_json(payload)
        except JsonInputError as exc:
            if exc.encoding:
                raise ShadowRejected(415, UNSUPPORTED_ENCODING) from exc
            raise ShadowRejected(400, "Invalid JSON") from exc
        if not isinstance(doc, dict):
            raise ShadowRejected(400, "Invalid JSON")
        return doc

    def _load_live(self, thing: str, name: str, now: int) -> _Shadow:
        sh = self._store.load(thing, name)
        if not sh.present and sh.deleted_at is not None and now - sh.deleted_at > VERSION_RETENTION_S:
            sh = _Shadow(thing, name)  # the old version number has expired
        return sh

    def _get_doc(self, thing: str, name: str, ts: int, token: str | None) -> dict[str, Any]:
        sh = self._load_live(thing, name, ts)
        if not sh.present:
            raise ShadowRejected(404, f"No shadow exists with name: '{sh.display_name}'")
        state = {k: sh.state[k] for k in SECTIONS if k in sh.state}
        d = delta(sh.state.get("desired", {}), sh.state.get("reported", {}))
        if d:
            state["delta"] = d
        doc: dict[str, Any] = {
            "state": state,
            "metadata": {k: sh.metadata[k] for k in SECTIONS if k in sh.metadata},
            "version": sh.version,
            "timestamp": ts,
        }
        return _with_token(doc, token)

    def _delete(self, thing: str, name: str, ts: int, token: str | None) -> dict[str, Any]:
        sh = self._load_live(thing, name, ts)
        if not sh.present:
            raise ShadowRejected(404, f"No shadow exists with name: '{sh.display_name}'")
        sh.present, sh.state, sh.metadata, sh.deleted_at = False, {}, {}, float(ts)
        self._store.save(sh)
        return _with_token({"version": sh.version, "timestamp": ts}, token)

    def _update(
        self, topic: str, thing: str, name: str, doc: dict[str, Any], ts: int, token: str | None
    ) -> list[Outgoing]:
        req_state = self._validate_update(doc)
        sh = self._load_live(thing, name, ts)
        if "version" in doc and doc["version"] != sh.version:
            raise ShadowRejected(409, "Version conflict")

        new_state: dict[str, Any] = {} if req_state is None else dict(sh.state)
        new_meta: dict[str, Any] = {} if req_state is None else dict(sh.metadata)
        for section, patch in (req_state or {}).items():
            if patch is None:
                new_state.pop(section, None)
                new_meta.pop(section, None)
                continue
            old = sh.state.get(section, {})
            new_meta[section] = merge_metadata(sh.metadata.get(section, {}), old, patch, ts)
            new_state[section] = merge(old, patch)
        size = len(encode({k: new_state[k] for k in SECTIONS if k in new_state}))
        if size > self.settings.max_state_bytes:
            raise ShadowRejected(413, "The payload exceeds the maximum size allowed")

        previous = sh if sh.present else None
        prev_snapshot = _snapshot(previous) if previous else None
        updated = _Shadow(thing, name, sh.version + 1, new_state, new_meta, True, None)
        self._store.save(updated)

        accepted: dict[str, Any] = {"state": req_state}
        if req_state is not None:
            accepted["metadata"] = {k: stamp(v, ts) for k, v in req_state.items()}
        accepted.update(version=updated.version, timestamp=ts)
        out = [Outgoing(topic + "/accepted", encode(_with_token(accepted, token)))]

        d = delta(new_state.get("desired", {}), new_state.get("reported", {}))
        touched_desired = req_state is not None and "desired" in req_state
        if d and (self.settings.delta_on_any_update or touched_desired):
            delta_doc = {
                "version": updated.version,
                "timestamp": ts,
                "state": d,
                "metadata": delta_metadata(d, new_meta.get("desired", {})),
            }
            out.append(Outgoing(topic + "/delta", encode(_with_token(delta_doc, token))))

        documents: dict[str, Any] = {}
        if prev_snapshot is not None:
            documents["previous"] = prev_snapshot
        documents.update(current=_snapshot(updated), timestamp=ts)
        out.append(Outgoing(topic + "/documents", encode(_with_token(documents, token))))
        return out

    def _validate_update(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """The request's ``state`` (None for ``"state": null``) after IoT Core's checks, in the
        order a client would meet them."""
        if "version" in doc and (not is_int(doc["version"]) or doc["version"] < 0):
            raise ShadowRejected(400, "Invalid version")
        if "state" not in doc:
            raise ShadowRejected(400, "Missing required node: state")
        state = doc["state"]
        if state is None:
            return None
        if not isinstance(state, dict):
            raise ShadowRejected(400, "State node must be an object")
        for key in state:
            if key not in SECTIONS:
                raise ShadowRejected(400, f"State contains an invalid node: '{key}'")
        for section in SECTIONS:
            if section not in state or state[section] is None:
                continue
            value = state[section]
            if not isinstance(value, dict):
                raise ShadowRejected(400, f"{section.capitalize()} node must be an object")
            if depth(value) > self.settings.max_depth:
                raise ShadowRejected(
                    400, f"JSON contains too many levels of nesting; maximum is {self.settings.max_depth}"
                )
            if has_null_in_array(value):
                raise ShadowRejected(400, "Invalid JSON")
        return state


def _valid_name(name: str, limit: int) -> bool:
    return bool(NAME_RE.match(name)) and len(name.encode()) <= limit


def _check_names(thing: str, name: str) -> None:
    if not _valid_name(thing, MAX_THING_NAME):
        raise ShadowRejected(400, f"Invalid thing name: {thing!r}")
    if name and not _valid_name(name, MAX_SHADOW_NAME):
        raise ShadowRejected(400, f"Invalid shadow name: {name!r}")


def _prefix(thing: str, name: str) -> str:
    base = f"$aws/things/{thing}/shadow"
    return f"{base}/name/{name}" if name else base


def _client_token(doc: dict[str, Any]) -> str | None:
    if "clientToken" not in doc:
        return None
    token = doc["clientToken"]
    if not isinstance(token, str) or not token or len(token.encode()) > MAX_CLIENT_TOKEN_BYTES:
        raise ShadowRejected(400, "Invalid clientToken")
    return token


def _with_token(doc: dict[str, Any], token: str | None) -> dict[str, Any]:
    if token is not None:
        doc["clientToken"] = token
    return doc


def _error(rej: ShadowRejected, ts: int, token: str | None) -> dict[str, Any]:
    return _with_token({"code": rej.code, "message": rej.message, "timestamp": ts}, token)


def _snapshot(sh: _Shadow) -> dict[str, Any]:
    return {
        "state": {k: sh.state[k] for k in SECTIONS if k in sh.state},
        "metadata": {k: sh.metadata[k] for k in SECTIONS if k in sh.metadata},
        "version": sh.version,
    }
