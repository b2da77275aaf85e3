"""Leak events: the rolling background, start/peak/end/duration/integrated excess on scripted series,
the pre-trigger ring committed at the start, faster sampling asked for during the event."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import config as cfg
from agent.alarms.capture import LeakCapture
from agent.alarms.leak import LeakConfig, LeakDetector
from agent.alarms.store import list_events
from agent.spool import NewReading
from drivers.base import WARMING_UP
from tests.alarms.conftest import FakeSpool, feature_from_toml

CONF = LeakConfig(margin_ppm=10, min_duration_s=3, end_after_s=5, background_window_s=100)


def run(det: LeakDetector, values, start=0):
    out = []
    for i, v in enumerate(values):
        t = start + i
        out += det.reading(float(t), t * 1000, v, ())
    return out


def test_event_start_peak_end_and_integrated_excess():
    det = LeakDetector("ch4", CONF)
    assert run(det, [2.0] * 20) == []
    assert det.background == pytest.approx(2.0)
    plume = [2, 30, 50, 102, 50, 30, 2, 2, 2, 2, 2, 2, 2, 2]
    events = run(det, plume, start=20)
    started, ended = events
    assert started["type"] == "started" and started["start_ts_ms"] == 21_000 and started["ts_ms"] == 24_000
    assert ended["type"] == "ended"
    assert (ended["start_ts_ms"], ended["end_ts_ms"], ended["duration_s"]) == (21_000, 26_000, 5.0)
    assert (ended["peak_ppm"], ended["peak_ts_ms"]) == (102.0, 23_000)
    # Excess over the 2 ppm background, 1 s per reading after the start, up to the first reading back below.
    assert ended["excess_ppm_s"] == pytest.approx((50 - 2) + (102 - 2) + (50 - 2) + (30 - 2) + 0)
    assert ended["background_ppm"] == 2.0 and not det.active


def test_short_blip_and_warming_readings_make_no_event():
    det = LeakDetector("ch4", CONF)
    run(det, [2.0] * 20)
    assert run(det, [40, 40, 2, 2], start=20) == []  # shorter than min_duration_s
    assert [d.reading(float(t), t, 500.0, (WARMING_UP,)) for d in [det] for t in range(30, 40)] == [[]] * 10


def test_a_long_leak_does_not_raise_its_own_background():
    det = LeakDetector("ch4", CONF)
    run(det, [2.0] * 20)
    run(det, [80.0] * 300, start=20)
    assert det.active and det.background == pytest.approx(2.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=200))
def test_events_alternate_and_are_consistent(values):
    det = LeakDetector("ch4", LeakConfig(margin_ppm=10, min_duration_s=2, end_after_s=2, background_window_s=10))
    events = run(det, [2.0] * 12 + values)
    types = [e["type"] for e in events]
    assert types == ["started", "ended"] * (len(types) // 2) + (["started"] if len(types) % 2 else [])
    for e in events:
        assert e["peak_ppm"] >= e["background_ppm"] + 10 and e["excess_ppm_s"] >= 0
        if e["type"] == "ended":
            assert e["end_ts_ms"] > e["start_ts_ms"] and e["duration_s"] > 0


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def reading(ts, v, q="methane"):
    return NewReading(ts, True, "ch4", q, v, "ppm")


def test_capture_stores_quietly_commits_the_pretrigger_ring_and_asks_for_fast_reads():
    clock = Clock()
    fast = []
    cap = LeakCapture(lambda sid, on: fast.append((sid, on)), clock=clock)
    conf = LeakConfig(margin_ppm=10, min_duration_s=2, end_after_s=2, background_window_s=20, quiet_store_s=10,
                      pretrigger_s=5, fast_interval_s=0.2)

    class S:
        id, enabled, leak = "ch4", True, conf

    cap.apply([S()])
    stored = []
    values = [2.0] * 30 + [50.0] * 5 + [2.0] * 5
    for i, v in enumerate(values):
        clock.t = float(i)
        plan, docs = cap.filter([reading(i * 1000, v), reading(i * 1000, 20.0, "temperature")])
        stored += [(idx, r.ts_ms, r.quantity) for idx, r in plan if r.quantity == "methane"]
        for _, d in docs:
            if d["type"] == "started":
                # The ring (readings not stored while quiet) is committed before the current readings.
                ring = [ts for idx, ts, _ in stored[-7:] if idx is None]
                assert ring == [27_000, 28_000, 29_000, 31_000]
    quiet = [ts for _, ts, _ in stored if ts < 26_000]
    assert quiet == [0, 10_000, 20_000]  # one reading per quiet_store_s
    # Every reading from the start to the end (t=37: 2 s back below); quiet again after it.
    assert {ts for _, ts, _ in stored if ts >= 30_000} == {t * 1000 for t in range(30, 38)}
    assert fast == [("ch4", True), ("ch4", False)]


def test_leak_events_are_stored_and_listed(tmp_path):
    f = feature_from_toml(tmp_path, '[[sensors]]\nid = "ch4"\ndriver = "simulated"\ninterval_s = 1\n'
                          '[sensors.leak]\nmargin_ppm = 10\nmin_duration_s = 0\nend_after_s = 0\n'
                          'background_window_s = 20\nfast_interval_s = 0.2\n', leak_clock=(clock := Clock()))
    f.open()
    spool = FakeSpool()
    for i, v in enumerate([2.0] * 12 + [40.0, 60.0, 2.0]):
        clock.t = float(i)
        f.process([reading(i * 1000, v)], spool.append)
    started, ended = list_events(tmp_path / "events.db", "leak")
    assert (started["type"], started["seq"], started["pretrigger_readings"], started["site"]) == (
        "started", 113, 0, "s")
    assert (ended["type"], ended["peak_ppm"], ended["duration_s"], ended["excess_ppm_s"]) == ("ended", 60.0, 2.0, 58.0)
    assert f.status()["leaks"][0]["background_ppm"] == 2.0


def test_fast_interval_must_be_faster(tmp_path):
    p = tmp_path / "agent.toml"
    p.write_text('[[sensors]]\nid = "ch4"\ndriver = "simulated"\ninterval_s = 1\n[sensors.leak]\nfast_interval_s = 2\n')
    with pytest.raises(cfg.ConfigError, match=r"fast_interval_s \(2.0\) must be shorter than interval_s"):
        cfg.load(p, environ={})
