"""Recovery and quarantine: where the sequence continues after a restart, a power cut, a lost
database or a corrupt one, so that no (epoch, seq) the cloud may hold ever names a second reading.

* The **reservation**: every committed seq is <= it. It is extended (``seq + seq_reserve``) before a
  commit passes it, in the sidecar (fsynced) and in ``meta.reserved`` inside that commit, which is
  synced whatever the level. A number is sent only after its commit returned.
* **Session marks** (synced): ``open`` writes clean=0, the boot id, the epoch and whether every
  commit is synced; ``close`` writes clean=1 after the last commit.
* The rule at open and the one at quarantine are in ``begin_session`` and ``plan_quarantine``.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from agent.spool import db, sidecar
from agent.spool.model import META_COUNTERS, SpoolError
from agent.spool.store import Store

log = logging.getLogger("agent.spool")


def epoch_from_meta(value: int | None) -> str:
    """The epoch as stored in meta (an int of 8 hex digits); '' when absent or not one of ours."""
    return f"{value:08x}" if isinstance(value, int) and 0 <= value < 2**32 else ""


def boot_key(boot_id: str | None) -> int | None:
    """The boot id as a meta integer (60 bits of the UUID); None when the boot is unknown."""
    digits = (boot_id or "").strip().replace("-", "").lower()
    try:
        return int(digits[:15], 16) if len(digits) >= 15 else None
    except ValueError:
        return None


class Reservation:
    """The sidecar (what must outlive the database) and the reservation it carries."""

    def __init__(self, db_path: Path, reserve: int) -> None:
        self.path = sidecar.sidecar_path(db_path)
        self.reserve = reserve
        self.state = sidecar.SidecarState()

    def load(self) -> None:
        self.state = sidecar.load(self.path) or sidecar.SidecarState()

    def ensure(self, store: Store, seq: int, epoch: str) -> int:
        """Before committing ``seq``: extend the reservation when ``seq`` passes it. Returns the new
        reservation for the database (0 when none is needed); the caller syncs that commit, so the
        database's reservation is durable before any number above the old one can be sent."""
        if seq > self.state.seq_reserved:
            self.write(store, epoch, reserve_to=seq + self.reserve)
        if seq > store.st.reserved:
            return max(seq + self.reserve, self.state.seq_reserved)
        return 0

    def write(self, store: Store, epoch: str, *, reserve_to: int) -> None:
        st = store.st
        state = sidecar.SidecarState(
            quarantined=st.counters["quarantined"],
            seq_reserved=max(reserve_to, self.state.seq_reserved),
            seq_committed=st.committed_high,
            epoch=epoch,
        )
        try:
            sidecar.store(self.path, state)
        except OSError as exc:
            # Readings matter more than the reservation: commit anyway, retry at the next commit.
            log.error("spool sidecar write failed", extra={"path": str(self.path), "error": str(exc)})
            return
        self.state = state


def begin_session(
    store: Store, res: Reservation, meta: dict[str, int], *, boot_id: str | None, synchronous: str
) -> str:
    """Decide where the sequence continues and under which epoch, then mark the session as running
    (synced). Returns the epoch. The rule (docs/spool.md, "Sequence numbers after a crash"):

    * the epoch is the database's own (meta), else the sidecar's, else a new one;
    * after a clean shutdown, a crash of the process alone (same boot: the page cache kept every
      committed write) or a session whose every commit was synced (FULL/EXTRA), the sequence
      continues right after the last committed number;
    * otherwise (power loss, unknown boot) commits the broker may already have acknowledged can have
      rolled back, so it continues after the durable reservation; the range in between is reported
      as skipped (logged, counted in ``seq_skipped``), never handed out again.
    """
    st = store.st
    epoch = epoch_from_meta(meta.get("epoch")) or res.state.epoch or secrets.token_hex(4)
    reserved = max(st.reserved, res.state.seq_reserved)
    boot = boot_key(boot_id)
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
            extra={"path": str(store.path), "skipped_first_seq": first, "skipped_last_seq": last, "epoch": epoch},
        )
    st.reserved = reserved
    st.marks.update(clean=0, boot=boot or 0, epoch=int(epoch, 16), synced=int(synchronous != "NORMAL"))

    def mark() -> None:
        store.deleted_in_txn = skipped  # persist the high-water mark that now covers the skip

    try:
        store.transaction(mark, durable=True)
    except sqlite3.Error as exc:
        conn = store.detach()
        if conn is not None:
            conn.close()
        raise SpoolError(f"cannot start a session on spool {store.path}: {exc}") from exc
    sc = res.state
    high = max(st.reserved, st.committed_high)
    if sc.seq_reserved < high or sc.quarantined < st.counters["quarantined"] or sc.epoch != epoch:
        res.write(store, epoch, reserve_to=high)
    return epoch


def mark_clean(store: Store) -> None:
    """The clean-shutdown mark, synced: everything committed before it is on stable storage, so the
    next start may continue the sequence right after the last committed number."""
    store.st.marks["clean"] = 1
    store.transaction(lambda: None, durable=True)


def new_database_meta(store: Store, res: Reservation, start: int, epoch: str, journal_gen: int) -> dict[str, int]:
    """Meta for a new database whose sequence starts after ``start`` (chosen safely by the caller,
    so it is marked clean: the session that begins on it needs no further skip). It adopts the
    journal of generation ``journal_gen``: readings there were never in the lost file."""
    meta = {name: store.st.counters[name] for name in META_COUNTERS}
    meta["journal_gen"] = journal_gen
    meta["reserved"] = max(start, res.state.seq_reserved)
    meta["clean"] = 1
    if epoch:
        meta["epoch"] = int(epoch, 16)
    return meta


def plan_missing_database(store: Store, res: Reservation) -> int:
    """An empty file: a new spool, or the database was deleted or lost next to its sidecar. In the
    second case continue after the reservation so no number the cloud already saw is handed out
    again. Returns the last seq not to use."""
    sc = res.state
    if not sc.seq_reserved:
        return 0
    store.st.counters["seq_skipped"] += sc.seq_reserved - sc.seq_committed
    log.warning(
        "spool database was missing; continuing the sequence after the reserved range",
        extra={
            "path": str(store.path),
            "next_seq": sc.seq_reserved + 1,
            "skipped_first_seq": sc.seq_committed + 1,
            "skipped_last_seq": sc.seq_reserved,
        },
    )
    return sc.seq_reserved


@dataclass(frozen=True)
class QuarantinePlan:
    start: int  # the new database's sequence starts after this
    epoch: str


def plan_quarantine(
    store: Store, res: Reservation, recovered: db.Recovered, *, epoch: str, reason: str, moved: Path
) -> QuarantinePlan:
    """After moving a corrupt file aside: count it, carry its counters, and start after the larger
    of what it still shows and the reservations (a partial recovery may miss the newest commits,
    whose numbers the cloud may hold, so it is never trusted over a reservation)."""
    st = store.st
    c = st.counters
    c["quarantined"] += 1
    known = max(recovered.hwm or 0, res.state.seq_committed, st.committed_high)
    start = max(known, recovered.reserved, res.state.seq_reserved, st.reserved)
    if start > known:
        source = "reservation"
        c["seq_skipped"] += start - known
    else:
        source = "corrupt file" if recovered.hwm is not None else "none (sequence restarts)"
    log.error(
        "spool database is corrupt; moved aside and started a new one",
        extra={
            "path": str(store.path),
            "moved_to": str(moved),
            "reason": reason,
            "quarantined": c["quarantined"],
            "next_seq": start + 1,
            "seq_recovered_from": source,
            "skipped_first_seq": known + 1 if start > known else None,
            "skipped_last_seq": start if start > known else None,
        },
    )
    c["evicted_routine"] = max(c["evicted_routine"], recovered.evicted_routine)
    c["evicted_alarm"] = max(c["evicted_alarm"], recovered.evicted_alarm)
    c["disk_full_events"] = max(c["disk_full_events"], recovered.disk_full_events)
    c["seq_skipped"] = max(c["seq_skipped"], recovered.seq_skipped)
    st.committed_high = start
    epoch = epoch or recovered.epoch or res.state.epoch
    res.write(store, epoch, reserve_to=start + res.reserve)
    return QuarantinePlan(start, epoch)
