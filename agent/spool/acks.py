"""Acknowledgements: a range leaves the spool only after the broker's PUBACK for the batch carrying
it. When the delete cannot be written at that moment (disk full, I/O error) the range is remembered,
hidden from reads and retried with the next commit."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable

from agent.spool import db
from agent.spool.store import Store

log = logging.getLogger("agent.spool")

MAX_PENDING_ACK_RANGES = 1024


class AckRanges:
    """Acknowledged ranges not yet deleted from the file."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []

    def add(self, first: int, last: int) -> None:
        self.ranges.append((first, last))

    def clear(self) -> None:
        self.ranges.clear()

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def merged(self) -> list[tuple[int, int]]:
        merged: list[tuple[int, int]] = []
        for first, last in sorted(self.ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        # Bounded: forgetting an old un-applied ack only means those rows are sent again (the cloud
        # drops duplicates by sequence number), never that a reading is lost.
        self.ranges = merged[-MAX_PENDING_ACK_RANGES:]
        return list(self.ranges)

    def hides(self, seq: int) -> bool:
        return any(first <= seq <= last for first, last in self.ranges)


def apply_acks(store: Store, acks: AckRanges, on_corrupt: Callable[[str], None]) -> int:
    """Delete every pending range in one transaction; returns rows deleted (0 when it must be
    retried later: the ranges stay pending)."""
    ranges = acks.merged()
    deleted = 0

    def delete() -> None:
        nonlocal deleted
        for first, last in ranges:
            for table in db.READING_TABLES:
                deleted += store.delete_range(table, first, last)
        if deleted:
            store.refresh_sizes()
            store.refresh_oldest()

    for _ in range(2):
        try:
            store.transaction(delete)
        except sqlite3.Error as exc:
            deleted = 0
            if db.is_corruption(exc):
                on_corrupt(str(exc))
                return 0
            if db.is_disk_full(exc):
                store.st.counters["disk_full_events"] += 1
                store.truncate_wal()
                continue
            log.error("spool ack failed; will retry", extra={"error": str(exc), "ranges": len(ranges)})
            return 0
        acks.clear()
        return deleted
    log.error("spool ack failed on a full disk; will retry", extra={"ranges": len(ranges)})
    return 0
