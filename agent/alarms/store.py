"""The durable event store: alarm and leak events, in order, until the broker has acknowledged them.

Its own SQLite file (``<state_dir>/events.db``), not a table of the reading spool, so the spool's
byte budget, eviction and quarantine can never touch an event, and events can be written with
``synchronous = FULL`` (a transition is rare and must survive a power cut) without slowing the
reading spool's group commits. Unsent events are never deleted; sent ones are kept for
``methane-agent events`` up to ``keep_sent`` and then pruned oldest first.

Event ids (``event_id``) come from an AUTOINCREMENT key: per device, monotonic, never reused."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,          -- alarm | leak
    key TEXT NOT NULL,           -- sensor/quantity[/falling] for alarms, sensor for leaks
    body TEXT NOT NULL,          -- the published JSON document
    sent_ms INTEGER              -- NULL until the broker acknowledged it
);
CREATE INDEX IF NOT EXISTS events_unsent ON events(id) WHERE sent_ms IS NULL;
"""


class EventStoreError(RuntimeError):
    pass


class EventStore:
    def __init__(self, path: Path, keep_sent: int = 10_000) -> None:
        self.path = path
        self.keep_sent = keep_sent
        self._db: sqlite3.Connection | None = None
        self.quarantined: str | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            # A corrupt events file must not stop the detector: keep it aside for forensics, start empty.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            with contextlib.suppress(FileNotFoundError):
                self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    self.path.with_name(self.path.name + suffix).unlink()
            self.quarantined = f"{exc}; moved to {aside.name}"
            log.error("event store corrupt; set aside and started empty", extra={"error": self.quarantined})
            self._db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            db.execute("SELECT count(*) FROM events").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise EventStoreError("event store is not open")
        return self._db

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:  # a full or failing disk: the caller reports it and retries
            raise EventStoreError(f"event store: {exc}") from exc

    def add(self, kind: str, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Store events (key, document) in one transaction; each gets its ``event_id``."""
        db = self._conn()
        out = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for key, doc in items:
                cur = db.execute("INSERT INTO events(kind, key, body) VALUES (?, ?, '')", (kind, key))
                full = {**doc, "event_id": cur.lastrowid}
                db.execute("UPDATE events SET body = ? WHERE id = ?", (json.dumps(full, separators=(",", ":")),
                                                                      cur.lastrowid))
                out.append(full)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            db.execute("ROLLBACK")
            raise EventStoreError(f"cannot store {kind} events: {exc}") from exc
        return out

    def unsent(self, limit: int = 100) -> list[tuple[int, str, str]]:
        """(id, kind, body) of events not yet acknowledged by the broker, oldest first."""
        rows = self._query("SELECT id, kind, body FROM events WHERE sent_ms IS NULL ORDER BY id LIMIT ?", (limit,))
        return [(int(str(i)), str(k), str(b)) for i, k, b in rows]

    def mark_sent(self, event_id: int) -> None:
        self._query("UPDATE events SET sent_ms = ? WHERE id = ?", (time.time_ns() // 1_000_000, event_id))
        n = int(str(self._query("SELECT count(*) FROM events WHERE sent_ms IS NOT NULL")[0][0]))
        if n > self.keep_sent:
            self._query("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE sent_ms IS NOT NULL "
                        "ORDER BY id LIMIT ?)", (n - self.keep_sent,))

    def pending(self) -> int:
        return int(str(self._query("SELECT count(*) FROM events WHERE sent_ms IS NULL")[0][0]))

    def latest_by_key(self, kind: str) -> dict[str, dict[str, Any]]:
        """The newest event of every key (to resume alarm states after a restart)."""
        rows = self._query(
            "SELECT key, body FROM events WHERE id IN (SELECT max(id) FROM events WHERE kind = ? GROUP BY key)",
            (kind,))
        return {str(k): json.loads(str(b)) for k, b in rows}


def list_events(path: Path, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Newest ``limit`` events, oldest first, read-only (safe while the agent runs, never creates the file)."""
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)) as db:
        where, args = ("WHERE kind = ?", [kind]) if kind else ("", [])
        rows = db.execute(
            f"SELECT body, sent_ms FROM events {where} ORDER BY id DESC LIMIT ?", (*args, limit)  # noqa: S608
        ).fetchall()
    out = []
    for body, sent_ms in reversed(rows):
        doc = json.loads(body)
        doc["sent"] = sent_ms is not None
        out.append(doc)
    return out
