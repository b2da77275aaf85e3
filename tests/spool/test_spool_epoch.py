"""The spool names its sequence space (the epoch). It stays as long as the sequence continues and is
new only when the sequence had to restart, so downstream de-duplication on (device, epoch, seq)
never drops new readings as old ones."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from agent.spool.sidecar import sidecar_path
from tests.spool.conftest import crash, readings


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


BOOT_A = "0f0e0d0c-0b0a-4908-8706-050403020100"
BOOT_B = "11111111-2222-4333-8444-555555555555"


def reserved_in_sidecar(spool_path):
    return json.loads(sidecar_path(spool_path).read_text())["seq_reserved"]


def test_unclean_start_after_a_reboot_continues_after_the_reservation_and_reports_the_skip(
    make_spool, spool_path, caplog
):
    """Issue 10.3: after a power cut at synchronous=NORMAL, commits the broker already acknowledged
    can have rolled back; continuing at max(seq)+1 reused their numbers in the same epoch."""
    sp = make_spool(boot_id=lambda: BOOT_A)
    fill(sp, 10)
    epoch, reserve = sp.epoch, reserved_in_sidecar(spool_path)
    crash(sp)  # no clean-shutdown mark
    caplog.set_level(logging.WARNING, logger="agent.spool")
    sp2 = make_spool(boot_id=lambda: BOOT_B)
    st = sp2.stats()
    assert sp2.epoch == epoch
    assert st.next_seq == reserve + 1
    assert st.seq_skipped == reserve - 10
    warned = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert warned and warned[0].skipped_first_seq == 11 and warned[0].skipped_last_seq == reserve
    sp2.close()
    assert make_spool(boot_id=lambda: BOOT_B).stats().seq_skipped == reserve - 10  # persisted for status


@pytest.mark.parametrize("how", ["process crash, same boot", "clean stop, new boot", "FULL, new boot"])
def test_restart_that_lost_nothing_continues_gapless(make_spool, how):
    level = "FULL" if how.startswith("FULL") else "NORMAL"
    sp = make_spool(boot_id=lambda: BOOT_A, synchronous=level)
    fill(sp, 10)
    if how.startswith("clean"):
        sp.close()
    else:
        crash(sp)
    boot = BOOT_A if "same boot" in how else BOOT_B
    st = make_spool(boot_id=lambda: boot).stats()
    assert st.next_seq == 11
    assert st.seq_skipped == 0


def test_unknown_boot_is_treated_as_a_new_one(make_spool, spool_path):
    sp = make_spool(boot_id=lambda: None)
    fill(sp, 10)
    reserve = reserved_in_sidecar(spool_path)
    crash(sp)
    assert make_spool(boot_id=lambda: None).stats().next_seq == reserve + 1


def test_sidecar_lost_alone_keeps_the_epoch_and_the_reservation_from_the_database(make_spool, spool_path):
    """Issue 10.3: the epoch lived only in the sidecar, so losing it made a new epoch while the
    sequence continued: resent readings were no longer recognised as duplicates."""
    sp = make_spool(boot_id=lambda: BOOT_A)
    fill(sp, 10)
    epoch, reserve = sp.epoch, reserved_in_sidecar(spool_path)
    sp.close()
    sidecar_path(spool_path).unlink()
    sp2 = make_spool(boot_id=lambda: BOOT_B)
    assert sp2.epoch == epoch
    assert sp2.stats().next_seq == 11  # clean stop: gapless
    crash(sp2)
    sidecar_path(spool_path).unlink()
    sp3 = make_spool(boot_id=lambda: BOOT_A)  # unclean and another boot, sidecar gone again
    assert sp3.epoch == epoch
    assert sp3.stats().next_seq == reserve + 1  # the database's own reservation


def test_reservation_reaches_the_database_in_the_commit_that_passes_it(make_spool, spool_path):
    from agent.spool import SpoolTuning

    sp = make_spool(tuning=SpoolTuning(seq_reserve=100))
    fill(sp, 10)
    fill(sp, 150)  # passes the first reservation (110)
    sp.close()
    conn = sqlite3.connect(spool_path)
    meta = dict(conn.execute("SELECT k, v FROM meta"))
    conn.close()
    assert meta["reserved"] >= 160
    assert meta["reserved"] == reserved_in_sidecar(spool_path)
    assert meta["clean"] == 1
    assert f"{meta['epoch']:08x}" == json.loads(sidecar_path(spool_path).read_text())["epoch"]
