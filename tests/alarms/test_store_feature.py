"""The event store (order, never losing unsent events, corruption set aside) and the feature's data
path: events carry their reading's spooled seq, latches survive a restart, acks change nothing when
nothing is latched."""

from __future__ import annotations

import json
import sqlite3

import pytest

from agent import config as cfg
from agent.alarms.engine import AckError
from agent.alarms.feature import AlarmFeature
from agent.alarms.store import EventStore, list_events
from agent.spool import NewReading
from tests.alarms.conftest import FakeSpool

PINNED = ("type", "level", "sensor_id", "quantity", "value", "threshold", "ts_ms", "seq")


def test_store_keeps_unsent_in_order_and_prunes_only_sent(tmp_path):
    store = EventStore(tmp_path / "events.db", keep_sent=2)
    store.open()
    docs = store.add("alarm", [(f"k{i}", {"type": "raised", "n": i}) for i in range(5)])
    assert [d["event_id"] for d in docs] == [1, 2, 3, 4, 5]
    assert [i for i, _, _ in store.unsent()] == [1, 2, 3, 4, 5]
    for i in (1, 2, 3):
        store.mark_sent(i)
    assert [i for i, _, _ in store.unsent()] == [4, 5] and store.pending() == 2
    listed = list_events(tmp_path / "events.db")
    assert [(e["event_id"], e["sent"]) for e in listed] == [(2, True), (3, True), (4, False), (5, False)]
    store.close()
    store.open()  # ids are never reused, even after the newest rows are gone
    store.mark_sent(4)
    store.mark_sent(5)
    assert store.add("alarm", [("k", {})])[0]["event_id"] == 6
    assert store.latest_by_key("alarm")["k"]["event_id"] == 6


def test_corrupt_store_is_set_aside_and_the_agent_goes_on(tmp_path):
    path = tmp_path / "events.db"
    path.write_bytes(b"this is not a database" * 100)
    store = EventStore(path)
    store.open()
    assert store.quarantined and "corrupt" in " ".join(p.name for p in tmp_path.iterdir())
    assert store.add("alarm", [("k", {})])[0]["event_id"] == 1


def sensors(tmp_path, latch="true"):
    p = tmp_path / "agent.toml"
    p.write_text('[[sensors]]\nid = "ch4"\ndriver = "simulated"\n'
                 f'[[sensors.alarms]]\nunit = "%LEL"\nwarn = 10\nalarm = 20\nlatch = {latch}\n')
    return cfg.load(p, environ={}).sensors


def reading(ppm, ts=1000):
    return NewReading(ts, True, "ch4", "methane", ppm, "ppm")


def test_events_carry_the_spooled_seq_and_pinned_fields(tmp_path):
    f = AlarmFeature(sensors(tmp_path), tmp_path / "events.db", site="s1", device="gw-1", clock_synced=lambda: True)
    f.open()
    spool = FakeSpool()
    seen = []
    f.listeners.append(seen.extend)
    f.process([reading(100.0), reading(12_000.0, 2000)], spool.append)
    (ev,) = seen
    assert all(k in ev for k in PINNED)
    assert (ev["type"], ev["level"], ev["seq"], ev["value"], ev["threshold"], ev["unit"]) == (
        "raised", "alarm", 102, 24.0, 20.0, "%LEL")
    assert (ev["site"], ev["device"], ev["ts_ms"], ev["event_id"]) == ("s1", "gw-1", 2000, 1)
    assert [r.alarm for r in spool.got] == [False, True]
    stored = json.loads(f.store.unsent()[0][2])
    assert stored == ev  # what is published is exactly what was stored


def test_latch_survives_a_restart_and_a_bad_ack_changes_nothing(tmp_path):
    f = AlarmFeature(sensors(tmp_path), tmp_path / "events.db", site="s", device="d", clock_synced=lambda: True)
    f.open()
    f.process([reading(12_000.0)], FakeSpool().append)
    f.process([reading(10.0)], FakeSpool().append)
    f.close()
    g = AlarmFeature(sensors(tmp_path), tmp_path / "events.db", site="s", device="d", clock_synced=lambda: True)
    g.open()
    (state,) = g.engine.active()
    assert (state["level"], state["latched"], state["acknowledged"]) == ("alarm", True, False)
    before = g.store.pending()
    events = g.acknowledge("ch4", None, "tech")
    # The restarted machine has not seen the gas go yet: acknowledged now, cleared by the next reading.
    assert [(e["type"], e["by"], e["seq"]) for e in events] == [("acknowledged", "tech", 101)]
    g.process([reading(10.0)], FakeSpool().append)
    assert g.engine.active() == []
    assert g.store.pending() == before + 2
    with pytest.raises(AckError, match="nothing to acknowledge"):
        g.acknowledge("ch4", None, "tech")
    with pytest.raises(AckError, match="no alarm configured for nope"):
        g.acknowledge("nope", None, "tech")
    assert g.store.pending() == before + 2  # refused acks stored nothing


def test_failed_reads_raise_a_fault_event_with_the_last_seq(tmp_path):
    f = AlarmFeature(sensors(tmp_path), tmp_path / "events.db", site="s", device="d", clock_synced=lambda: False)
    f.open()
    f.process([reading(12_000.0)], FakeSpool().append)
    for _ in range(3):
        f.failure("ch4", "timeout: no answer", 5000)
    last = list_events(tmp_path / "events.db")[-1]
    assert (last["type"], last["level"], last["reason"], last["seq"], last["clock_synced"]) == (
        "fault", "fault", "timeout: no answer", 101, False)
    assert f.status()["active"][0]["level"] == "fault"


def test_store_is_read_only_for_the_events_command(tmp_path):
    assert list_events(tmp_path / "none.db") == []
    assert not (tmp_path / "none.db").exists()
    store = EventStore(tmp_path / "e.db")
    store.open()
    store.add("leak", [("ch4", {"type": "ended"})])
    assert [e["type"] for e in list_events(tmp_path / "e.db", "leak")] == ["ended"]
    assert list_events(tmp_path / "e.db", "alarm") == []
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(f"file:{tmp_path / 'e.db'}?mode=ro", uri=True).execute("DELETE FROM events")
