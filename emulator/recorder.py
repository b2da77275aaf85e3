"""Telemetry recorder: which sequence numbers of which device reached the cloud, and how often.

The agent's contract is "every reading arrives, gapless per device, duplicates allowed and
detectable". The recorder is the test's witness for it: an ``admin`` MQTT5 client subscribed to
the telemetry topics that decodes every batch with the agent's own decoder and counts each
(device, seq) in SQLite.

Basic Ingest: real IoT Core lets nobody subscribe to ``$aws/rules/...`` (those messages go only to
the rules engine). The emulator records them anyway, through an ``admin`` subscription to
``$aws/rules/+/#``, so tests can check delivery on that path too.

A payload that does not decode is kept in ``rejects`` with the reason; it never stops the recorder.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from emulator.state import EmulatorInfo
from emulator.subscriber import Item, QueuedSubscriber, SubscriberError

log = logging.getLogger(__name__)

DB_FILE = "telemetry.db"
TOPICS = ("dt/methane/+/+/telemetry", "$aws/rules/+/#")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS arrivals (
    thing TEXT NOT NULL, seq INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (thing, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY, thing TEXT NOT NULL, batch_id TEXT NOT NULL, topic TEXT NOT NULL,
    first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, readings INTEGER NOT NULL,
    bytes INTEGER NOT NULL, received_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY, topic TEXT NOT NULL, reason TEXT NOT NULL, bytes INTEGER NOT NULL,
    received_at REAL NOT NULL);
"""


class RecorderError(SubscriberError):
    """The recorder could not connect or subscribe."""


class TelemetryStore:
    """The SQLite side, usable without a broker (``emulator telemetry`` reads it after the fact)."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(f"{self.path}: no telemetry recorded here")
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record(self, topic: str, payload: bytes, content_type: str | None, now: float) -> None:
        """Decode one message and count its readings; an undecodable one goes to ``rejects``."""
        from agent.payload import PayloadError, decode  # lazily: the emulator may run without it

        try:
            batch = decode(payload, content_type)
        except PayloadError as exc:
            with self._lock, self._db:
                self._db.execute(
                    "INSERT INTO rejects (topic, reason, bytes, received_at) VALUES (?, ?, ?, ?)",
                    (topic, str(exc), len(payload), now),
                )
            log.warning("undecodable telemetry", extra={"topic": topic, "reason": str(exc)})
            return
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO batches (thing, batch_id, topic, first_seq, last_seq, readings, bytes, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (batch.device, batch.batch_id, topic, batch.first_seq, batch.last_seq, len(batch.readings),
                 len(payload), now),
            )
            self._db.executemany(
                "INSERT INTO arrivals (thing, seq, count) VALUES (?, ?, 1)"
                " ON CONFLICT (thing, seq) DO UPDATE SET count = count + 1",
                ((batch.device, r.seq) for r in batch.readings),
            )

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def received(self, thing: str) -> set[int]:
        return {seq for (seq,) in self._query("SELECT seq FROM arrivals WHERE thing = ?", (thing,))}

    def duplicates(self, thing: str) -> int:
        """Extra copies: a reading delivered three times counts 2."""
        (n,) = self._query("SELECT COALESCE(SUM(count - 1), 0) FROM arrivals WHERE thing = ?", (thing,))[0]
        return int(n)

    def gaps(self, thing: str, upto: int | None = None, start: int = 1) -> list[tuple[int, int]]:
        """Missing seqs in [start, upto] as inclusive ranges; ``upto`` defaults to the highest
        seq received (so trailing loss is visible only when the caller says how far it sent)."""
        seqs = sorted(self.received(thing))
        end = upto if upto is not None else (seqs[-1] if seqs else start - 1)
        out: list[tuple[int, int]] = []
        expect = start
        for s in seqs:
            if s > end:
                break
            if s < expect:
                continue
            if s > expect:
                out.append((expect, s - 1))
            expect = s + 1
        if expect <= end:
            out.append((expect, end))
        return out

    def things(self) -> list[str]:
        return [t for (t,) in self._query("SELECT DISTINCT thing FROM arrivals ORDER BY thing")]

    def batches(self, thing: str) -> int:
        (n,) = self._query("SELECT COUNT(*) FROM batches WHERE thing = ?", (thing,))[0]
        return int(n)

    def rejects(self) -> list[tuple[str, str]]:
        return [(t, r) for t, r in self._query("SELECT topic, reason FROM rejects ORDER BY id")]

    def summary(self, thing: str, upto: int | None = None) -> dict[str, Any]:
        got = self.received(thing)
        return {
            "thing": thing,
            "received": len(got),
            "first_seq": min(got) if got else None,
            "last_seq": max(got) if got else None,
            "duplicates": self.duplicates(thing),
            "gaps": [list(g) for g in self.gaps(thing, upto)],
            "batches": self.batches(thing),
            "rejects": len(self.rejects()),
        }


class TelemetryRecorder(QueuedSubscriber):
    """An emulator component (``start(info)``/``stop()``) writing every telemetry message to a
    ``TelemetryStore``."""

    topics = TOPICS
    name = "recorder"
    error = RecorderError

    def __init__(self, db_path: Path | None = None) -> None:
        super().__init__()
        self.db_path = db_path
        self.store: TelemetryStore | None = None

    def prepare(self, info: EmulatorInfo) -> None:
        self.store = TelemetryStore(self.db_path or info.state_dir / DB_FILE)

    def handle(self, item: Item) -> None:
        if self.store is not None:
            self.store.record(*item)

    def wait_for(self, thing: str, seqs: Iterable[int], timeout: float = 30.0) -> None:
        """Wait until every seq in ``seqs`` of ``thing`` has arrived (at least once)."""
        want = set(seqs)
        deadline = time.monotonic() + timeout
        while True:
            missing = want - self.received(thing)
            if not missing:
                return
            if time.monotonic() >= deadline:
                sample = sorted(missing)[:10]
                raise TimeoutError(f"{thing}: {len(missing)} seqs never arrived, e.g. {sample}")
            time.sleep(0.02)

    def _need_store(self) -> TelemetryStore:
        if self.store is None:
            raise RecorderError("recorder not started")
        return self.store

    def received(self, thing: str) -> set[int]:
        return self._need_store().received(thing)

    def duplicates(self, thing: str) -> int:
        return self._need_store().duplicates(thing)

    def gaps(self, thing: str, upto: int | None = None) -> list[tuple[int, int]]:
        return self._need_store().gaps(thing, upto)

    def rejects(self) -> list[tuple[str, str]]:
        return self._need_store().rejects()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
