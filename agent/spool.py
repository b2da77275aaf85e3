"""The durable spool: every reading is kept on disk from its commit until the broker acknowledged it.

Contract (docs/spool.md has the reasoning and the measured disk-write figures):

* ``append`` gives each reading the next per-device sequence number and keeps it in RAM; ``commit``
  writes everything pending in ONE SQLite (WAL) transaction. A reading exists once that commits.
  The caller commits when ``commit_due`` says so (group commit: at most ``commit_interval_s`` in RAM),
  so an SD card is written about once a second, not once per reading.
* Committed sequence numbers are monotonic and never reused within an epoch: a number handed out
  but never committed (crash before commit) is handed out again after restart, the high-water mark
  is kept in the ``meta`` table whenever rows are deleted, and after a restart that may have lost
  commits (power cut at NORMAL) the sequence continues after the durable reservation
  (``_begin_session``).
* ``ack`` deletes a range only after the broker's PUBACK for the batch carrying it.
* The spool is bounded by ``max_bytes`` and by free-disk headroom. When full it evicts the oldest
  routine readings; alarm readings go only when nothing else is left (logged at ERROR). Every
  eviction is counted in ``meta`` in the same transaction. SQLITE_FULL / ENOSPC evicts and retries.
* A corrupt file is moved aside (``spool_db.quarantine``), counted in a sidecar that outlives the
  database, and a fresh spool continues the sequence (``spool_sidecar`` explains the reservation).

Used from one thread (the agent's asyncio loop). Nothing here raises on disk trouble during normal
operation: a failed commit keeps its readings in RAM (bounded), logs, and is retried by the next
commit. Only ``open`` raises ``SpoolError`` when the file cannot be used at all (permissions,
another process holds it), and bad arguments raise ``ValueError``/``TypeError`` changing nothing.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import json
import logging
import math
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TypeVar

from agent import spool_db, spool_sidecar
from agent.reading import Reading

log = logging.getLogger(__name__)
_T = TypeVar("_T")

SYNCHRONOUS_LEVELS = ("NORMAL", "FULL", "EXTRA")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_COMMIT_ATTEMPTS = 3
_MAX_PENDING_ACK_RANGES = 1024
_META_COUNTERS = ("evicted_routine", "evicted_alarm", "disk_full_events", "quarantined", "seq_skipped")


@dataclass(frozen=True)
class NewReading:
    """A reading before the spool gave it its sequence number."""

    ts_ms: int
    clock_synced: bool
    sensor_id: str
    quantity: str
    value: float
    unit: str
    flags: tuple[str, ...] = ()
    alarm: bool = False


@dataclass(frozen=True)
class SpoolStats:
    readings: int  # committed, not yet acknowledged
    bytes: int  # bytes the spool's live pages occupy (what max_bytes bounds)
    oldest_ts_ms: int | None
    oldest_seq: int | None
    next_seq: int
    pending_uncommitted: int
    evicted_routine: int
    evicted_alarm: int
    quarantined: int
    last_commit_monotonic: float | None
    alarm_readings: int = 0
    committed_seq: int = 0  # highest committed sequence number (the durable high-water mark)
    file_bytes: int = 0  # size of the main database file (the WAL comes on top, bounded)
    disk_full_events: int = 0  # SQLITE_FULL / ENOSPC met and handled
    commit_failures: int = 0  # commits that kept their readings in RAM for a later retry
    seq_skipped: int = 0  # sequence numbers skipped (never used) to stay clear of possibly-sent ones


@dataclass(frozen=True)
class SpoolTuning:
    """Knobs measured by bench/bench_spool.py; the defaults are the measured choice."""

    page_size: int = 512  # SQLite's minimum: a group commit of 8 readings writes one 536-byte WAL frame
    wal_autocheckpoint_pages: int = 1000
    exclusive_lock: bool = True  # no -shm file to rewrite; a second agent on the same file fails fast
    seq_reserve: int = 65536  # sidecar rewritten once per this many readings
    max_pending: int = 100_000  # readings held in RAM while commits fail (disk gone); then shed
    keep_quarantined: int = 3


class SpoolError(RuntimeError):
    """The spool file cannot be used at all (permissions, locked by another process, I/O error)."""


class FsStat(Protocol):
    @property
    def f_bavail(self) -> int: ...

    @property
    def f_frsize(self) -> int: ...


@dataclass
class _State:
    """In-memory mirror of what is committed; snapshotted around every transaction so a rollback
    restores it exactly."""

    rows: int = 0
    alarm_rows: int = 0
    committed_high: int = 0
    reserved: int = 0  # durable reservation: every committed seq is <= this (synced in meta)
    marks: dict[str, int] = field(default_factory=dict)  # session marks for meta: clean, boot, epoch
    used_bytes: int = 0
    file_bytes: int = 0
    oldest_seq: int | None = None
    oldest_ts: int | None = None
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_META_COUNTERS, 0))
    persisted: dict[str, int] = field(default_factory=dict)  # meta as last committed

    def copy(self) -> _State:
        return replace(self, counters=dict(self.counters), persisted=dict(self.persisted), marks=dict(self.marks))


SeriesKey = tuple[str, str, str, tuple[str, ...]]
_META_MARKS = ("clean", "boot", "epoch", "synced")


def _epoch_from_meta(value: int | None) -> str:
    """The epoch as stored in meta (an int of 8 hex digits); '' when absent or not one of ours."""
    return f"{value:08x}" if isinstance(value, int) and 0 <= value < 2**32 else ""


def _boot_key(boot_id: str | None) -> int | None:
    """The boot id as a meta integer (60 bits of the UUID); None when the boot is unknown."""
    digits = (boot_id or "").strip().replace("-", "").lower()
    try:
        return int(digits[:15], 16) if len(digits) >= 15 else None
    except ValueError:
        return None


def _check_limits(max_bytes: int, min_free_disk_bytes: int, commit_interval_s: float) -> None:
    for name, value in (("max_bytes", max_bytes), ("min_free_disk_bytes", min_free_disk_bytes)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if min_free_disk_bytes < 0:
        raise ValueError(f"min_free_disk_bytes must be >= 0, got {min_free_disk_bytes}")
    if (
        not isinstance(commit_interval_s, int | float)
        or isinstance(commit_interval_s, bool)
        or not math.isfinite(commit_interval_s)
        or commit_interval_s <= 0
    ):
        raise ValueError(f"commit_interval_s must be a positive number of seconds, got {commit_interval_s!r}")


def _check_text(index: int, name: str, value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise TypeError(f"reading #{index}: {name} must be a str, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"reading #{index}: {name} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"reading #{index}: {name} is not valid UTF-8 text: {exc.reason}") from None
    return value


def _checked(index: int, item: object) -> NewReading:
    """Validate one incoming reading; the error names the reading and the field."""
    if not isinstance(item, NewReading):
        raise TypeError(f"reading #{index}: expected NewReading, got {type(item).__name__}")
    if not isinstance(item.ts_ms, int) or isinstance(item.ts_ms, bool):
        raise TypeError(f"reading #{index}: ts_ms must be an int, got {type(item.ts_ms).__name__}")
    if not _INT64_MIN <= item.ts_ms <= _INT64_MAX:
        raise ValueError(f"reading #{index}: ts_ms {item.ts_ms} does not fit in 64 bits")
    if not isinstance(item.clock_synced, bool):
        raise TypeError(f"reading #{index}: clock_synced must be a bool")
    if not isinstance(item.alarm, bool):
        raise TypeError(f"reading #{index}: alarm must be a bool")
    if not isinstance(item.value, int | float) or isinstance(item.value, bool):
        raise TypeError(f"reading #{index}: value must be a number, got {type(item.value).__name__}")
    try:
        value = float(item.value)
    except OverflowError:
        raise ValueError(f"reading #{index}: value {item.value} is too large for a float") from None
    if not isinstance(item.flags, tuple | list):
        raise TypeError(f"reading #{index}: flags must be a tuple of str, got {type(item.flags).__name__}")
    flags = tuple(_check_text(index, "flag", f) for f in item.flags)
    return NewReading(
        ts_ms=item.ts_ms,
        clock_synced=item.clock_synced,
        sensor_id=_check_text(index, "sensor_id", item.sensor_id),
        quantity=_check_text(index, "quantity", item.quantity),
        value=value,
        unit=_check_text(index, "unit", item.unit, allow_empty=True),
        flags=flags,
        alarm=item.alarm,
    )


class Spool:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        min_free_disk_bytes: int,
        commit_interval_s: float,
        synchronous: str = "NORMAL",
        tuning: SpoolTuning | None = None,
        clock: Callable[[], float] = time.monotonic,
        statvfs: Callable[[str], FsStat] = os.statvfs,
        boot_id: Callable[[], str | None] = spool_db.read_boot_id,
    ) -> None:
        _check_limits(max_bytes, min_free_disk_bytes, commit_interval_s)
        level = synchronous.upper() if isinstance(synchronous, str) else synchronous
        if level not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, got {synchronous!r}")
        self.path = Path(path)
        self._max_bytes = max_bytes
        self._min_free = min_free_disk_bytes
        self._commit_interval_s = float(commit_interval_s)
        self._synchronous = level
        self._tuning = tuning or SpoolTuning()
        self._clock = clock
        self._statvfs = statvfs
        self._boot_id = boot_id
        self._sidecar_path = spool_sidecar.sidecar_path(self.path)
        self._sidecar = spool_sidecar.SidecarState()
        self.epoch = ""  # set by open(): names the sequence space (see spool_sidecar)
        self._conn: sqlite3.Connection | None = None
        self._st = _State()
        self._next_seq = 1
        self._pending: list[Reading] = []
        self._pending_since: float | None = None
        self._pending_acks: list[tuple[int, int]] = []
        self._series: dict[SeriesKey, int] = {}
        self._series_by_id: dict[int, SeriesKey] = {}
        self._last_commit: float | None = None
        self._commit_failures = 0
        self._evictions: list[tuple[str, int, int, int]] = []  # (table, count, first, last) in this txn
        self._deleted_in_txn = False  # rows deleted: the high-water mark must be written with them

    # --- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Open or create the spool; a corrupt file is quarantined and replaced. Calling it on an
        open spool does nothing."""
        if self._conn is not None:
            return
        try:
            spool_db.precreate(self.path)
        except OSError as exc:
            raise SpoolError(f"cannot create spool file {self.path}: {exc}") from exc
        self._sidecar = spool_sidecar.load(self._sidecar_path) or spool_sidecar.SidecarState()
        self.epoch = ""  # the database's own epoch wins; see _begin_session
        self._st = _State()
        self._st.counters["quarantined"] = self._sidecar.quarantined
        # Check through a read-only connection: it can neither checkpoint a suspect WAL into the
        # file nor delete it, so a corrupt spool is moved aside exactly as it was found.
        shm = Path(f"{self.path}-shm")
        shm_existed = shm.exists()
        conn = self._connect(readonly=True)
        try:
            existing = spool_db.check(conn)
        except spool_db.CorruptSpool as exc:
            recovered = spool_db.recover(conn)
            conn.close()
            self._quarantine(str(exc), recovered)
            return
        except sqlite3.Error as exc:
            conn.close()
            raise SpoolError(self._describe_open_error(exc)) from exc
        conn.close()
        if not shm_existed and self._tuning.exclusive_lock:
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()  # the check made it; the exclusive writer keeps its index in RAM
        conn = self._connect()
        if existing:
            self._begin_session(self._attach(conn))
            return
        start = 0
        if self._sidecar.seq_reserved:
            # An empty file next to a sidecar: the database was deleted or lost. Continue after the
            # reservation so no sequence number the cloud already saw is handed out again.
            start = self._sidecar.seq_reserved
            self._st.counters["seq_skipped"] += start - self._sidecar.seq_committed
            log.warning(
                "spool database was missing; continuing the sequence after the reserved range",
                extra={
                    "path": str(self.path),
                    "next_seq": start + 1,
                    "skipped_first_seq": self._sidecar.seq_committed + 1,
                    "skipped_last_seq": start,
                },
            )
        self._create(conn, start, epoch=self._sidecar.epoch)

    def close(self) -> None:
        """Commit what is pending, then close. Readings that still cannot be committed are
        reported at ERROR (they would be lost)."""
        if self._conn is None:
            return
        self.commit()
        if self._pending:
            log.error(
                "spool closed with uncommitted readings (lost)",
                extra={"path": str(self.path), "count": len(self._pending)},
            )
            self._pending.clear()
            self._pending_since = None
        # The clean-shutdown mark, synced: everything committed before it is on stable storage, so
        # the next start may continue the sequence right after the last committed number.
        self._st.marks["clean"] = 1
        self._guarded("mark clean shutdown", lambda: self._transaction(lambda: None, durable=True), None)
        conn, self._conn = self._conn, None
        try:
            conn.close()
        except sqlite3.Error as exc:
            log.error("spool close failed", extra={"path": str(self.path), "error": str(exc)})

    def reconfigure(self, *, max_bytes: int, min_free_disk_bytes: int, commit_interval_s: float) -> None:
        """Apply new limits live; a smaller budget evicts at once. Invalid values change nothing."""
        _check_limits(max_bytes, min_free_disk_bytes, commit_interval_s)
        self._max_bytes = max_bytes
        self._min_free = min_free_disk_bytes
        self._commit_interval_s = float(commit_interval_s)
        if self._conn is not None:
            self._guarded("enforce limits", lambda: self._transaction(lambda: self._make_room(0)), None)

    # --- data path -------------------------------------------------------------------------------
    def append(self, items: Iterable[NewReading]) -> list[Reading]:
        """Give each reading its sequence number and hold it in RAM until the next commit. All
        items are validated first: one bad item raises and nothing is appended."""
        self._require_open()
        checked = [_checked(i, item) for i, item in enumerate(items)]
        if not checked:
            return []
        out = []
        for item in checked:
            out.append(
                Reading(
                    seq=self._next_seq,
                    ts_ms=item.ts_ms,
                    clock_synced=item.clock_synced,
                    sensor_id=item.sensor_id,
                    quantity=item.quantity,
                    value=item.value,
                    unit=item.unit,
                    flags=tuple(item.flags),
                    alarm=item.alarm,
                )
            )
            self._next_seq += 1
        if self._pending_since is None:
            self._pending_since = self._clock()
        self._pending.extend(out)
        if len(self._pending) >= self._tuning.max_pending:
            self.commit()
            self._shed_pending()
        return out

    def commit_due(self, now_monotonic: float) -> bool:
        return self._pending_since is not None and now_monotonic - self._pending_since >= self._commit_interval_s

    def commit(self) -> int:
        """Write everything pending in one transaction; returns how many readings it committed.
        On failure the readings stay pending (0 is returned) and the next commit retries."""
        self._require_open()
        if self._pending_acks:
            self._retry_acks()
        if not self._pending:
            return 0
        batch = list(self._pending)
        for _ in range(_COMMIT_ATTEMPTS):
            try:
                reserve = self._ensure_reserved(batch[-1].seq)
                self._transaction(functools.partial(self._insert, batch, reserve), durable=reserve > 0)
            except sqlite3.Error as exc:
                if spool_db.is_corruption(exc):
                    self._quarantine_live(str(exc))
                    continue
                if spool_db.is_disk_full(exc):
                    self._on_disk_full(len(batch))
                    continue
                self._commit_failures += 1
                log.error(
                    "spool commit failed; readings kept in RAM for the next commit",
                    extra={"path": str(self.path), "error": str(exc), "pending": len(self._pending)},
                )
                return 0
            del self._pending[: len(batch)]
            self._pending_since = None
            self._last_commit = self._clock()
            return len(batch)
        self._commit_failures += 1
        log.error(
            "spool commit failed after evicting; readings kept in RAM for the next commit",
            extra={"path": str(self.path), "pending": len(self._pending)},
        )
        return 0

    def read_after(self, after_seq: int, limit: int) -> list[Reading]:
        """Committed readings with seq > after_seq, ascending, at most ``limit``."""
        if not isinstance(after_seq, int) or isinstance(after_seq, bool) or after_seq < 0:
            raise ValueError(f"after_seq must be an int >= 0, got {after_seq!r}")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        self._require_open()
        after_seq = min(after_seq, _INT64_MAX)
        result: list[Reading] = self._guarded("read", lambda: self._read(after_seq, limit), [])
        return result

    def ack(self, first_seq: int, last_seq: int) -> int:
        """Delete the acknowledged range [first_seq, last_seq]; returns rows deleted. If the delete
        cannot be written now, the range is remembered, hidden from ``read_after`` and retried."""
        for name, value in (("first_seq", first_seq), ("last_seq", last_seq)):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _INT64_MAX:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if first_seq > last_seq:
            raise ValueError(f"ack range is reversed: first_seq {first_seq} > last_seq {last_seq}")
        self._require_open()
        self._pending_acks.append((first_seq, last_seq))
        return self._retry_acks()

    def stats(self) -> SpoolStats:
        st = self._st
        return SpoolStats(
            readings=st.rows,
            bytes=st.used_bytes,
            oldest_ts_ms=st.oldest_ts,
            oldest_seq=st.oldest_seq,
            next_seq=self._next_seq,
            pending_uncommitted=len(self._pending),
            evicted_routine=st.counters["evicted_routine"],
            evicted_alarm=st.counters["evicted_alarm"],
            quarantined=st.counters["quarantined"],
            last_commit_monotonic=self._last_commit,
            alarm_readings=st.alarm_rows,
            committed_seq=st.committed_high,
            file_bytes=st.file_bytes,
            disk_full_events=st.counters["disk_full_events"],
            commit_failures=self._commit_failures,
            seq_skipped=st.counters["seq_skipped"],
        )

    # --- opening -----------------------------------------------------------------------------------
    def _connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        try:
            if readonly:
                uri = self.path.resolve().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=True)
            else:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from exc
        try:
            if self._tuning.exclusive_lock and not readonly:
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA busy_timeout=1000")
        except sqlite3.Error as exc:
            conn.close()
            raise SpoolError(self._describe_open_error(exc)) from exc
        return conn

    def _describe_open_error(self, exc: sqlite3.Error) -> str:
        if spool_db.primary_code(exc) in (spool_db.SQLITE_BUSY, spool_db.SQLITE_LOCKED):
            return f"spool {self.path} is locked by another process (is another agent running?)"
        return f"cannot use spool {self.path}: {exc}"

    def _configure(self, conn: sqlite3.Connection) -> None:
        t = self._tuning
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise SpoolError(f"spool {self.path} cannot use WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA wal_autocheckpoint={int(t.wal_autocheckpoint_pages)}")
        # Keep the WAL file's size after a checkpoint instead of truncating and regrowing it.
        conn.execute(f"PRAGMA journal_size_limit={int(t.wal_autocheckpoint_pages) * (t.page_size + 24) * 2}")

    def _create(
        self, conn: sqlite3.Connection, start_hwm: int, counters: dict[str, int] | None = None, *, epoch: str = ""
    ) -> None:
        """A new database that starts after ``start_hwm`` (already chosen safely by the caller, so
        it is marked clean: the session that begins on it needs no further skip)."""
        try:
            conn.execute(f"PRAGMA page_size={int(self._tuning.page_size)}")
            self._configure(conn)
            base = dict.fromkeys(_META_COUNTERS, 0)
            base.update(counters or {})
            for name in _META_COUNTERS:
                base[name] = max(base[name], self._st.counters[name])
            base["reserved"] = max(start_hwm, self._sidecar.seq_reserved)
            base["clean"] = 1
            if epoch:
                base["epoch"] = int(epoch, 16)
            spool_db.create_schema(conn, start_hwm, base)
        except sqlite3.Error as exc:
            conn.close()
            raise SpoolError(f"cannot create spool {self.path}: {exc}") from exc
        except SpoolError:
            conn.close()
            raise
        self._begin_session(self._attach(conn))

    def _attach(self, conn: sqlite3.Connection) -> dict[str, int]:
        """Load the in-memory mirror from a checked database and make it the live connection.
        Returns the database's meta table."""
        try:
            self._configure(conn)
            meta = {str(k): int(v) for k, v in conn.execute("SELECT k, v FROM meta")}
            self._series.clear()
            self._series_by_id.clear()
            for sid, sensor, quantity, unit, flags in conn.execute(
                "SELECT id, sensor_id, quantity, unit, flags FROM series"
            ):
                key: SeriesKey = (sensor, quantity, unit, tuple(json.loads(flags)))
                self._series[key] = sid
                self._series_by_id[sid] = key
            st = self._st
            st.rows = st.alarm_rows = 0
            highs = [meta.get("hwm", 0)]
            for table in spool_db.READING_TABLES:
                count, high = conn.execute(f"SELECT count(*), max(seq) FROM {table}").fetchone()  # noqa: S608
                st.rows += count
                if table == "alarm":
                    st.alarm_rows = count
                highs.append(high or 0)
        except (sqlite3.Error, ValueError) as exc:
            conn.close()
            raise SpoolError(f"cannot load spool {self.path}: {exc}") from exc
        for name in _META_COUNTERS:
            st.counters[name] = max(st.counters.get(name, 0), meta.get(name, 0))
        st.persisted = {k: v for k, v in meta.items() if k in (*_META_COUNTERS, *_META_MARKS, "hwm", "reserved")}
        st.committed_high = max(highs)
        st.reserved = meta.get("reserved", 0)
        self._conn = conn
        self._refresh_sizes()
        self._refresh_oldest()
        return meta

    def _begin_session(self, meta: dict[str, int]) -> None:
        """Decide where the sequence continues and under which epoch, then mark the session as
        running (synced). The rule (docs/spool.md, "Sequence numbers after a crash"):

        * the epoch is the database's own (meta), else the sidecar's, else a new one;
        * after a clean shutdown, a crash of the process alone (same boot: the page cache kept every
          committed write) or a session whose every commit was synced (FULL/EXTRA), the sequence
          continues right after the last committed number;
        * otherwise (power loss, unknown boot) commits the broker may already have acknowledged can
          have rolled back, so it continues after the durable reservation; the range in between is
          reported as skipped (logged, counted in ``seq_skipped``), never handed out again.
        """
        st = self._st
        self.epoch = _epoch_from_meta(meta.get("epoch")) or self._sidecar.epoch or secrets.token_hex(4)
        reserved = max(st.reserved, self._sidecar.seq_reserved)
        boot = _boot_key(self._boot_id())
        # Every commit of a FULL/EXTRA session was synced before it returned: nothing sent can have
        # rolled back, so the sequence may continue where the database says.
        clean = meta.get("clean") == 1 or meta.get("synced") == 1
        same_boot = boot is not None and meta.get("boot") == boot
        skipped = not clean and not same_boot and reserved > st.committed_high
        if skipped:
            first, last = st.committed_high + 1, reserved
            st.counters["seq_skipped"] += last - first + 1
            st.committed_high = reserved
            log.warning(
                "spool did not shut down cleanly before this boot; sequence numbers after the last "
                "durable commit are skipped (they may name readings the cloud already holds)",
                extra={"path": str(self.path), "skipped_first_seq": first, "skipped_last_seq": last,
                       "epoch": self.epoch},
            )
        st.reserved = reserved
        # After a live quarantine, pending readings keep the numbers they were given.
        self._next_seq = max(st.committed_high + 1, self._pending[-1].seq + 1 if self._pending else 0)
        st.marks.update(clean=0, boot=boot or 0, epoch=int(self.epoch, 16), synced=int(self._synchronous != "NORMAL"))

        def mark() -> None:
            self._deleted_in_txn = skipped  # persist the high-water mark that now covers the skip

        try:
            self._transaction(mark, durable=True)
        except sqlite3.Error as exc:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            raise SpoolError(f"cannot start a session on spool {self.path}: {exc}") from exc
        sc = self._sidecar
        if (
            sc.seq_reserved < max(st.reserved, st.committed_high)
            or sc.quarantined < st.counters["quarantined"]
            or sc.epoch != self.epoch
        ):
            self._write_sidecar(reserve_to=max(st.reserved, st.committed_high))

    # --- quarantine --------------------------------------------------------------------------------
    def _quarantine(self, reason: str, recovered: spool_db.Recovered) -> None:
        moved = spool_db.quarantine(self.path, self._tuning.keep_quarantined)
        st = self._st
        st.counters["quarantined"] += 1
        # A partial recovery is never trusted over a reservation: the corrupt file may have lost
        # commits whose numbers the cloud already holds, so take the larger of the two.
        known = max(recovered.hwm or 0, self._sidecar.seq_committed, st.committed_high)
        reserved = max(recovered.reserved, self._sidecar.seq_reserved, st.reserved)
        start = max(known, reserved)
        if start > known:
            source = "reservation"
            st.counters["seq_skipped"] += start - known
        else:
            source = "corrupt file" if recovered.hwm is not None else "none (sequence restarts)"
        epoch = self.epoch or recovered.epoch or self._sidecar.epoch
        log.error(
            "spool database is corrupt; moved aside and started a new one",
            extra={
                "path": str(self.path),
                "moved_to": str(moved),
                "reason": reason,
                "quarantined": st.counters["quarantined"],
                "next_seq": start + 1,
                "seq_recovered_from": source,
                "skipped_first_seq": known + 1 if start > known else None,
                "skipped_last_seq": start if start > known else None,
            },
        )
        counters = {
            "evicted_routine": max(st.counters["evicted_routine"], recovered.evicted_routine),
            "evicted_alarm": max(st.counters["evicted_alarm"], recovered.evicted_alarm),
            "disk_full_events": max(st.counters["disk_full_events"], recovered.disk_full_events),
            "quarantined": st.counters["quarantined"],
            "seq_skipped": max(st.counters["seq_skipped"], recovered.seq_skipped),
        }
        st.committed_high = start
        self.epoch = epoch
        self._write_sidecar(reserve_to=start + self._tuning.seq_reserve)
        spool_db.precreate(self.path)
        conn = self._connect()
        self._create(conn, start, counters, epoch=epoch)

    def _quarantine_live(self, reason: str) -> None:
        """Corruption found while running: the readings in the file go aside with it (logged);
        pending readings stay in RAM and are committed into the new file."""
        assert self._conn is not None
        conn, self._conn = self._conn, None
        recovered = spool_db.recover(conn)
        lost = self._st.rows
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        log.error("spool readings left in the quarantined file", extra={"count": lost})
        self._st.rows = self._st.alarm_rows = 0
        self._pending_acks.clear()
        self._quarantine(reason, recovered)

    # --- transactions ------------------------------------------------------------------------------
    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("spool is not open")
        return self._conn

    def _transaction(self, body: Callable[[], object], *, durable: bool = False) -> None:
        """Run ``body`` in one write transaction; on any failure roll back and restore the mirror.
        ``durable`` syncs this one commit whatever the ``synchronous`` level (reservations and
        session marks must survive a power cut; they are rare)."""
        conn = self._require_open()
        snapshot = self._st.copy()
        series = (dict(self._series), dict(self._series_by_id))
        self._evictions.clear()
        self._deleted_in_txn = False
        synced = durable and self._synchronous == "NORMAL"
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
            self._st = snapshot
            self._series, self._series_by_id = series
            self._evictions.clear()
            self._deleted_in_txn = False
            raise
        finally:
            if synced:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(f"PRAGMA synchronous={self._synchronous}")
        self._deleted_in_txn = False
        self._log_evictions()

    def _guarded(self, what: str, op: Callable[[], _T], fallback: _T) -> _T:
        """Run a read or maintenance step; corruption quarantines, other SQLite errors are logged."""
        for _ in range(2):
            try:
                return op()
            except sqlite3.Error as exc:
                if spool_db.is_corruption(exc):
                    self._quarantine_live(str(exc))
                    continue
                log.error("spool %s failed", what, extra={"path": str(self.path), "error": str(exc)})
                return fallback
        return fallback

    def _insert(self, batch: list[Reading], reserve_to: int = 0) -> None:
        conn = self._require_open()
        st = self._st
        high = batch[-1].seq
        st.reserved = max(st.reserved, reserve_to)
        batch = self._make_room_for(batch)
        routine: list[tuple[int, int, int, float | None]] = []
        alarm: list[tuple[int, int, int, float | None]] = []
        for r in batch:
            row = (r.seq, r.ts_ms, self._series_id(conn, r) << 1 | int(r.clock_synced), r.value)
            (alarm if r.alarm else routine).append(row)
        if routine:
            conn.executemany("INSERT INTO routine (seq, ts, k, v) VALUES (?, ?, ?, ?)", routine)
        if alarm:
            conn.executemany("INSERT INTO alarm (seq, ts, k, v) VALUES (?, ?, ?, ?)", alarm)
        st.rows += len(batch)
        st.alarm_rows += len(alarm)
        st.committed_high = max(st.committed_high, high)
        self._refresh_sizes()
        self._make_room(0)
        if st.oldest_seq is None or self._evictions:
            self._refresh_oldest()

    def _series_id(self, conn: sqlite3.Connection, r: Reading) -> int:
        key: SeriesKey = (r.sensor_id, r.quantity, r.unit, r.flags)
        sid = self._series.get(key)
        if sid is None:
            sid = len(self._series_by_id) + 1
            while sid in self._series_by_id:
                sid += 1
            conn.execute(
                "INSERT INTO series (id, sensor_id, quantity, unit, flags) VALUES (?, ?, ?, ?, ?)",
                (sid, r.sensor_id, r.quantity, r.unit, json.dumps(list(r.flags))),
            )
            self._series[key] = sid
            self._series_by_id[sid] = key
        return sid

    def _persist_meta(self) -> None:
        """Write changed counters, and the high-water mark whenever rows may have been deleted, in the
        same transaction. A plain commit changes neither, so it writes no meta page."""
        st = self._st
        wanted = {**st.counters, **st.marks, "reserved": st.reserved}
        if self._deleted_in_txn and st.persisted.get("hwm", 0) < st.committed_high:
            wanted["hwm"] = st.committed_high
        changed = [(k, v) for k, v in wanted.items() if st.persisted.get(k) != v]
        if changed:
            self._require_open().executemany("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", changed)
            st.persisted.update(changed)

    # --- eviction and headroom ---------------------------------------------------------------------
    def _refresh_sizes(self) -> None:
        conn = self._require_open()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        self._st.used_bytes = (pages - free) * size
        self._st.file_bytes = pages * size

    def _refresh_oldest(self) -> None:
        conn = self._require_open()
        best: tuple[int, int] | None = None
        for table in spool_db.READING_TABLES:
            row = conn.execute(f"SELECT seq, ts FROM {table} ORDER BY seq LIMIT 1").fetchone()  # noqa: S608
            if row is not None and (best is None or row[0] < best[0]):
                best = (row[0], row[1])
        self._st.oldest_seq, self._st.oldest_ts = best if best else (None, None)

    def _cap_bytes(self) -> int:
        """The byte budget now: max_bytes, and no file growth beyond the free-disk headroom (deleted
        rows give pages back to SQLite's freelist, not to the file system, so once the headroom is
        reached the spool lives inside its current file)."""
        try:
            fs = self._statvfs(str(self.path.parent))
        except OSError as exc:
            log.warning("statvfs failed; only max_bytes applies", extra={"error": str(exc)})
            return self._max_bytes
        growth = fs.f_bavail * fs.f_frsize - self._min_free
        return min(self._max_bytes, self._st.file_bytes + max(0, growth))

    def _make_room(self, incoming: int, *, alarms: bool = True) -> int:
        """Evict until the committed pages plus ``incoming`` rows fit the budget (inside the caller's
        transaction): oldest routine readings first, alarm readings only when no routine one is left
        and ``alarms`` allows it. Returns how many rows' worth of room is still missing."""
        st = self._st
        cap = self._cap_bytes()
        per_row = self._per_row()
        need = st.used_bytes + incoming * per_row - cap
        while need > 0:
            n = max(1, math.ceil(need / per_row))
            if not self._evict_oldest("routine", n) and not (alarms and self._evict_oldest("alarm", n)):
                break  # nothing evictable left (only the schema's pages, or only alarms)
            self._refresh_sizes()
            need = st.used_bytes + incoming * per_row - cap
        return max(0, math.ceil(need / per_row))

    def _per_row(self) -> int:
        st = self._st
        return max(16, st.used_bytes // st.rows) if st.rows else 32

    def _make_room_for(self, batch: list[Reading]) -> list[Reading]:
        """Make room before inserting ``batch`` without ever evicting an alarm while a routine
        reading (stored or incoming) is left: stored routine readings go first, then the incoming
        routine ones (oldest first, counted and logged like any eviction), and only then stored
        alarms. Returns the part of the batch to insert."""
        missing = self._make_room(len(batch), alarms=False)
        if not missing:
            return batch
        drop = [r for r in batch if not r.alarm][:missing]
        if drop:
            self._count_dropped(drop, "routine")
            dropped = {r.seq for r in drop}
            batch = [r for r in batch if r.seq not in dropped]
            missing -= len(drop)
        if missing:
            self._make_room(len(batch))
        return batch

    def _count_dropped(self, dropped: list[Reading], table: str) -> None:
        """Count readings evicted before they reached a table (their seqs become a logged gap)."""
        counter = "evicted_alarm" if table == "alarm" else "evicted_routine"
        self._st.counters[counter] += len(dropped)
        self._deleted_in_txn = True  # the high-water mark must cover the dropped seqs
        self._evictions.append((table, len(dropped), dropped[0].seq, dropped[-1].seq))

    def _evict_oldest(self, table: str, n: int) -> int:
        conn = self._require_open()
        first, last = conn.execute(
            f"SELECT min(seq), max(seq) FROM (SELECT seq FROM {table} ORDER BY seq LIMIT ?)",  # noqa: S608
            (n,),
        ).fetchone()
        if first is None:
            return 0
        deleted = conn.execute(f"DELETE FROM {table} WHERE seq BETWEEN ? AND ?", (first, last)).rowcount  # noqa: S608
        st = self._st
        st.rows -= deleted
        counter = "evicted_alarm" if table == "alarm" else "evicted_routine"
        if table == "alarm":
            st.alarm_rows -= deleted
        st.counters[counter] += deleted
        self._deleted_in_txn = True
        self._evictions.append((table, deleted, first, last))
        return int(deleted)

    def _log_evictions(self) -> None:
        for table, count, first, last in self._evictions:
            extra = {
                "count": count,
                "first_seq": first,
                "last_seq": last,
                "evicted_routine": self._st.counters["evicted_routine"],
                "evicted_alarm": self._st.counters["evicted_alarm"],
            }
            if table == "alarm":
                log.error("spool full with no routine readings left: evicted the oldest ALARM readings", extra=extra)
            else:
                log.warning("spool full: evicted the oldest routine readings", extra=extra)
        self._evictions.clear()

    def _on_disk_full(self, incoming: int) -> None:
        """SQLITE_FULL / ENOSPC: count it, evict a generous chunk in its own transaction and give the
        WAL's space back, so the retried commit has room."""
        st = self._st
        st.counters["disk_full_events"] += 1
        log.error("spool hit a full disk; evicting to make room", extra={"path": str(self.path)})
        chunk = max(incoming * 2, st.rows // 20, 1)

        def evict() -> None:
            if not self._evict_oldest("routine", chunk):
                self._evict_oldest("alarm", chunk)
            self._refresh_sizes()
            self._refresh_oldest()

        try:
            self._transaction(evict)
        except sqlite3.Error as exc:
            log.error("spool eviction on a full disk failed", extra={"error": str(exc)})
        with contextlib.suppress(sqlite3.Error):
            self._require_open().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _shed_pending(self) -> None:
        """RAM is bounded too: while commits keep failing, drop the oldest routine pending readings
        (counted as evicted) beyond ``max_pending``."""
        excess = len(self._pending) - self._tuning.max_pending
        if excess <= 0:
            return
        # Alarms go only when no routine reading is left: the oldest routine ones anywhere in the
        # buffer first, then the oldest alarms for what is still missing.
        routine = [i for i, r in enumerate(self._pending) if not r.alarm][:excess]
        alarms = [i for i, r in enumerate(self._pending) if r.alarm][: excess - len(routine)]
        drop = sorted(routine + alarms)
        dropped = [self._pending[i] for i in drop]
        for i in reversed(drop):
            del self._pending[i]
        n_alarm = sum(r.alarm for r in dropped)
        self._st.counters["evicted_alarm"] += n_alarm
        self._st.counters["evicted_routine"] += len(dropped) - n_alarm
        log.error(
            "spool cannot commit and RAM buffer is full: dropped the oldest uncommitted readings",
            extra={"count": len(dropped), "alarm": n_alarm, "first_seq": dropped[0].seq},
        )

    # --- acknowledgements and reads ----------------------------------------------------------------
    def _retry_acks(self) -> int:
        ranges = self._merged_acks()
        deleted = 0

        def delete() -> None:
            nonlocal deleted
            conn = self._require_open()
            st = self._st
            for first, last in ranges:
                for table in spool_db.READING_TABLES:
                    n = conn.execute(f"DELETE FROM {table} WHERE seq BETWEEN ? AND ?", (first, last)).rowcount  # noqa: S608
                    deleted += n
                    st.rows -= n
                    if table == "alarm":
                        st.alarm_rows -= n
            if deleted:
                self._deleted_in_txn = True
                self._refresh_sizes()
                self._refresh_oldest()

        for _ in range(2):
            try:
                self._transaction(delete)
            except sqlite3.Error as exc:
                deleted = 0
                if spool_db.is_corruption(exc):
                    self._quarantine_live(str(exc))
                    return 0
                if spool_db.is_disk_full(exc):
                    self._st.counters["disk_full_events"] += 1
                    with contextlib.suppress(sqlite3.Error):
                        self._require_open().execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    continue
                log.error("spool ack failed; will retry", extra={"error": str(exc), "ranges": len(ranges)})
                return 0
            self._pending_acks.clear()
            return deleted
        log.error("spool ack failed on a full disk; will retry", extra={"ranges": len(ranges)})
        return 0

    def _merged_acks(self) -> list[tuple[int, int]]:
        merged: list[tuple[int, int]] = []
        for first, last in sorted(self._pending_acks):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        # Bounded: forgetting an old un-applied ack only means those rows are sent again (the cloud
        # drops duplicates by sequence number), never that a reading is lost.
        self._pending_acks = merged[-_MAX_PENDING_ACK_RANGES:]
        return list(self._pending_acks)

    def _acked(self, seq: int) -> bool:
        return any(first <= seq <= last for first, last in self._pending_acks)

    def _read(self, after_seq: int, limit: int) -> list[Reading]:
        conn = self._require_open()

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
            if self._pending_acks and self._acked(seq):
                continue
            key = self._series_by_id.get(k >> 1)
            if key is None:
                log.error("spool row refers to an unknown series; skipped", extra={"seq": seq, "series": k >> 1})
                continue
            sensor_id, quantity, unit, flags = key
            out.append(
                Reading(
                    seq=seq,
                    ts_ms=ts,
                    clock_synced=bool(k & 1),
                    sensor_id=sensor_id,
                    quantity=quantity,
                    value=math.nan if v is None else float(v),
                    unit=unit,
                    flags=flags,
                    alarm=alarm,
                )
            )
            if len(out) == limit:
                break
        return out

    # --- sequence reservation ----------------------------------------------------------------------
    def _ensure_reserved(self, seq: int) -> int:
        """Before committing ``seq``: extend the reservation when ``seq`` passes it. Returns the new
        reservation for the database (0 when none is needed); the caller syncs that commit, so the
        database's reservation is durable before any number above the old one can be sent."""
        if seq > self._sidecar.seq_reserved:
            self._write_sidecar(reserve_to=seq + self._tuning.seq_reserve)
        if seq > self._st.reserved:
            return max(seq + self._tuning.seq_reserve, self._sidecar.seq_reserved)
        return 0

    def _write_sidecar(self, *, reserve_to: int) -> None:
        state = spool_sidecar.SidecarState(
            quarantined=self._st.counters["quarantined"],
            seq_reserved=max(reserve_to, self._sidecar.seq_reserved),
            seq_committed=self._st.committed_high,
            epoch=self.epoch,
        )
        try:
            spool_sidecar.store(self._sidecar_path, state)
        except OSError as exc:
            # Readings matter more than the reservation: commit anyway, retry at the next commit.
            log.error("spool sidecar write failed", extra={"path": str(self._sidecar_path), "error": str(exc)})
            return
        self._sidecar = state
