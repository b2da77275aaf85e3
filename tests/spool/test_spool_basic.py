"""Sequence numbers, commit, read, ack and argument checking."""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from agent.spool import Reading, Spool, SpoolError

from .conftest import TS0, FakeClock, all_rows, crash, reading, readings


def seqs(rows):
    return [r.seq for r in rows]


def test_seqs_are_gapless_and_continue_after_reopen(make_spool, spool_path):
    sp = make_spool()
    got = sp.append(readings(5))
    assert seqs(got) == [1, 2, 3, 4, 5]
    assert sp.commit() == 5
    assert seqs(sp.append(readings(3))) == [6, 7, 8]
    sp.close()
    sp2 = make_spool()
    assert seqs(all_rows(sp2)) == list(range(1, 9))  # close committed the pending three
    assert seqs(sp2.append(readings(2))) == [9, 10]


def test_uncommitted_readings_are_lost_on_crash_and_their_seqs_reused(make_spool):
    sp = make_spool()
    sp.append(readings(4))
    sp.commit()
    sp.append(readings(3))  # seqs 5..7 never committed
    crash(sp)
    sp2 = make_spool()
    assert seqs(all_rows(sp2)) == [1, 2, 3, 4]
    assert sp2.stats().next_seq == 5
    assert seqs(sp2.append(readings(2))) == [5, 6]  # no gap in the committed history
    sp2.commit()
    assert seqs(all_rows(sp2)) == [1, 2, 3, 4, 5, 6]


def test_high_water_mark_survives_everything_acked(make_spool):
    sp = make_spool()
    sp.append(readings(10))
    sp.commit()
    assert sp.ack(1, 10) == 10
    assert sp.stats().readings == 0
    sp.close()
    sp2 = make_spool()
    assert sp2.stats().readings == 0
    assert sp2.stats().committed_seq == 10
    assert seqs(sp2.append(readings(1))) == [11]


def test_hwm_survives_eviction_of_everything(make_spool, spool_path):
    sp = make_spool(max_bytes=64 << 10)
    sp.append(readings(3000))
    sp.commit()
    high = sp.stats().committed_seq
    sp.reconfigure(max_bytes=1, min_free_disk_bytes=0, commit_interval_s=1.0)
    assert sp.stats().readings == 0
    sp.close()
    assert make_spool().stats().next_seq == high + 1


def test_ack_deletes_only_the_range(make_spool):
    sp = make_spool()
    sp.append(readings(20))
    sp.commit()
    assert sp.ack(5, 9) == 5
    assert seqs(all_rows(sp)) == [1, 2, 3, 4, *range(10, 21)]
    assert sp.ack(5, 9) == 0
    assert sp.ack(100, 200) == 0
    assert sp.stats().readings == 15
    assert sp.stats().oldest_seq == 1
    assert sp.ack(1, 4) == 4
    assert sp.stats().oldest_seq == 10
    assert sp.stats().oldest_ts_ms == TS0 + 9 * 1000


def test_pending_readings_are_invisible_until_committed(make_spool):
    sp = make_spool()
    sp.append(readings(3))
    assert all_rows(sp) == []
    assert sp.stats().pending_uncommitted == 3
    assert sp.stats().readings == 0
    sp.commit()
    assert sp.stats().pending_uncommitted == 0
    assert len(all_rows(sp)) == 3
    assert sp.commit() == 0


def test_commit_due_follows_the_oldest_pending_reading(make_spool):
    clock = FakeClock()
    sp = make_spool(clock=clock, commit_interval_s=2.0)
    assert not sp.commit_due(clock.t + 100)
    sp.append(readings(1))
    clock.t += 1.5
    sp.append(readings(1))  # a later append does not restart the interval
    assert not sp.commit_due(1001.9)
    assert sp.commit_due(1002.0)
    sp.commit()
    assert sp.stats().last_commit_monotonic == clock.t
    assert not sp.commit_due(clock.t + 100)
    sp.reconfigure(max_bytes=64 << 20, min_free_disk_bytes=0, commit_interval_s=0.5)
    sp.append(readings(1))
    assert sp.commit_due(clock.t + 0.5)


def test_round_trip_of_every_field_and_merge_of_alarms(make_spool):
    sp = make_spool()
    items = [
        Reading.new(TS0, True, "s1", "ch4_ppm", 12.25, "ppm", ("warming_up",), False),
        Reading.new(TS0 + 1, False, "s1", "ch4_ppm", 5000.0, "ppm", (), True),
        Reading.new(-5, True, "s2", "temp", math.nan, "", ("stale", "sensor_fault"), False),
        Reading.new(2**62, False, "s2 é", "t\x00x", -math.inf, "degC", (), True),
        Reading.new(TS0 + 4, True, "s1", "ch4_ppm", 7, "ppm"),
    ]
    out = sp.append(items)
    sp.commit()
    back = all_rows(sp)
    assert seqs(back) == [1, 2, 3, 4, 5]
    for given, stored, returned in zip(items, out, back, strict=True):
        assert returned.seq == stored.seq
        for field in ("ts_ms", "clock_synced", "sensor_id", "quantity", "unit", "flags", "alarm"):
            assert getattr(returned, field) == getattr(given, field), field
        if math.isnan(given.value):
            assert math.isnan(returned.value)
        else:
            assert returned.value == given.value
        assert isinstance(returned.value, float)
    assert sp.stats().alarm_readings == 2
    assert seqs(sp.read_after(1, 2)) == [2, 3]
    assert seqs(sp.read_after(3, 100)) == [4, 5]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"ts_ms": 1.5}, "#1: ts_ms must be an int"),
        ({"ts_ms": 2**70}, "#1: ts_ms"),
        ({"clock_synced": 1}, "#1: clock_synced"),
        ({"sensor_id": ""}, "#1: sensor_id must not be empty"),
        ({"quantity": 3}, "#1: quantity must be a str"),
        ({"value": "12"}, "#1: value must be a number"),
        ({"value": True}, "#1: value must be a number"),
        ({"value": 10**400}, "#1: value"),
        ({"flags": "stale"}, "#1: flags must be a tuple"),
        ({"flags": ("ok", 3)}, "#1: flag must be a str"),
        ({"unit": "\ud800"}, "#1: unit is not valid UTF-8"),
        ({"alarm": None}, "#1: alarm must be a bool"),
    ],
)
def test_bad_input_names_the_problem_and_changes_nothing(make_spool, bad, message):
    sp = make_spool()
    sp.append(readings(2))
    before = sp.stats()
    with pytest.raises((TypeError, ValueError), match=message.replace("(", r"\(")):
        sp.append([reading(8), dataclasses.replace(reading(9), **bad)])
    assert sp.stats() == before
    sp.commit()
    assert seqs(all_rows(sp)) == [1, 2]


def test_a_numbered_reading_is_refused_so_nothing_is_appended_twice(make_spool):
    sp = make_spool()
    [numbered] = sp.append(readings(1))
    with pytest.raises(ValueError, match="#0: already has sequence number 1"):
        sp.append([numbered])
    assert sp.stats().next_seq == 2


def test_bad_arguments(make_spool, spool_path):
    sp = make_spool()
    for args in [(0, 1), (-1, 5), (5, 4), (True, 2), (1, 2**64)]:
        with pytest.raises(ValueError):
            sp.ack(*args)
    with pytest.raises(ValueError, match="limit"):
        sp.read_after(0, 0)
    with pytest.raises(ValueError, match="after_seq"):
        sp.read_after(-1, 10)
    with pytest.raises(ValueError, match="synchronous"):
        Spool(spool_path, max_bytes=1 << 20, min_free_disk_bytes=0, commit_interval_s=1, synchronous="OFF")
    with pytest.raises(ValueError, match="commit_interval_s"):
        sp.reconfigure(max_bytes=1 << 20, min_free_disk_bytes=0, commit_interval_s=0)
    with pytest.raises(ValueError, match="max_bytes"):
        sp.reconfigure(max_bytes=0, min_free_disk_bytes=0, commit_interval_s=1)
    with pytest.raises(TypeError, match="min_free_disk_bytes"):
        sp.reconfigure(max_bytes=1 << 20, min_free_disk_bytes=1.5, commit_interval_s=1)
    unopened = Spool(spool_path, max_bytes=1 << 20, min_free_disk_bytes=0, commit_interval_s=1)
    with pytest.raises(RuntimeError, match="not open"):
        unopened.append(readings(1))


def test_files_are_private_from_the_first_byte(make_spool, spool_path):
    sp = make_spool()
    sp.append(readings(3))
    sp.commit()
    for p in spool_path.parent.iterdir():
        assert stat.S_IMODE(os.stat(p).st_mode) & 0o077 == 0, p


def test_second_process_on_the_same_spool_fails_clearly(make_spool, spool_path):
    sp = make_spool()
    sp.append(readings(3))
    sp.commit()
    code = textwrap.dedent(
        f"""
        import sys
        from agent.spool import Spool, SpoolError
        sp = Spool({str(spool_path)!r}, max_bytes=1 << 20, min_free_disk_bytes=0, commit_interval_s=1)
        try:
            sp.open()
        except SpoolError as exc:
            print(exc)
            sys.exit(3)
        sys.exit(0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "locked by another process" in proc.stdout
    assert sp.stats().quarantined == 0
    assert len(all_rows(sp)) == 3


def test_open_is_idempotent_and_close_commits(make_spool, spool_path):
    sp = make_spool()
    sp.open()
    sp.append(readings(2))
    sp.close()
    sp.close()
    sp.open()  # reopen the same object
    assert seqs(all_rows(sp)) == [1, 2]
    assert sp.stats().next_seq == 3


def test_unwritable_location_raises_spool_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    sp = Spool(blocker / "spool.db", max_bytes=1 << 20, min_free_disk_bytes=0, commit_interval_s=1)
    with pytest.raises(SpoolError, match="cannot create spool file"):
        sp.open()


def test_read_after_pages_a_large_backlog_in_order(make_spool):
    sp = make_spool()
    for chunk in range(20):
        sp.append(readings(500, start=chunk * 500, alarm=chunk % 7 == 3))
        sp.commit()
    cursor, seen = 0, []
    while batch := sp.read_after(cursor, 333):
        seen.extend(seqs(batch))
        cursor = batch[-1].seq
    assert seen == list(range(1, 10_001))
