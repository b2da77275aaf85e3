"""Budget and eviction: the spool stays within ``max_bytes`` and the free-disk headroom, and keeps
its RAM buffer bounded while commits fail. One rule everywhere: the oldest routine readings go
first; alarm readings go only when no routine reading is left (stored, incoming or in RAM). Every
eviction is counted (in ``meta``, in the same transaction) and logged with its range."""

from __future__ import annotations

import logging
import math
import os
import sqlite3
from collections.abc import Callable

from agent.reading import Reading
from agent.spool.model import FsStat
from agent.spool.store import Eviction, Store

log = logging.getLogger("agent.spool")


class Budget:
    def __init__(self, *, max_bytes: int, min_free_disk_bytes: int, statvfs: Callable[[str], FsStat] = os.statvfs):
        self.max_bytes = max_bytes
        self.min_free = min_free_disk_bytes
        self.journal_bytes = 0  # kept free for the journal, so database + journal stay within max_bytes
        self._statvfs = statvfs

    def cap_bytes(self, store: Store) -> int:
        """The byte budget now: max_bytes, and no file growth beyond the free-disk headroom (deleted
        rows give pages back to SQLite's freelist, not to the file system, so once the headroom is
        reached the spool lives inside its current file)."""
        limit = max(self.max_bytes - self.journal_bytes, 0)
        try:
            fs = self._statvfs(str(store.path.parent))
        except OSError as exc:
            log.warning("statvfs failed; only max_bytes applies", extra={"error": str(exc)})
            return limit
        growth = fs.f_bavail * fs.f_frsize - self.min_free - self.journal_bytes
        return min(limit, store.st.file_bytes + max(0, growth))

    @staticmethod
    def per_row(store: Store) -> int:
        """Bytes one reading occupies in the database now (an estimate before there is any row)."""
        st = store.st
        return max(16, st.used_bytes // st.rows) if st.rows else 32

    def make_room(self, store: Store, incoming: int, *, alarms: bool = True) -> int:
        """Evict until the committed pages plus ``incoming`` rows fit the budget (inside the caller's
        transaction): oldest routine readings first, alarm readings only when no routine one is left
        and ``alarms`` allows it. Returns how many rows' worth of room is still missing."""
        st = store.st
        cap = self.cap_bytes(store)
        per_row = self.per_row(store)
        need = st.used_bytes + incoming * per_row - cap
        while need > 0:
            n = max(1, math.ceil(need / per_row))
            if not evict_oldest(store, "routine", n) and not (alarms and evict_oldest(store, "alarm", n)):
                break  # nothing evictable left (only the schema's pages, or only alarms)
            store.refresh_sizes()
            need = st.used_bytes + incoming * per_row - cap
        return max(0, math.ceil(need / per_row))

    def make_room_for(self, store: Store, batch: list[Reading]) -> list[Reading]:
        """Make room before inserting ``batch`` without ever evicting an alarm while a routine
        reading (stored or incoming) is left: stored routine readings go first, then the incoming
        routine ones (oldest first, counted and logged like any eviction), and only then stored
        alarms. Returns the part of the batch to insert."""
        missing = self.make_room(store, len(batch), alarms=False)
        if not missing:
            return batch
        drop = [r for r in batch if not r.alarm][:missing]
        if drop:
            store.st.counters["evicted_routine"] += len(drop)
            store.deleted_in_txn = True  # the high-water mark must cover the dropped seqs
            store.evictions.append(Eviction("routine", len(drop), drop[0].seq, drop[-1].seq))
            dropped = {r.seq for r in drop}
            batch = [r for r in batch if r.seq not in dropped]
            missing -= len(drop)
        if missing:
            self.make_room(store, len(batch))
        return batch

    def insert(self, store: Store, batch: list[Reading]) -> None:
        """Insert ``batch`` within the budget (inside the caller's transaction)."""
        st = store.st
        high = batch[-1].seq
        store.insert(self.make_room_for(store, batch))
        st.committed_high = max(st.committed_high, high)
        store.refresh_sizes()
        self.make_room(store, 0)
        if st.oldest_seq is None or store.evictions:
            store.refresh_oldest()

    def on_disk_full(self, store: Store, incoming: int) -> None:
        """SQLITE_FULL / ENOSPC: count it, evict a generous chunk in its own transaction and give the
        WAL's space back, so the retried commit has room."""
        st = store.st
        st.counters["disk_full_events"] += 1
        log.error("spool hit a full disk; evicting to make room", extra={"path": str(store.path)})
        chunk = max(incoming * 2, st.rows // 20, 1)

        def evict() -> None:
            if not evict_oldest(store, "routine", chunk):
                evict_oldest(store, "alarm", chunk)
            store.refresh_sizes()
            store.refresh_oldest()

        try:
            store.transaction(evict)
        except sqlite3.Error as exc:
            log.error("spool eviction on a full disk failed", extra={"error": str(exc)})
        store.truncate_wal()


def evict_oldest(store: Store, table: str, n: int) -> int:
    """Delete ``table``'s oldest ``n`` rows, counted (inside the caller's transaction)."""
    span = store.oldest_range(table, n)
    if span is None:
        return 0
    deleted = store.delete_range(table, *span)
    store.st.counters["evicted_alarm" if table == "alarm" else "evicted_routine"] += deleted
    store.evictions.append(Eviction(table, deleted, *span))
    return deleted


def log_evictions(evictions: list[Eviction], counters: dict[str, int]) -> None:
    for ev in evictions:
        extra = {
            "count": ev.count,
            "first_seq": ev.first,
            "last_seq": ev.last,
            "evicted_routine": counters["evicted_routine"],
            "evicted_alarm": counters["evicted_alarm"],
        }
        if ev.table == "alarm":
            log.error("spool full with no routine readings left: evicted the oldest ALARM readings", extra=extra)
        else:
            log.warning("spool full: evicted the oldest routine readings", extra=extra)


def shed_pending(pending: list[Reading], max_pending: int, counters: dict[str, int]) -> None:
    """RAM is bounded too: while commits keep failing, drop readings beyond ``max_pending`` (counted
    as evicted). Alarms go only when no routine reading is left: the oldest routine ones anywhere in
    the buffer first, then the oldest alarms for what is still missing."""
    excess = len(pending) - max_pending
    if excess <= 0:
        return
    routine = [i for i, r in enumerate(pending) if not r.alarm][:excess]
    alarms = [i for i, r in enumerate(pending) if r.alarm][: excess - len(routine)]
    drop = sorted(routine + alarms)
    dropped = [pending[i] for i in drop]
    for i in reversed(drop):
        del pending[i]
    n_alarm = sum(r.alarm for r in dropped)
    counters["evicted_alarm"] += n_alarm
    counters["evicted_routine"] += len(dropped) - n_alarm
    log.error(
        "spool cannot commit and RAM buffer is full: dropped the oldest uncommitted readings",
        extra={"count": len(dropped), "alarm": n_alarm, "first_seq": dropped[0].seq},
    )
