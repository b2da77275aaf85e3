"""The spool names its sequence space (the epoch). It stays as long as the sequence continues and is
new only when the sequence had to restart, so downstream de-duplication on (device, epoch, seq)
never drops new readings as old ones."""

from __future__ import annotations

import json

from agent.spool_sidecar import sidecar_path
from tests.spool.conftest import readings


def fill(sp, n=3):
    sp.append(readings(n))
    sp.commit()


def test_epoch_is_stable_across_reopen(make_spool, spool_path):
    sp = make_spool()
    fill(sp)
    epoch = sp.epoch
    assert len(epoch) == 8 and int(epoch, 16) >= 0
    sp.close()
    sp2 = make_spool()
    assert sp2.epoch == epoch
    assert json.loads(sidecar_path(spool_path).read_text())["epoch"] == epoch


def test_database_lost_but_sidecar_kept_continues_sequence_and_epoch(make_spool, spool_path):
    sp = make_spool()
    fill(sp, 5)
    epoch = sp.epoch
    sp.close()
    for suffix in ("", "-wal", "-shm"):
        p = spool_path.with_name(spool_path.name + suffix)
        if p.exists():
            p.unlink()
    sp2 = make_spool()
    assert sp2.epoch == epoch
    assert sp2.stats().next_seq > 5


def test_everything_lost_restarts_the_sequence_under_a_new_epoch(make_spool, spool_path):
    sp = make_spool()
    fill(sp, 5)
    epoch = sp.epoch
    sp.close()
    for p in spool_path.parent.iterdir():
        p.unlink()
    sp2 = make_spool()
    fill(sp2, 1)
    assert sp2.stats().next_seq == 2  # the sequence restarted...
    assert sp2.epoch != epoch  # ...so its name changed


def test_damaged_epoch_in_sidecar_is_refused_not_trusted(make_spool, spool_path):
    sp = make_spool()
    fill(sp)
    sp.close()
    side = sidecar_path(spool_path)
    doc = json.loads(side.read_text())
    doc["epoch"] = "../../etc"
    side.write_text(json.dumps(doc))
    sp2 = make_spool()  # opens anyway: the damaged sidecar is ignored and rewritten
    assert sp2.epoch != "../../etc" and len(sp2.epoch) == 8
    assert sp2.stats().next_seq == 4  # the database still knows where the sequence was
