"""The spool's public face: lifecycle and the data path (append, commit, read, ack, stats). The
policies live in their own modules: validation.py, budget.py (budget and eviction), acks.py (ack and
retry), recovery.py (sequence recovery and quarantine); store.py is the SQLite file itself."""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import heapq
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from agent.reading import Reading
from agent.spool import db, recovery
from agent.spool.acks import AckRanges, apply_acks
from agent.spool.budget import Budget, log_evictions, shed_pending
from agent.spool.journal import Journal, ack_record, journal_path, read_only, readings_records, series_record
from agent.spool.model import INT64_MAX, FsStat, Mirror, SpoolError, SpoolStats, SpoolTuning
from agent.spool.store import Eviction, Store
from agent.spool.validation import check_limits, check_reading, check_seq, check_synchronous

log = logging.getLogger("agent.spool")
_T = TypeVar("_T")
_COMMIT_ATTEMPTS = 3


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
        boot_id: Callable[[], str | None] = db.read_boot_id,
    ) -> None:
        check_limits(max_bytes, min_free_disk_bytes, commit_interval_s)
        self._synchronous = check_synchronous(synchronous)
        self.path = Path(path)
        self._commit_interval_s = float(commit_interval_s)
        self._tuning = tuning or SpoolTuning()
        self._clock = clock
        self._boot_id = boot_id
        self._budget = Budget(max_bytes=max_bytes, min_free_disk_bytes=min_free_disk_bytes, statvfs=statvfs)
        self._store = Store(self.path, synchronous=self._synchronous, tuning=self._tuning, on_commit=self._logged)
        self._res = recovery.Reservation(self.path, self._tuning.seq_reserve)
        self._acks = AckRanges()
        self._journal = (
            Journal(journal_path(self.path), sync=self._synchronous != "NORMAL") if self._tuning.journal_bytes else None
        )
        self._tail: list[Reading] = []  # committed to the journal, not folded into SQLite, not acked
        self._tail_alarms = 0
        self._set_fold_bytes(max_bytes)
        self.epoch = ""  # set by open(): names the sequence space (recovery.begin_session)
        self._next_seq = 1
        self._pending: list[Reading] = []
        self._pending_since: float | None = None
        self._last_commit: float | None = None
        self._commit_failures = 0

    @property
    def _conn(self) -> sqlite3.Connection | None:
        return self._store.conn

    @property
    def _st(self) -> Mirror:
        return self._store.st

    def _set_fold_bytes(self, max_bytes: int) -> None:
        self._fold_bytes = min(self._tuning.journal_bytes, max_bytes // 4) if self._journal else 0
        self._budget.journal_bytes = self._fold_bytes

    def _logged(self, evictions: list[Eviction]) -> None:
        log_evictions(evictions, self._st.counters)

    @staticmethod
    def peek(path: Path) -> db.Peek:
        """What the spool file at ``path`` holds, strictly read-only (for ``status`` when no daemon
        answers: opening it as a Spool could quarantine or migrate it). Raises SpoolError when the
        file cannot be read (the running agent holds it, or it is not a spool)."""
        try:
            found = db.peek(Path(path))
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot read: {exc}") from exc
        tail = read_only(journal_path(Path(path)), found.journal_gen).unacked()
        if not tail:
            return found
        oldest = min(r.ts_ms for r in tail)
        return dataclasses.replace(
            found,
            readings=found.readings + len(tail),
            alarm_readings=found.alarm_readings + sum(r.alarm for r in tail),
            oldest_ts_ms=oldest if found.oldest_ts_ms is None else min(found.oldest_ts_ms, oldest),
        )

    # --- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Open or create the spool; a corrupt file is quarantined and replaced. Calling it on an
        open spool does nothing."""
        store = self._store
        if store.conn is not None:
            return
        try:
            db.precreate(self.path)
        except OSError as exc:
            raise SpoolError(f"cannot create spool file {self.path}: {exc}") from exc
        self._res.load()
        self.epoch = ""  # the database's own epoch wins
        store.st = Mirror()
        store.st.counters["quarantined"] = self._res.state.quarantined
        # Check through a read-only connection: it can neither checkpoint a suspect WAL into the
        # file nor delete it, so a corrupt spool is moved aside exactly as it was found.
        shm = Path(f"{self.path}-shm")
        shm_existed = shm.exists()
        conn = store.connect(readonly=True)
        try:
            existing = db.check(conn)
        except db.CorruptSpool as exc:
            recovered = db.recover(conn)
            conn.close()
            self._quarantine(str(exc), recovered)
            return
        except sqlite3.Error as exc:
            conn.close()
            raise SpoolError(store.describe_open_error(exc)) from exc
        conn.close()
        if not shm_existed and self._tuning.exclusive_lock:
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()  # the check made it; the exclusive writer keeps its index in RAM
        conn = store.connect()
        if existing:
            self._begin(store.attach(conn))
            return
        start = recovery.plan_missing_database(store, self._res)
        self._create(conn, start, self._res.state.epoch)

    def _create(self, conn: sqlite3.Connection, start: int, epoch: str) -> None:
        j = self._journal
        gen = (j.gen if j.fd is not None else Journal.peek_generation(j.path) or 0) if j else 0
        meta = recovery.new_database_meta(self._store, self._res, start, epoch, gen)
        self._begin(self._store.create(conn, start, meta))

    def _begin(self, meta: dict[str, int]) -> None:
        self._open_journal(meta.get("journal_gen", 0))
        self.epoch = recovery.begin_session(
            self._store, self._res, meta, boot_id=self._boot_id(), synchronous=self._synchronous
        )
        # After a live quarantine, pending readings keep the numbers they were given.
        high = self._st.committed_high
        self._next_seq = max(high + 1, self._pending[-1].seq + 1 if self._pending else 0)

    # --- journal -----------------------------------------------------------------------------------
    def _open_journal(self, gen: int) -> None:
        """Replay the journal of generation ``gen`` (once per open; a live quarantine keeps the open
        one). A journal that cannot be used is logged and commits go straight into SQLite."""
        j = self._journal
        if j is None or j.fd is not None:
            return
        try:
            replay = j.open(gen)
        except OSError as exc:
            self._drop_journal("spool journal unreadable (its readings are not replayed)", exc)
            return
        store = self._store
        for sid, key in replay.series.items():
            if key not in store.series:
                store.add_series(key, sid)
        self._tail = replay.unacked()
        self._tail_alarms = sum(r.alarm for r in self._tail)
        store.st.committed_high = max(store.st.committed_high, replay.high)
        if not replay.series:
            try:
                self._journal_series()
            except OSError as exc:
                self._drop_journal("spool journal unusable", exc)

    def _drop_journal(self, what: str, exc: OSError) -> None:
        """The journal cannot be written: from now on every commit is an SQLite transaction."""
        j = self._journal
        if j is None:
            return
        log.error(f"{what}; committing straight into the database", extra={"path": str(j.path), "error": str(exc)})
        j.close()
        self._journal = None
        self._set_fold_bytes(self._budget.max_bytes)

    def _journal_series(self) -> None:
        """Write every known series at the start of a generation: the journal is self-contained, so
        it replays even into a new database after a quarantine."""
        j = self._journal
        if j is not None and self._store.series_by_id:
            j.append([series_record(sid, key) for sid, key in sorted(self._store.series_by_id.items())])

    def _commit_to_journal(self, batch: list[Reading]) -> bool:
        j = self._journal
        assert j is not None
        store = self._store
        reserve = self._res.ensure(store, batch[-1].seq, self.epoch)
        if reserve:
            def extend() -> None:
                store.st.reserved = max(store.st.reserved, reserve)
            store.transaction(extend, durable=True)  # sqlite3.Error: the caller commits into SQLite
        records = []
        for r in batch:
            key = (r.sensor_id, r.quantity, r.unit, r.flags)
            if key not in store.series:
                records.append(series_record(store.add_series(key), key))
        records += readings_records(batch, store.series)
        try:
            j.append(records)
        except OSError as exc:
            log.error("spool journal write failed; committing into the database",
                      extra={"path": str(j.path), "error": str(exc)})
            return False
        self._tail += batch
        self._tail_alarms += sum(r.alarm for r in batch)
        store.st.committed_high = max(store.st.committed_high, batch[-1].seq)
        return True

    def fold(self) -> bool:
        """Move the journal's readings not acknowledged yet into SQLite in one synced transaction
        that also names the journal's next generation, then start the journal over. Done by itself
        when the journal reaches its size, at close and when the budget changes; False when the
        database write failed (the journal keeps the readings)."""
        j = self._journal
        if j is None:
            return True
        store = self._store
        tail = self._tail
        gen = j.gen + 1

        def body() -> None:
            store.st.marks["journal_gen"] = gen
            store.deleted_in_txn = True  # the high-water mark must cover acknowledged journal readings
            if tail:
                self._budget.insert(store, tail)

        if not self._write_db("fold the journal", body, len(tail), durable=True):
            return False
        self._tail, self._tail_alarms = [], 0
        try:
            j.reset(gen)
            self._journal_series()
        except OSError as exc:
            self._drop_journal("spool journal reset failed", exc)
        return True

    def close(self) -> None:
        """Commit what is pending, fold the journal, mark the clean shutdown, then close. Readings
        that still cannot be committed are reported at ERROR (they would be lost)."""
        if self._store.conn is None:
            return
        self.commit()
        durable = self.fold()
        if not durable and self._journal is not None:
            try:  # the journal's readings stay there: make them durable before claiming a clean stop
                self._journal.flush()
                durable = True
            except OSError as exc:
                log.error("spool journal could not be synced at close", extra={"error": str(exc)})
        if self._pending:
            log.error(
                "spool closed with uncommitted readings (lost)",
                extra={"path": str(self.path), "count": len(self._pending)},
            )
            self._pending.clear()
            self._pending_since = None
        if durable:
            self._guarded("mark clean shutdown", lambda: recovery.mark_clean(self._store), None)
        if self._journal is not None:
            self._journal.close()
        conn = self._store.detach()
        if conn is None:
            return
        try:
            conn.close()
        except sqlite3.Error as exc:
            log.error("spool close failed", extra={"path": str(self.path), "error": str(exc)})

    def reconfigure(self, *, max_bytes: int, min_free_disk_bytes: int, commit_interval_s: float) -> None:
        """Apply new limits live; a smaller budget evicts at once. Invalid values change nothing."""
        check_limits(max_bytes, min_free_disk_bytes, commit_interval_s)
        self._budget.max_bytes = max_bytes
        self._budget.min_free = min_free_disk_bytes
        self._set_fold_bytes(max_bytes)
        self._commit_interval_s = float(commit_interval_s)
        if self._store.conn is not None:
            self.fold()  # the journal's readings come under the new budget too
            store = self._store
            self._guarded("enforce limits", lambda: store.transaction(lambda: self._budget.make_room(store, 0)), None)

    # --- data path -------------------------------------------------------------------------------
    def append(self, items: Iterable[Reading]) -> list[Reading]:
        """Give each reading (built with ``Reading.new``) its sequence number and hold it in RAM
        until the next commit. All items are validated first: one bad item raises and nothing is
        appended."""
        self._store.require()
        first = self._next_seq
        # Checked and numbered in one pass; nothing is kept until every item passed.
        out = [check_reading(i, item, first + i) for i, item in enumerate(items)]
        if not out:
            return []
        self._next_seq += len(out)
        if self._pending_since is None:
            self._pending_since = self._clock()
        self._pending.extend(out)
        if len(self._pending) >= self._tuning.max_pending:
            self.commit()
            shed_pending(self._pending, self._tuning.max_pending, self._st.counters)
        return out

    def commit_due(self, now_monotonic: float) -> bool:
        return self._pending_since is not None and now_monotonic - self._pending_since >= self._commit_interval_s

    def commit(self) -> int:
        """Write everything pending as one group commit (a journal append, or one SQLite transaction
        when the journal is off or failing); returns how many readings it committed. On failure the
        readings stay pending (0 is returned) and the next commit retries."""
        store = self._store
        store.require()
        if self._acks:
            apply_acks(store, self._acks, self._quarantine_live)
        if not self._pending:
            return 0
        batch = list(self._pending)
        done = False
        if self._journal is not None:
            try:
                done = self._commit_to_journal(batch)
            except sqlite3.Error as exc:
                log.error("spool reservation could not be written; committing into the database",
                          extra={"path": str(self.path), "error": str(exc)})
        if not done:
            def insert() -> None:
                reserve = self._res.ensure(store, batch[-1].seq, self.epoch)
                store.transaction(functools.partial(self._insert, batch, reserve), durable=reserve > 0)

            if not self._write_db("commit", None, len(batch), op=insert):
                return 0
        del self._pending[: len(batch)]
        self._pending_since = None
        self._last_commit = self._clock()
        if self._journal is not None and self._journal.size >= self._fold_bytes:
            self.fold()
        return len(batch)

    def _write_db(
        self,
        what: str,
        body: Callable[[], None] | None,
        incoming: int,
        *,
        durable: bool = False,
        op: Callable[[], None] | None = None,
    ) -> bool:
        """One write transaction with the spool's error policy: corruption quarantines and retries,
        a full disk evicts and retries, anything else keeps the data in RAM for the next commit."""
        store = self._store
        run = op or (lambda: store.transaction(body or (lambda: None), durable=durable))
        for _ in range(_COMMIT_ATTEMPTS):
            try:
                run()
            except sqlite3.Error as exc:
                if db.is_corruption(exc):
                    self._quarantine_live(str(exc))
                    continue
                if db.is_disk_full(exc):
                    self._budget.on_disk_full(store, incoming)
                    continue
                self._commit_failures += 1
                log.error(
                    f"spool {what} failed; readings kept in RAM for the next commit",
                    extra={"path": str(self.path), "error": str(exc), "pending": len(self._pending)},
                )
                return False
            return True
        self._commit_failures += 1
        log.error(
            f"spool {what} failed after evicting; readings kept in RAM for the next commit",
            extra={"path": str(self.path), "pending": len(self._pending)},
        )
        return False

    def _insert(self, batch: list[Reading], reserve_to: int) -> None:
        self._st.reserved = max(self._st.reserved, reserve_to)
        self._budget.insert(self._store, batch)

    def read_after(self, after_seq: int, limit: int) -> list[Reading]:
        """Committed readings with seq > after_seq, ascending, at most ``limit``."""
        if not isinstance(after_seq, int) or isinstance(after_seq, bool) or after_seq < 0:
            raise ValueError(f"after_seq must be an int >= 0, got {after_seq!r}")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {limit!r}")
        self._store.require()
        after_seq = min(after_seq, INT64_MAX)
        acks = self._acks
        hidden: Callable[[int], bool] = acks.hides if acks else (lambda _seq: False)
        stored: list[Reading] = []
        if self._st.rows:
            stored = self._guarded("read", lambda: self._store.read(after_seq, limit, hidden), [])
        if not self._tail:
            return stored
        i = bisect.bisect_right(self._tail, after_seq, key=lambda r: r.seq)
        journal = self._tail[i : i + limit]
        if not stored:
            return journal
        return list(heapq.merge(stored, journal, key=lambda r: r.seq))[:limit]

    def ack(self, first_seq: int, last_seq: int) -> int:
        """Delete the acknowledged range [first_seq, last_seq]; returns rows deleted. If the delete
        cannot be written now, the range is remembered, hidden from ``read_after`` and retried."""
        check_seq("first_seq", first_seq)
        check_seq("last_seq", last_seq)
        if first_seq > last_seq:
            raise ValueError(f"ack range is reversed: first_seq {first_seq} > last_seq {last_seq}")
        self._store.require()
        removed = self._ack_journal(first_seq, last_seq)
        st = self._st
        if not st.rows or st.oldest_seq is None or st.oldest_seq > last_seq:
            return removed  # nothing of it in the database: no transaction
        self._acks.add(first_seq, last_seq)
        return removed + apply_acks(self._store, self._acks, self._quarantine_live)

    def _ack_journal(self, first: int, last: int) -> int:
        """Drop [first, last] from the journal's readings and record the ack there (not synced: a lost
        ack only means those readings are sent again, and the cloud drops the copies)."""
        if self._journal is None or not self._tail:
            return 0
        tail = self._tail
        lo = bisect.bisect_left(tail, first, key=lambda r: r.seq)
        hi = bisect.bisect_right(tail, last, key=lambda r: r.seq)
        if lo == hi:
            return 0
        self._tail_alarms -= sum(r.alarm for r in tail[lo:hi])
        del tail[lo:hi]
        try:
            self._journal.append([ack_record(first, last)])
        except OSError as exc:
            log.warning("spool journal ack not recorded; those readings may be sent again after a crash",
                        extra={"error": str(exc)})
        return hi - lo

    @property
    def pending(self) -> tuple[Reading, ...]:
        """The readings appended and not yet committed, oldest first: what a kill -9 now would cost
        (``stats().pending_uncommitted`` counts them)."""
        return tuple(self._pending)

    def stats(self) -> SpoolStats:
        st = self._st
        oldest_seq, oldest_ts = st.oldest_seq, st.oldest_ts
        if self._tail and (oldest_seq is None or self._tail[0].seq < oldest_seq):
            oldest_seq, oldest_ts = self._tail[0].seq, self._tail[0].ts_ms
        return SpoolStats(
            readings=st.rows + len(self._tail),
            # What the budget counts: the database's live pages, the journal's readings as the rows
            # they become at the next fold, and the room kept for the journal.
            bytes=st.used_bytes + len(self._tail) * Budget.per_row(self._store) + self._fold_bytes,
            oldest_ts_ms=oldest_ts,
            oldest_seq=oldest_seq,
            next_seq=self._next_seq,
            pending_uncommitted=len(self._pending),
            evicted_routine=st.counters["evicted_routine"],
            evicted_alarm=st.counters["evicted_alarm"],
            quarantined=st.counters["quarantined"],
            last_commit_monotonic=self._last_commit,
            alarm_readings=st.alarm_rows + self._tail_alarms,
            committed_seq=st.committed_high,
            file_bytes=st.file_bytes,
            disk_full_events=st.counters["disk_full_events"],
            commit_failures=self._commit_failures,
            seq_skipped=st.counters["seq_skipped"],
            journal_readings=len(self._tail),
            journal_generation=self._journal.gen if self._journal is not None else 0,
        )

    # --- corruption --------------------------------------------------------------------------------
    def _guarded(self, what: str, op: Callable[[], _T], fallback: _T) -> _T:
        """Run a read or maintenance step; corruption quarantines, other SQLite errors are logged."""
        for _ in range(2):
            try:
                return op()
            except sqlite3.Error as exc:
                if db.is_corruption(exc):
                    self._quarantine_live(str(exc))
                    continue
                log.error("spool %s failed", what, extra={"path": str(self.path), "error": str(exc)})
                return fallback
        return fallback

    def _quarantine(self, reason: str, recovered: db.Recovered) -> None:
        moved = db.quarantine(self.path, self._tuning.keep_quarantined)
        plan = recovery.plan_quarantine(
            self._store, self._res, recovered, epoch=self.epoch, reason=reason, moved=moved
        )
        self.epoch = plan.epoch
        db.precreate(self.path)
        self._create(self._store.connect(), plan.start, plan.epoch)

    def _quarantine_live(self, reason: str) -> None:
        """Corruption found while running: the readings in the file go aside with it (logged);
        pending readings stay in RAM and are committed into the new file."""
        conn = self._store.detach()
        assert conn is not None
        recovered = db.recover(conn)
        lost = self._st.rows
        with contextlib.suppress(sqlite3.Error):
            conn.close()
        log.error("spool readings left in the quarantined file", extra={"count": lost})
        self._st.rows = self._st.alarm_rows = 0
        self._acks.clear()
        self._quarantine(reason, recovered)

