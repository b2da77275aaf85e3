"""The journal: group commits are appends to a small file and move into SQLite only at a fold, so
a connected gateway's readings are usually acknowledged before they ever cost an SQLite page."""

from __future__ import annotations

import logging
import os
import shutil

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.spool import Spool, SpoolTuning
from agent.spool import journal as jmod

from .conftest import all_rows, crash, reading, readings

SMALL = SpoolTuning(journal_bytes=2048)


def seqs(rows):
    return [r.seq for r in rows]


def jpath(spool_path):
    return jmod.journal_path(spool_path)


def test_commits_and_acks_touch_only_the_journal(make_spool, spool_path):
    sp = make_spool()
    sp.append(readings(1))
    sp.commit()  # the first commit extends the sequence reservation: one synced SQLite transaction
    wal = spool_path.with_name("spool.db-wal")
    wal_before = wal.stat().st_size
    sp.append([*readings(7, start=1), reading(8, alarm=True)])
    assert sp.commit() == 8
    st = sp.stats()
    assert (st.readings, st.alarm_readings, st.committed_seq) == (9, 1, 9)
    assert st.journal_readings == st.readings  # nothing in SQLite
    assert seqs(all_rows(sp)) == list(range(1, 10))
    assert [r.alarm for r in all_rows(sp)][-1] is True
    assert sp.ack(1, 5) == 5
    assert seqs(all_rows(sp)) == [6, 7, 8, 9]
    assert wal.stat().st_size == wal_before  # not one SQLite frame
    assert jpath(spool_path).stat().st_mode & 0o777 == 0o600


def test_a_crash_replays_the_journal_without_resurrecting_acked_readings(make_spool, spool_path):
    sp = make_spool()
    sp.append(readings(20))
    sp.commit()
    sp.ack(1, 12)
    crash(sp)
    again = make_spool()
    assert seqs(all_rows(again)) == list(range(13, 21))
    got = all_rows(again)[0]
    want = reading(12)
    assert (got.ts_ms, got.clock_synced, got.value, got.sensor_id) == (want.ts_ms, want.clock_synced, want.value, "s1")
    assert again.stats().next_seq == 21


def test_a_torn_record_at_the_end_is_dropped_and_the_journal_goes_on(make_spool, spool_path, caplog):
    sp = make_spool()
    sp.append(readings(5))
    sp.commit()
    crash(sp)
    with open(jpath(spool_path), "ab") as f:
        f.write(b"\x30\x00\xde\xad\xbe\xefpartial")  # a record cut by a power loss
    caplog.set_level(logging.WARNING, logger="agent.spool")
    again = make_spool()
    assert any("torn" in r.getMessage() for r in caplog.records)
    assert seqs(all_rows(again)) == [1, 2, 3, 4, 5]
    again.append(readings(2, start=5))
    again.commit()
    crash(again)
    assert seqs(all_rows(make_spool())) == list(range(1, 8))  # nothing hides behind the torn bytes


def test_fold_moves_unacked_readings_into_sqlite_and_starts_a_new_generation(make_spool, spool_path):
    sp = make_spool(tuning=SMALL)
    for k in range(10):
        sp.append(readings(40, start=k * 40))
        sp.commit()
        sp.ack(k * 40 + 1, k * 40 + 30)  # most of each commit is acknowledged while in the journal
    st = sp.stats()
    assert st.journal_generation > 0
    assert 0 < st.readings - st.journal_readings < st.readings + 1
    kept = [k * 40 + i for k in range(10) for i in range(31, 41)]
    assert seqs(all_rows(sp)) == kept
    assert os.path.getsize(jpath(spool_path)) < SMALL.journal_bytes + 1024
    sp.close()
    assert seqs(all_rows(make_spool(tuning=SMALL))) == kept


def test_an_ack_takes_only_the_readings_committed_before_it(make_spool):
    """The uplink may acknowledge a range that reaches past what was committed; numbers committed
    after that ack are new readings and must come back after a crash."""
    sp = make_spool()
    sp.append(readings(3))
    sp.commit()
    sp.append(readings(3, start=3))  # seqs 4..6, pending
    assert sp.ack(1, 6) == 3
    sp.commit()
    crash(sp)
    assert seqs(all_rows(make_spool())) == [4, 5, 6]


def test_a_stale_journal_after_a_durable_fold_is_ignored(make_spool, spool_path):
    """A power cut after the fold's transaction but before the journal was started over: the old
    journal must not add its readings a second time."""
    sp = make_spool()
    sp.append(readings(30))
    sp.commit()
    saved = spool_path.with_name("journal.before-fold")
    shutil.copy(jpath(spool_path), saved)
    assert sp.fold()
    crash(sp)
    shutil.copy(saved, jpath(spool_path))
    assert seqs(all_rows(make_spool())) == list(range(1, 31))


def test_quarantine_of_the_database_keeps_the_journal_readings(make_spool, spool_path):
    sp = make_spool()
    sp.append(readings(10))
    sp.commit()
    crash(sp)
    spool_path.write_bytes(b"garbage!" * 600)
    again = make_spool()
    st = again.stats()
    assert st.quarantined == 1
    assert seqs(all_rows(again)) == list(range(1, 11))
    [new] = again.append(readings(1, start=10))
    assert new.seq > 10
    again.commit()
    again.close()
    assert seqs(all_rows(make_spool()))[-1] == new.seq


def test_peek_counts_what_only_the_journal_holds(make_spool, spool_path):
    sp = make_spool()
    sp.append([*readings(6), reading(6, alarm=True)])
    sp.commit()
    crash(sp)
    peek = Spool.peek(spool_path)
    assert (peek.readings, peek.alarm_readings, peek.clean_shutdown) == (7, 1, False)


def test_a_failing_journal_write_commits_into_sqlite_instead(make_spool, spool_path, caplog):
    sp = make_spool()
    j = sp._journal
    os.close(j.fd)
    j.fd = os.open(jpath(spool_path), os.O_RDONLY)  # every write now fails (EBADF)
    caplog.set_level(logging.ERROR, logger="agent.spool")
    sp.append(readings(5))
    assert sp.commit() == 5
    st = sp.stats()
    assert st.readings - st.journal_readings == 5
    assert any("journal write failed" in r.getMessage() for r in caplog.records)
    assert seqs(all_rows(sp)) == [1, 2, 3, 4, 5]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 3))
def test_journal_parser_never_raises_on_arbitrary_bytes(raw, gen):
    header = jmod._HEADER.pack(jmod.MAGIC, gen)
    for data in (raw, header + raw):
        replay = jmod.parse(data, gen)
        if replay is not None:
            assert replay.end <= len(data)
            assert all(isinstance(r.seq, int) for r in replay.readings)


def test_records_round_trip_exactly():
    batch = [reading(i, alarm=i % 3 == 0, flags=("stale",) if i % 2 else ()).numbered(100 + i * 2 + i % 2)
             for i in range(50)]  # increasing seqs with gaps (evicted or shed numbers)
    series: dict = {}
    records = []
    for r in batch:
        key = (r.sensor_id, r.quantity, r.unit, r.flags)
        if key not in series:
            series[key] = len(series) + 1
            records.append(jmod.series_record(series[key], key))
    records += jmod.readings_records(batch, series)
    records.append(jmod.ack_record(100, 101))
    replay = jmod.parse(jmod._HEADER.pack(jmod.MAGIC, 7) + b"".join(records), 7)
    assert replay is not None and replay.torn_at is None
    assert replay.readings == [r for r in batch if r.seq > 101]  # the ack took the readings before it
    assert replay.acks == [(100, 101)]
    assert replay.high == batch[-1].seq
