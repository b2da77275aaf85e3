"""Byte budget, free-disk headroom and a full disk: routine readings go first, alarms stay, and
every eviction is counted persistently."""

from __future__ import annotations

import logging

import pytest

from agent.spool import SpoolTuning

from .conftest import FakeStatvfs, all_rows, reading, readings

DIRECT = SpoolTuning(journal_bytes=0)  # every commit is an SQLite transaction (the fold's own path)


@pytest.fixture(params=["journal", "direct"])
def tuning(request):
    """The budget applies the same way whether group commits go through the journal (then at each
    fold) or straight into SQLite."""
    return SpoolTuning() if request.param == "journal" else DIRECT


def settle(sp):
    """Fold the journal (if any) into SQLite, where the budget applies."""
    sp.fold()


def fill(sp, n, *, alarm_every=0, start=0, per_commit=200):
    items = [reading(start + i, alarm=bool(alarm_every) and i % alarm_every == 0) for i in range(n)]
    for k in range(0, n, per_commit):
        sp.append(items[k : k + per_commit])
        sp.commit()
    return items


def test_byte_budget_evicts_oldest_routine_first_and_keeps_alarms(make_spool, caplog, tuning):
    cap = 64 << 10
    sp = make_spool(max_bytes=cap, tuning=tuning)
    caplog.set_level(logging.WARNING, logger="agent.spool")
    fill(sp, 12_000, alarm_every=97)
    settle(sp)
    st = sp.stats()
    assert st.bytes <= cap
    assert st.evicted_routine > 0
    assert st.evicted_alarm == 0
    rows = all_rows(sp)
    assert len(rows) == st.readings
    alarm_seqs = [i + 1 for i in range(12_000) if i % 97 == 0]
    assert [r.seq for r in rows if r.alarm] == alarm_seqs  # every alarm kept
    routine = [r.seq for r in rows if not r.alarm]
    all_routine = [i + 1 for i in range(12_000) if i % 97]
    assert routine == all_routine[-len(routine) :]  # the newest ones survive, oldest evicted
    assert st.evicted_routine == len(all_routine) - len(routine)
    assert st.readings + st.evicted_routine == 12_000
    assert any("evicted the oldest routine" in r.getMessage() for r in caplog.records)
    sp.close()
    again = make_spool(max_bytes=cap, tuning=tuning)
    assert again.stats().evicted_routine == st.evicted_routine  # persisted
    assert again.stats().evicted_alarm == 0


def test_alarms_are_evicted_only_when_nothing_else_is_left_and_that_is_an_error(make_spool, caplog, tuning):
    cap = 64 << 10
    sp = make_spool(max_bytes=cap, tuning=tuning)
    caplog.set_level(logging.WARNING, logger="agent.spool")
    fill(sp, 500)
    fill(sp, 8_000, alarm_every=1, start=500)
    settle(sp)
    st = sp.stats()
    assert st.evicted_routine == 500
    assert st.evicted_alarm > 0
    assert st.readings + st.evicted_routine + st.evicted_alarm == 8_500
    assert st.bytes <= cap
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("ALARM" in r.getMessage() for r in errors)
    seqs = [r.seq for r in all_rows(sp)]
    assert seqs == list(range(8_501 - len(seqs), 8_501))  # oldest alarms went first
    sp.close()
    assert make_spool(max_bytes=cap, tuning=tuning).stats().evicted_alarm == st.evicted_alarm


def test_smaller_budget_applies_at_once(make_spool, tuning):
    sp = make_spool(max_bytes=4 << 20, tuning=tuning)
    fill(sp, 10_000)
    assert sp.stats().evicted_routine == 0
    sp.reconfigure(max_bytes=64 << 10, min_free_disk_bytes=0, commit_interval_s=1.0)
    st = sp.stats()
    assert st.bytes <= 64 << 10
    assert st.evicted_routine == 10_000 - st.readings > 0


def test_free_disk_headroom_stops_growth_and_evicts(make_spool):
    disk = FakeStatvfs(free=10 << 30)
    sp = make_spool(max_bytes=64 << 20, min_free_disk_bytes=100 << 20, statvfs=disk, tuning=DIRECT)
    fill(sp, 5_000)
    assert sp.stats().evicted_routine == 0
    size_when_full = sp.stats().file_bytes
    disk.free = 50 << 20  # someone else filled the card: below the headroom
    fill(sp, 5_000, start=5_000)
    st = sp.stats()
    assert disk.calls > 0
    assert st.file_bytes <= size_when_full  # the spool lives inside its current file
    assert st.evicted_routine > 0
    assert st.readings + st.evicted_routine == 10_000
    seqs = [r.seq for r in all_rows(sp)]
    assert seqs == list(range(10_001 - len(seqs), 10_001))
    disk.free = 10 << 30  # space is back: nothing more is evicted
    before = st.evicted_routine
    fill(sp, 2_000, start=10_000)
    assert sp.stats().evicted_routine == before
    assert sp.stats().file_bytes > size_when_full


def test_sqlite_full_is_handled_by_evicting_and_retrying(make_spool, caplog):
    """A real SQLITE_FULL from SQLite: the page limit is pinned to the current file size, as when the
    file system is out of space."""
    sp = make_spool(tuning=DIRECT)
    fill(sp, 3_000)
    conn = sp._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")
    caplog.set_level(logging.ERROR, logger="agent.spool")
    sp.append(readings(1_000, start=3_000))
    assert sp.commit() == 1_000
    st = sp.stats()
    assert st.disk_full_events >= 1
    assert st.evicted_routine > 0
    assert st.readings + st.evicted_routine == 4_000
    assert any("full disk" in r.getMessage() for r in caplog.records)
    assert [r.seq for r in all_rows(sp)][-1] == 4_000


def test_nothing_left_to_evict_keeps_readings_in_ram(make_spool):
    """A disk so full that even eviction cannot help: the commit fails softly and keeps the readings."""
    sp = make_spool(tuning=DIRECT)
    fill(sp, 10)
    sp.ack(1, 10)
    conn = sp._conn
    conn.execute("PRAGMA max_page_count=1")  # below the current size: every write is SQLITE_FULL
    sp.append(readings(500))
    assert sp.commit() == 0
    st = sp.stats()
    assert st.pending_uncommitted == 500
    assert st.commit_failures == 1
    conn.execute("PRAGMA max_page_count=1000000")  # space comes back
    assert sp.commit() == 500
    assert [r.seq for r in all_rows(sp)] == list(range(11, 511))


def test_incoming_routine_readings_never_push_out_stored_alarms(make_spool, tuning):
    """Issue 10.4: a spool full of alarms only; a batch of routine readings used to make room by
    evicting one alarm per incoming reading. Rule: alarms go only when no routine reading is left,
    so the routine readings are the ones evicted (counted, seqs kept as a logged gap)."""
    cap = 64 << 10
    sp = make_spool(max_bytes=cap, tuning=tuning)
    fill(sp, 8_000, alarm_every=1)  # only alarms; the budget is full
    settle(sp)
    full = sp.stats()
    assert full.readings == full.alarm_readings
    assert full.evicted_alarm > 0  # alarms had to go while nothing else was left
    alarms_before = [r.seq for r in all_rows(sp)]
    sp.append(readings(200, start=8_000))
    assert sp.commit() == 200
    settle(sp)
    st = sp.stats()
    assert st.evicted_alarm == full.evicted_alarm  # not one more alarm evicted
    assert [r.seq for r in all_rows(sp) if r.alarm] == alarms_before
    assert st.evicted_routine + (st.readings - st.alarm_readings) == 200
    assert st.evicted_routine > 0
    assert st.bytes <= cap
    assert st.committed_seq == 8_200  # the dropped seqs are a counted gap, never handed out again
    sp.close()
    again = make_spool(max_bytes=cap, tuning=tuning)
    assert again.stats().next_seq == 8_201
    assert again.stats().evicted_routine == st.evicted_routine


def test_mixed_batch_on_a_full_alarm_spool_evicts_alarms_only_once_no_routine_is_left(make_spool, tuning):
    cap = 64 << 10
    sp = make_spool(max_bytes=cap, tuning=tuning)
    fill(sp, 8_000, alarm_every=1)
    settle(sp)
    before = sp.stats().evicted_alarm
    sp.append([reading(8_000 + i, alarm=i % 2 == 0) for i in range(40)])  # 20 alarms, 20 routine
    assert sp.commit() == 40
    settle(sp)
    st = sp.stats()
    assert not (st.evicted_alarm > before and st.readings > st.alarm_readings)
    assert {8_001 + i for i in range(0, 40, 2)} <= {r.seq for r in all_rows(sp)}  # the new alarms stay
    assert st.bytes <= cap


def test_ram_shedding_drops_routine_before_alarms_wherever_they_are_in_the_buffer(make_spool):
    """Issue 10.4: with commits failing and the RAM bound reached, the oldest pending readings were
    all alarms, so alarms were dropped while newer routine readings stayed in RAM."""
    sp = make_spool(tuning=SpoolTuning(max_pending=300, journal_bytes=0))
    fill(sp, 10)
    sp.ack(1, 10)
    sp._conn.execute("PRAGMA max_page_count=1")  # pinned to the file's size: nothing more fits
    sp.append([reading(10 + i, alarm=True) for i in range(200)])  # seqs 11..210
    sp.append(readings(150, start=210))  # seqs 211..360; 350 pending > 300: fifty must go
    st = sp.stats()
    assert st.readings == 0 and st.commit_failures > 0
    assert st.pending_uncommitted == 300
    assert st.evicted_alarm == 0
    assert st.evicted_routine == 50
    assert [r.seq for r in sp.pending if r.alarm] == list(range(11, 211))
    assert [r.seq for r in sp.pending if not r.alarm] == list(range(261, 361))  # the oldest routine went
    sp.append([reading(400 + i, alarm=True) for i in range(300)])  # seqs 361..660
    st = sp.stats()
    assert st.pending_uncommitted == 300
    assert st.evicted_routine == 50 + 100  # every routine reading went before any alarm
    assert st.evicted_alarm == 200  # then the oldest alarms
    assert [r.seq for r in sp.pending] == list(range(361, 661))
