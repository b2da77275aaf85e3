"""What the spool's parts share: its public value types, its tuning knobs and the in-memory mirror
of what is committed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

SYNCHRONOUS_LEVELS = ("NORMAL", "FULL", "EXTRA")
INT64_MAX = 2**63 - 1
META_COUNTERS = ("evicted_routine", "evicted_alarm", "disk_full_events", "quarantined", "seq_skipped")
META_MARKS = ("clean", "boot", "epoch", "synced", "journal_gen")  # written synced (recovery.py, core.py)


@dataclass(frozen=True)
class SpoolStats:
    readings: int  # committed, not yet acknowledged
    bytes: int  # what max_bytes bounds: live pages, journal readings as rows, room kept for the journal
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
    journal_readings: int = 0  # of ``readings``, those still in the append journal (not yet folded into SQLite)
    journal_generation: int = 0  # folds so far into this database (0 without a journal)


@dataclass(frozen=True)
class SpoolTuning:
    """Knobs measured by bench/bench_spool.py; the defaults are the measured choice."""

    page_size: int = 512  # SQLite's minimum: a group commit of 8 readings writes one 536-byte WAL frame
    wal_autocheckpoint_pages: int = 1000
    exclusive_lock: bool = True  # no -shm file to rewrite; a second agent on the same file fails fast
    seq_reserve: int = 65536  # sidecar rewritten once per this many readings
    max_pending: int = 100_000  # readings held in RAM while commits fail (disk gone); then shed
    keep_quarantined: int = 3
    # Group commits go to an append-only journal and move into SQLite ("fold") when it reaches this
    # size (or a quarter of max_bytes, if smaller); 0 commits straight into SQLite (journal.py).
    journal_bytes: int = 65536


class SpoolError(RuntimeError):
    """The spool file cannot be used at all (permissions, locked by another process, I/O error)."""


class FsStat(Protocol):
    @property
    def f_bavail(self) -> int: ...

    @property
    def f_frsize(self) -> int: ...


@dataclass
class Mirror:
    """In-memory mirror of what is committed; snapshotted around every transaction so a rollback
    restores it exactly."""

    rows: int = 0
    alarm_rows: int = 0
    committed_high: int = 0
    reserved: int = 0  # durable reservation: every committed seq is <= this (synced in meta)
    marks: dict[str, int] = field(default_factory=dict)  # session marks for meta (META_MARKS)
    used_bytes: int = 0
    file_bytes: int = 0
    oldest_seq: int | None = None
    oldest_ts: int | None = None
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(META_COUNTERS, 0))
    persisted: dict[str, int] = field(default_factory=dict)  # meta as last committed

    def copy(self) -> Mirror:
        return replace(self, counters=dict(self.counters), persisted=dict(self.persisted), marks=dict(self.marks))
