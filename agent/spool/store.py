"""The spool's SQLite file at run time: the connection, transactions that keep the in-memory mirror
exact across rollbacks, interned series, and the row primitives (insert, delete a range, read after
a cursor) the policy parts (budget.py, acks.py, recovery.py) are built from.

Row layout (db.py explains why): ``(seq, ts, k, v)`` with ``k = series_id << 1 | clock_synced``,
routine and alarm readings in two tables with the same layout.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import math
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.reading import Reading
from agent.spool import db
from agent.spool.model import META_COUNTERS, META_MARKS, Mirror, SpoolError, SpoolTuning

log = logging.getLogger("agent.spool")

SeriesKey = tuple[str, str, str, tuple[str, ...]]
Row = tuple[int, int, int, float | None]


@dataclass(frozen=True)
class Eviction:
    """One evicted range inside a transaction, logged once the transaction committed."""

    table: str
    count: int
    first: int
    last: int


class Store:
    def __init__(
        self, path: Path, *, synchronous: str, tuning: SpoolTuning, on_commit: Callable[[list[Eviction]], None]
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.tuning = tuning
        self._on_commit = on_commit
        self.conn: sqlite3.Connection | None = None
        self.st = Mirror()
        self.series: dict[SeriesKey, int] = {}
        self.series_by_id: dict[int, SeriesKey] = {}
        self.unsaved: set[int] = set()  # series known (from the journal) but not yet in the table
        self.evictions: list[Eviction] = []  # in the current transaction
        self.deleted_in_txn = False  # rows deleted: the high-water mark must be written with them

    # --- connections -------------------------------------------------------------------------------
    def require(self) -> sqlite3.Connection:
        if self.conn is None:
            raise RuntimeError("spool is not open")
        return self.conn

    def connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        try:
            if readonly:
                uri = self.path.resolve().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=True)
            else:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from exc
        try:
            if self.tuning.exclusive_lock and not readonly:
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA busy_timeout=1000")
        except sqlite3.Error as exc:
            conn.close()
            raise SpoolError(self.describe_open_error(exc)) from exc
        return conn

    def describe_open_error(self, exc: sqlite3.Error) -> str:
        if db.primary_code(exc) in (db.SQLITE_BUSY, db.SQLITE_LOCKED):
            return f"spool {self.path} is locked by another process (is another agent running?)"
        return f"cannot use spool {self.path}: {exc}"

    def _configure(self, conn: sqlite3.Connection) -> None:
        t = self.tuning
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolError(f"spool {self.path} cannot use WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(f"PRAGMA wal_autocheckpoint={int(t.wal_autocheckpoint_pages)}")
        # Keep the WAL file's size after a checkpoint instead of truncating and regrowing it.
        conn.execute(f"PRAGMA journal_size_limit={int(t.wal_autocheckpoint_pages) * (t.page_size + 24) * 2}")

    def create(self, conn: sqlite3.Connection, start_hwm: int, meta: dict[str, int]) -> dict[str, int]:
        """Make ``conn``'s empty file a new spool whose sequence starts after ``start_hwm``."""
        try:
            conn.execute(f"PRAGMA page_size={int(self.tuning.page_size)}")
            self._configure(conn)
            db.create_schema(conn, start_hwm, meta)
        except sqlite3.Error as exc:
            conn.close()
            raise SpoolError(f"cannot create spool {self.path}: {exc}") from exc
        except SpoolError:
            conn.close()
            raise
        return self.attach(conn)

    def attach(self, conn: sqlite3.Connection) -> dict[str, int]:
        """Load the mirror from a checked database and make it the live connection. Returns the
        database's meta table."""
        st = self.st
        try:
            self._configure(conn)
            meta = {str(k): int(v) for k, v in conn.execute("SELECT k, v FROM meta")}
            self.series.clear()
            self.series_by_id.clear()
            self.unsaved.clear()
            for sid, sensor, quantity, unit, flags in conn.execute(
                "SELECT id, sensor_id, quantity, unit, flags FROM series"
            ):
                key: SeriesKey = (sensor, quantity, unit, tuple(json.loads(flags)))
                self.series[key] = sid
                self.series_by_id[sid] = key
            st.rows = st.alarm_rows = 0
            highs = [meta.get("hwm", 0)]
            for table in db.READING_TABLES:
                count, high = conn.execute(f"SELECT count(*), max(seq) FROM {table}").fetchone()  # noqa: S608
                st.rows += count
                if table == "alarm":
                    st.alarm_rows = count
                highs.append(high or 0)
        except (sqlite3.Error, ValueError) as exc:
            conn.close()
            raise SpoolError(f"cannot load spool {self.path}: {exc}") from exc
        for name in META_COUNTERS:
            st.counters[name] = max(st.counters.get(name, 0), meta.get(name, 0))
        st.persisted = {k: v for k, v in meta.items() if k in (*META_COUNTERS, *META_MARKS, "hwm", "reserved")}
        st.committed_high = max(highs)
        st.reserved = meta.get("reserved", 0)
        self.conn = conn
        self.refresh_sizes()
        self.refresh_oldest()
        return meta

    def detach(self) -> sqlite3.Connection | None:
        conn, self.conn = self.conn, None
        return conn

    # --- transactions ------------------------------------------------------------------------------
    def transaction(self, body: Callable[[], object], *, durable: bool = False) -> None:
        """Run ``body`` in one write transaction; on any failure roll back and restore the mirror.
        ``durable`` syncs this one commit whatever the ``synchronous`` level (reservations and
        session marks must survive a power cut; they are rare)."""
        conn = self.require()
        snapshot = self.st.copy()
        series = (dict(self.series), dict(self.series_by_id), set(self.unsaved))
        self.evictions.clear()
        self.deleted_in_txn = False
        synced = durable and self.synchronous == "NORMAL"
        try:
            if synced:
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            body()
            self._persist_meta()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            self.st = snapshot
            self.series, self.series_by_id, self.unsaved = series
            self.evictions.clear()
            self.deleted_in_txn = False
            raise
        finally:
            if synced:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(f"PRAGMA synchronous={self.synchronous}")
        self.deleted_in_txn = False
        done, self.evictions = self.evictions, []
        if done:
            self._on_commit(done)

    def _persist_meta(self) -> None:
        """Write changed counters and marks, and the high-water mark whenever rows may have been
        deleted, in the same transaction. A plain commit changes none, so it writes no meta page."""
        st = self.st
        wanted = {**st.counters, **st.marks, "reserved": st.reserved}
        if self.deleted_in_txn and st.persisted.get("hwm", 0) < st.committed_high:
            wanted["hwm"] = st.committed_high
        changed = [(k, v) for k, v in wanted.items() if st.persisted.get(k) != v]
        if changed:
            self.require().executemany("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", changed)
            st.persisted.update(changed)

    # --- rows ----------------------------------------------------------------------------------------
    def insert(self, batch: list[Reading]) -> None:
        """Insert numbered readings (inside a transaction); the caller made room first."""
        conn = self.require()
        st = self.st
        routine: list[Row] = []
        alarm: list[Row] = []
        for r in batch:
            row = (r.seq, r.ts_ms, self._series_id(conn, r) << 1 | int(r.clock_synced), r.value)
            (alarm if r.alarm else routine).append(row)
        if routine:
            conn.executemany("INSERT INTO routine (seq, ts, k, v) VALUES (?, ?, ?, ?)", routine)
        if alarm:
            conn.executemany("INSERT INTO alarm (seq, ts, k, v) VALUES (?, ?, ?, ?)", alarm)
        st.rows += len(batch)
        st.alarm_rows += len(alarm)

    def _series_id(self, conn: sqlite3.Connection, r: Reading) -> int:
        key: SeriesKey = (r.sensor_id, r.quantity, r.unit, r.flags)
        sid = self.series.get(key)
        if sid is None:
            sid = self.add_series(key)
        if sid in self.unsaved:
            conn.execute(
                "INSERT INTO series (id, sensor_id, quantity, unit, flags) VALUES (?, ?, ?, ?, ?)",
                (sid, r.sensor_id, r.quantity, r.unit, json.dumps(list(r.flags))),
            )
            self.unsaved.discard(sid)
        return sid

    def add_series(self, key: SeriesKey, sid: int | None = None) -> int:
        """Intern ``key`` (under ``sid`` when that id is free); its table row is written by the next
        insert that uses it."""
        if sid is None or sid in self.series_by_id:
            sid = max(self.series_by_id, default=0) + 1
        self.series[key] = sid
        self.series_by_id[sid] = key
        self.unsaved.add(sid)
        return sid

    def delete_range(self, table: str, first: int, last: int) -> int:
        """Delete ``table``'s rows in [first, last] (inside a transaction); keeps the mirror."""
        n = int(self.require().execute(f"DELETE FROM {table} WHERE seq BETWEEN ? AND ?", (first, last)).rowcount)  # noqa: S608
        st = self.st
        st.rows -= n
        if table == "alarm":
            st.alarm_rows -= n
        if n:
            self.deleted_in_txn = True
        return n

    def oldest_range(self, table: str, n: int) -> tuple[int, int] | None:
        """The seq range of ``table``'s oldest ``n`` rows."""
        first, last = self.require().execute(
            f"SELECT min(seq), max(seq) FROM (SELECT seq FROM {table} ORDER BY seq LIMIT ?)",  # noqa: S608
            (n,),
        ).fetchone()
        return None if first is None else (int(first), int(last))

    def read(self, after_seq: int, limit: int, hidden: Callable[[int], bool]) -> list[Reading]:
        """Committed readings with seq > after_seq, ascending, at most ``limit``, skipping ``hidden``
        seqs: two rowid-range seeks merged in order."""
        conn = self.require()

        def rows(table: str) -> Iterator[tuple[int, int, int, float | None, bool]]:
            alarm = table == "alarm"
            cur = conn.execute(
                f"SELECT seq, ts, k, v FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
                (after_seq, limit),
            )
            for seq, ts, k, v in cur:
                yield seq, ts, k, v, alarm

        out: list[Reading] = []
        for seq, ts, k, v, alarm in heapq.merge(rows("routine"), rows("alarm")):
            if hidden(seq):
                continue
            key = self.series_by_id.get(k >> 1)
            if key is None:
                log.error("spool row refers to an unknown series; skipped", extra={"seq": seq, "series": k >> 1})
                continue
            sensor_id, quantity, unit, flags = key
            value = math.nan if v is None else float(v)
            out.append(Reading(seq, ts, bool(k & 1), sensor_id, quantity, value, unit, flags, alarm))
            if len(out) == limit:
                break
        return out

    # --- sizes ---------------------------------------------------------------------------------------
    def refresh_sizes(self) -> None:
        conn = self.require()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        self.st.used_bytes = (pages - free) * size
        self.st.file_bytes = pages * size

    def refresh_oldest(self) -> None:
        conn = self.require()
        best: tuple[int, int] | None = None
        for table in db.READING_TABLES:
            row = conn.execute(f"SELECT seq, ts FROM {table} ORDER BY seq LIMIT 1").fetchone()  # noqa: S608
            if row is not None and (best is None or row[0] < best[0]):
                best = (row[0], row[1])
        self.st.oldest_seq, self.st.oldest_ts = best if best else (None, None)

    def truncate_wal(self) -> None:
        """Give the WAL's disk space back (after a full disk)."""
        with contextlib.suppress(sqlite3.Error):
            self.require().execute("PRAGMA wal_checkpoint(TRUNCATE)")
