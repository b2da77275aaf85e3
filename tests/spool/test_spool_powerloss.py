"""Power loss at >= 100 random points: after each cut the spool's files are put back to what was on
stable storage (each file's content at its last sync before the cut), the device "reboots" (a new
boot id) and carries on. Two promises are checked against a model of the cloud that de-duplicates
on (device, epoch, seq), as docs/payload.md tells it to:

* no (epoch, seq) ever names two different readings;
* no reading the broker acknowledged is lost from the cloud's view (de-duplication never dropped it
  as a copy of a different reading).

How the sync points are observed: a recording SQLite VFS (tests/spool/syncvfs.py) wraps the default
one inside the very libsqlite3 the sqlite3 module uses and snapshots a file each time SQLite syncs
it; ``os.fsync`` is wrapped the same way for the sidecar (written by ``write_atomic``: temp file,
fsync, rename, fsync of the directory). Writes after a file's last sync are lost in full: the most
pessimistic drive, but one that honours flushes (a drive that lies about flushes is out of scope,
see docs/spool.md).
"""

from __future__ import annotations

import os
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.spool import Spool, SpoolTuning

from .conftest import reading
from .syncvfs import SyncRecorder

CUTS = 110  # power cuts per synchronous level (the issue asks for >= 100)
Content = tuple[object, ...]
Sent = tuple[str, list[tuple[int, Content]]]  # (epoch, [(seq, reading)])
Acked = tuple[str, int, Content]


@dataclass
class Cloud:
    """What downstream keeps: first copy of each (epoch, seq) wins, later copies are dropped."""

    store: dict[tuple[str, int], Content] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)

    def receive(self, epoch: str, batch: list[tuple[int, Content]]) -> None:
        for seq, content in batch:
            key = (epoch, seq)
            kept = self.store.setdefault(key, content)
            if kept != content:
                self.conflicts.append(f"{key} names {kept} and {content}")


def content(r: object) -> Content:
    return (r.ts_ms, r.sensor_id, r.value, r.alarm)  # type: ignore[attr-defined]


class Device:
    """One boot of the device: a spool and a naive uplink (read after a cursor, send, maybe ack)."""

    def __init__(self, path: Path, synchronous: str, rng: random.Random, counter: list[int]) -> None:
        boot = str(uuid.UUID(int=rng.getrandbits(128)))
        self.spool = Spool(
            path,
            max_bytes=64 << 20,
            min_free_disk_bytes=0,
            commit_interval_s=1.0,
            synchronous=synchronous,
            tuning=SpoolTuning(seq_reserve=300, wal_autocheckpoint_pages=40),
            boot_id=lambda: boot,
        )
        self.spool.open()
        self.rng = rng
        self.counter = counter
        self.cursor = 0

    def step(self, sends: list[Sent], acked: list[Acked]) -> None:
        sp, rng = self.spool, self.rng
        op = rng.random()
        if op < 0.45:
            items = []
            for _ in range(rng.randint(1, 12)):
                self.counter[0] += 1
                items.append(reading(self.counter[0], alarm=rng.random() < 0.1))
            sp.append(items)
        elif op < 0.7:
            sp.commit()
        else:
            batch = sp.read_after(self.cursor, rng.randint(1, 40))
            if not batch:
                return
            sent = [(r.seq, content(r)) for r in batch]
            sends.append((sp.epoch, sent))  # the broker has it: the cloud stores it even if the ack is lost
            if rng.random() < 0.85:
                sp.ack(batch[0].seq, batch[-1].seq)
                acked.extend((sp.epoch, s, c) for s, c in sent)
                self.cursor = batch[-1].seq
            elif rng.random() < 0.5:
                self.cursor = 0  # the uplink rewinds and will send these again


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_power_cut_at_random_points_never_reuses_a_sequence_number(tmp_path, synchronous):
    rng = random.Random(f"powerloss-{synchronous}")
    path = tmp_path / "state" / "spool.db"
    cloud = Cloud()
    acked: list[Acked] = []
    counter = [0]
    cuts = skipped = 0
    with SyncRecorder(path.parent) as rec:
        while cuts < CUTS:
            rec.begin_segment()
            dev = Device(path, synchronous, rng, counter)
            sends: list[tuple[int, Sent]] = []
            acks: list[tuple[int, list[Acked]]] = []
            n_steps = rng.randint(5, 50)
            for _ in range(n_steps):
                rec.next_step()
                s: list[Sent] = []
                a: list[Acked] = []
                dev.step(s, a)
                sends += [(rec.step, x) for x in s]
                acks += [(rec.step, x) for x in a]  # type: ignore[misc]
            ending = rng.random()
            if ending < 0.1:  # clean stop: everything happened
                dev.spool.close()
                cut = rec.step + 1
            else:  # power cut before a random step: that step and all later ones never happened
                cut = rng.randint(1, rec.step + 1)
                rec.cut(cut, lambda: dev.spool._conn.close() if dev.spool._conn else None)
                cuts += 1
            skipped = max(skipped, dev.spool.stats().seq_skipped)
            for step, (epoch, batch) in sends:
                if step < cut:
                    cloud.receive(epoch, batch)
            acked += [x for step, x in acks if step < cut]  # type: ignore[misc]
            assert not cloud.conflicts, f"cut {cuts}: {cloud.conflicts[:3]}"
        final = Device(path, synchronous, rng, counter)
        everything = final.spool.read_after(0, 10**9)
        cloud.receive(final.spool.epoch, [(r.seq, content(r)) for r in everything])
        final.spool.close()
    assert not cloud.conflicts, cloud.conflicts[:3]
    lost = [(e, s) for e, s, c in acked if cloud.store.get((e, s)) != c]
    assert not lost, f"acknowledged readings lost from the cloud's view: {lost[:5]}"
    assert len(acked) > 1000
    if synchronous == "NORMAL":
        assert skipped > 0  # the harness did reach unclean restarts that had to skip
    else:
        assert skipped == 0  # every commit was synced: the sequence stays gapless across power cuts
    assert os.listdir(path.parent)
