"""A corrupt spool is moved aside with its -wal/-shm, counted, and replaced; the sequence goes on."""

from __future__ import annotations

import json
import logging
import os
import sqlite3

import pytest

from agent.spool import SpoolTuning

from .conftest import all_rows, crash, readings


def quarantined_files(spool_path):
    return sorted(p.name for p in spool_path.parent.iterdir() if ".corrupt-" in p.name)


def committed_spool(make_spool, n=100):
    sp = make_spool()
    sp.append(readings(n))
    sp.commit()
    sp.close()
    return n


def assert_works(sp, first_seq):
    got = sp.append(readings(3))
    assert [r.seq for r in got] == [first_seq, first_seq + 1, first_seq + 2]
    assert sp.commit() == 3
    assert [r.seq for r in all_rows(sp)] == [first_seq, first_seq + 1, first_seq + 2]


def test_garbage_file_is_quarantined_and_a_new_spool_works(make_spool, spool_path, caplog):
    spool_path.parent.mkdir(parents=True)
    garbage = os.urandom(5000)
    spool_path.write_bytes(garbage)
    caplog.set_level(logging.ERROR, logger="agent.spool")
    sp = make_spool()
    assert sp.stats().quarantined == 1
    [moved] = quarantined_files(spool_path)
    assert (spool_path.parent / moved).read_bytes() == garbage  # evidence kept untouched
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert_works(sp, 1)


def test_garbage_after_use_continues_the_sequence_from_the_sidecar(make_spool, spool_path):
    high = committed_spool(make_spool)
    spool_path.write_bytes(b"\x00garbage" * 700)
    sp = make_spool()
    st = sp.stats()
    assert st.quarantined == 1
    # Nothing is readable in the file: the sidecar's reservation guarantees no reuse (a bounded gap).
    assert high < st.next_seq <= high + 1 + SpoolTuning().seq_reserve
    assert_works(sp, st.next_seq)


def test_truncated_file_is_quarantined_and_seq_does_not_go_back(make_spool, spool_path):
    high = committed_spool(make_spool, 5_000)
    size = spool_path.stat().st_size
    with open(spool_path, "r+b") as f:
        f.truncate(size // 2)
    sp = make_spool()
    st = sp.stats()
    assert st.quarantined == 1
    assert st.next_seq > high
    assert_works(sp, st.next_seq)


def test_malformed_page_is_caught_by_quick_check(make_spool, spool_path):
    high = committed_spool(make_spool, 5_000)
    with open(spool_path, "r+b") as f:
        f.seek(512 * 20)  # a leaf of the readings table
        f.write(b"\xff" * 64)
    sp = make_spool()
    st = sp.stats()
    assert st.quarantined == 1
    assert st.next_seq > high
    assert_works(sp, st.next_seq)


def reserved(spool_path):
    return json.loads(spool_path.with_name("spool.db.state.json").read_text())["seq_reserved"]


def test_wrong_schema_is_quarantined_untouched_and_the_reservation_wins(make_spool, spool_path):
    """Issue 10.3: a partial recovery of a corrupt file is never trusted over the reservation (its
    newest commits may be the ones lost), so the sequence continues after the larger of the two and
    the numbers in between are reported as skipped."""
    high = committed_spool(make_spool, 250)
    reserve = reserved(spool_path)
    assert reserve > high
    conn = sqlite3.connect(spool_path)
    conn.execute("PRAGMA user_version=99")  # our file, but a schema we do not know
    conn.commit()
    conn.close()
    sp = make_spool()
    st = sp.stats()
    assert st.quarantined == 1
    assert st.next_seq == reserve + 1
    assert st.seq_skipped == reserve - high
    assert_works(sp, reserve + 1)


def test_recovered_high_water_mark_above_the_sidecar_reservation_wins(make_spool, spool_path):
    """The other way round: a stale sidecar (restored from an old image) reserves less than the
    corrupt file still shows; the larger number wins."""
    high = committed_spool(make_spool, 250)
    side = spool_path.with_name("spool.db.state.json")
    doc = json.loads(side.read_text())
    doc.update(seq_reserved=100, seq_committed=50)
    side.write_text(json.dumps(doc))
    conn = sqlite3.connect(spool_path)
    conn.execute("DELETE FROM meta WHERE k = 'reserved'")
    conn.execute("PRAGMA user_version=99")
    conn.commit()
    conn.close()
    sp = make_spool()
    assert sp.stats().next_seq == high + 1
    assert_works(sp, high + 1)


def test_foreign_database_is_moved_aside_unmodified(make_spool, spool_path):
    spool_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(spool_path)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.execute("INSERT INTO customers VALUES ('x')")
    conn.commit()
    conn.close()
    before = spool_path.read_bytes()
    sp = make_spool()
    assert sp.stats().quarantined == 1
    [moved] = quarantined_files(spool_path)
    assert (spool_path.parent / moved).read_bytes() == before
    assert_works(sp, 1)


def test_wal_and_shm_go_aside_with_the_file(make_spool, spool_path):
    sp = make_spool()
    sp.append(readings(50))
    sp.commit()
    crash(sp)
    spool_path.with_name("spool.db-wal").write_bytes(b"leftover wal")
    spool_path.with_name("spool.db-shm").write_bytes(b"leftover shm")
    spool_path.write_bytes(b"not a database at all" * 100)
    sp2 = make_spool()
    assert sp2.stats().quarantined == 1
    names = quarantined_files(spool_path)
    assert len(names) == 3
    assert {n.rsplit("-", 1)[-1] for n in names if n.endswith(("-wal", "-shm"))} == {"wal", "shm"}


def test_quarantine_count_survives_reopen_and_more_corruption(make_spool, spool_path):
    committed_spool(make_spool)
    spool_path.write_bytes(b"x" * 3000)
    sp = make_spool()
    assert sp.stats().quarantined == 1
    sp.append(readings(5))
    sp.close()
    sp = make_spool()
    assert sp.stats().quarantined == 1
    sp.close()
    spool_path.write_bytes(b"y" * 3000)
    assert make_spool().stats().quarantined == 2
    sidecar = json.loads(spool_path.with_name("spool.db.state.json").read_text())
    assert sidecar["quarantined"] == 2


def test_count_survives_a_lost_sidecar_through_the_meta_copy(make_spool, spool_path):
    committed_spool(make_spool)
    spool_path.write_bytes(b"x" * 3000)
    make_spool().close()
    spool_path.with_name("spool.db.state.json").write_text("{broken")
    assert make_spool().stats().quarantined == 1


def test_eviction_counters_are_carried_from_a_readable_corrupt_file(make_spool, spool_path):
    sp = make_spool(max_bytes=64 << 10)
    for k in range(10):
        sp.append(readings(1000, start=k * 1000))
        sp.commit()
    evicted = sp.stats().evicted_routine
    assert evicted > 0
    sp.close()
    conn = sqlite3.connect(spool_path)
    conn.execute("PRAGMA user_version=7")
    conn.commit()
    conn.close()
    st = make_spool(max_bytes=64 << 10).stats()
    assert st.quarantined == 1
    assert st.evicted_routine == evicted
    assert st.next_seq == reserved(spool_path) - SpoolTuning().seq_reserve + 1  # after the old reservation
    assert st.next_seq > 10_000


def test_only_the_newest_quarantined_files_are_kept(make_spool, spool_path, caplog):
    tuning = SpoolTuning(keep_quarantined=2)
    for i in range(4):
        spool_path.parent.mkdir(parents=True, exist_ok=True)
        spool_path.write_bytes(bytes([i]) * 3000)
        sp = make_spool(tuning=tuning)
        assert sp.stats().quarantined == i + 1
        sp.close()
    names = quarantined_files(spool_path)
    assert len(names) == 2
    kept = sorted((spool_path.parent / n).read_bytes()[:1] for n in names)
    assert kept == [b"\x02", b"\x03"]


@pytest.mark.parametrize("missing", ["sidecar", "nothing"])
def test_deleted_database_does_not_reuse_sequence_numbers(make_spool, spool_path, missing):
    high = committed_spool(make_spool)
    spool_path.unlink()
    if missing == "sidecar":
        spool_path.with_name("spool.db.state.json").unlink()
    st = make_spool().stats()
    if missing == "sidecar":
        assert st.next_seq == 1  # documented residual risk: both files gone
    else:
        assert st.next_seq > high
