"""The alarm state machine against scripted concentration series, and hypothesis properties for the
hysteresis and delay rules: no chatter, no missed transition, the latch holds until acknowledged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.alarms.config import AlarmConfig
from agent.alarms.machine import AlarmMachine, NotLatched
from drivers.base import OUT_OF_RANGE, SENSOR_FAULT, WARMING_UP

LEL_RULE = {"quantity": "methane", "unit": "%LEL", "warn": 10.0, "alarm": 20.0, "clear_margin": 2.0}


def machine(**rule) -> AlarmMachine:
    return AlarmMachine("ch4", AlarmConfig(**rule), t0=0.0, lel_vol_percent=5.0)


def feed(m: AlarmMachine, values, *, unit="%LEL", flags=(), start=0.0, step=1.0):
    """Feed values one second apart; return [(type, level)] of every transition."""
    out = []
    for i, v in enumerate(values):
        t = start + i * step
        out += [(tr.type, tr.level) for tr in m.reading(t, int(t * 1000), v, unit, flags, seq=i + 1)]
    return out


def test_staged_alarm_raise_escalate_latch_ack_clear():
    m = machine(**LEL_RULE)
    assert feed(m, [1, 5, 10.5, 15, 21, 25]) == [("raised", "warn"), ("escalated", "alarm")]
    # The gas goes away: the latched alarm holds.
    assert feed(m, [3, 1, 0, 0], start=10) == []
    assert m.reported == "alarm" and m.latched and not m.acknowledged
    trs = m.acknowledge(20_000)
    assert [(t.type, t.level) for t in trs] == [("acknowledged", "alarm"), ("cleared", "normal")]
    assert not m.latched


def test_ack_while_gas_present_keeps_alarm_until_it_clears():
    m = machine(**LEL_RULE)
    feed(m, [25])
    assert [t.type for t in m.acknowledge(1000)] == ["acknowledged"]
    assert m.reported == "alarm"
    assert feed(m, [19, 15], start=5) == [("cleared", "warn")]  # 19 >= 20-2 holds alarm; 15 drops to warn
    assert feed(m, [8.5, 7.9], start=10) == [("cleared", "normal")]


def test_unlatched_alarm_steps_down_with_hysteresis():
    m = machine(**LEL_RULE, latch=False)
    assert feed(m, [21, 18.5, 17.9, 9, 7.9]) == [
        ("raised", "alarm"), ("cleared", "warn"), ("cleared", "normal")]


def test_clear_threshold_clears_every_level_only_below_it():
    m = machine(quantity="methane", unit="%LEL", warn=10, alarm=20, clear=5, latch=False)
    assert feed(m, [21, 12, 6, 4.9]) == [("raised", "alarm"), ("cleared", "normal")]


def test_ppm_reading_is_compared_in_lel_with_the_sensors_basis():
    m = AlarmMachine("ch4", AlarmConfig(**LEL_RULE), t0=0, lel_vol_percent=4.4)
    # 10 %LEL at 4.4 %vol = 4400 ppm; at 5.0 %vol it would be 5000 ppm.
    assert feed(m, [4399.0], unit="ppm") == []
    trs = m.reading(1, 1000, 4400.0, "ppm", (), seq=9)
    assert [(t.type, t.level, t.threshold, t.seq) for t in trs] == [("raised", "warn", 10.0, 9)]
    assert trs[0].value == pytest.approx(10.0)


def test_on_delay_counts_consecutive_readings_and_seconds():
    m = machine(**LEL_RULE, on_delay_readings=3, on_delay_s=5)
    assert feed(m, [12, 12, 1, 12, 12]) == []  # interrupted run
    # 3 readings are not enough until 5 s have passed since the run began.
    assert feed(m, [1, 12, 12, 12, 12, 12, 12], start=9) == [("raised", "warn")]
    assert m.since_ts_ms == 15_000


def test_off_delay():
    m = machine(**LEL_RULE, latch=False, off_delay_readings=3)
    feed(m, [12])
    assert feed(m, [1, 1, 12, 1, 1], start=1) == []
    assert feed(m, [1], start=6) == [("cleared", "normal")]


def test_warming_up_never_raises_or_clears():
    m = machine(**LEL_RULE, latch=False)
    assert feed(m, [50, 50], flags=(WARMING_UP,)) == []
    assert m.reported == "normal"
    feed(m, [12], start=5)
    assert feed(m, [0, 0], flags=(WARMING_UP,), start=6) == []
    assert m.reported == "warn"


def test_fault_after_failures_keeps_the_latch_and_clears_on_a_valid_reading():
    m = machine(**LEL_RULE)
    feed(m, [30])
    assert m.failure(1, 1000, "timeout") == [] and m.failure(2, 2000, "timeout") == []
    (tr,) = m.failure(3, 3000, "timeout: no answer")
    assert (tr.type, tr.level, tr.previous_level, tr.reason) == ("fault", "fault", "alarm", "timeout: no answer")
    assert m.failure(4, 4000, "timeout") == []  # one fault event, not one per failure
    assert feed(m, [0], start=5) == [("cleared", "alarm")]  # back from fault: still latched
    assert m.latched


def test_flagged_readings_count_towards_fault():
    m = machine(**LEL_RULE, fault_after_errors=2)
    assert feed(m, [5], flags=(OUT_OF_RANGE,)) == []
    assert feed(m, [5], flags=(SENSOR_FAULT,), start=1) == [("fault", "fault")]


def test_stale_sensor_is_a_fault_and_non_methane_rules_ignore_faults_by_default():
    m = machine(**LEL_RULE, stale_after_s=30)
    assert m.tick(29, 29_000) == []
    assert [t.type for t in m.tick(31, 31_000)] == ["fault"]
    assert m.tick(40, 40_000) == []
    temp = AlarmMachine("env", AlarmConfig(quantity="temperature", alarm=50), t0=0)
    assert temp.tick(1000, 0) == [] and temp.failure(1, 0, "x") == []


def test_ack_errors_change_nothing():
    m = machine(**LEL_RULE)
    with pytest.raises(NotLatched, match="no latched alarm"):
        m.acknowledge(0)
    feed(m, [12])
    with pytest.raises(NotLatched, match="level warn"):
        m.acknowledge(0)
    feed(m, [25], start=1)
    m.acknowledge(2000)
    with pytest.raises(NotLatched, match="already acknowledged"):
        m.acknowledge(3000)
    assert m.reported == "alarm" and m.acknowledged


def test_falling_alarm():
    m = machine(quantity="oxygen", direction="falling", warn=19.5, alarm=18.0, clear_margin=0.5, latch=False)
    assert feed(m, [20.9, 19.4, 17.9, 18.4, 18.6, 20.1], unit="%") == [
        ("raised", "warn"), ("escalated", "alarm"), ("cleared", "warn"), ("cleared", "normal")]


# --- properties ------------------------------------------------------------------------------------
values = st.lists(st.floats(0, 40, allow_nan=False), min_size=1, max_size=60)
delays = st.integers(1, 4)


@settings(max_examples=300, deadline=None)
@given(center=st.floats(0, 40), noise=st.lists(st.floats(-0.99, 0.99), min_size=1, max_size=80))
def test_no_chatter_within_the_hysteresis_band(center, noise):
    """Noise narrower than the clear margin around any level makes at most one transition."""
    m = machine(quantity="methane", unit="%LEL", alarm=20.0, clear_margin=2.0, latch=False)
    assert len(feed(m, [center + n for n in noise])) <= 1


@settings(max_examples=300, deadline=None)
@given(series=values, on=delays, off=delays, latch=st.booleans())
def test_no_missed_transition(series, on, off, latch):
    """The level after each reading is what the rules demand, and every change came with an event."""
    rule = AlarmConfig(quantity="methane", unit="%LEL", warn=10.0, alarm=20.0, clear_margin=2.0,
                       on_delay_readings=on, off_delay_readings=off, latch=latch)
    m = AlarmMachine("ch4", rule, t0=0)
    level = "normal"
    for i, v in enumerate(series):
        trs = m.reading(float(i), i * 1000, v, "%LEL", ())
        for tr in trs:
            assert tr.previous_level == level
            level = tr.level
        assert level == m.reported  # the events replay to the machine's own state
        recent = series[max(0, i - on + 1): i + 1]
        if len(recent) == on and all(x >= 20.0 for x in recent):
            assert m.level == "alarm"
        elif len(recent) == on and all(x >= 10.0 for x in recent):
            assert m.level in ("warn", "alarm")
        tail = series[max(0, i - off + 1): i + 1]
        if len(tail) == off and all(x < 8.0 for x in tail) and not (m.latched and not m.acknowledged):
            assert m.level == "normal"


@settings(max_examples=300, deadline=None)
@given(before=values, after=values)
def test_latch_holds_until_acknowledged(before, after):
    m = machine(**LEL_RULE)
    feed(m, [*before, 30.0])
    assert m.level == "alarm" and m.latched
    feed(m, after, start=len(before) + 1)
    assert m.level == "alarm"  # however low the gas went, no clear without an acknowledgement
    m.acknowledge(10**9)
    feed(m, [0.0], start=10**6)
    assert m.level == "normal"


@settings(max_examples=200, deadline=None)
@given(series=values, on=st.integers(2, 5))
def test_runs_shorter_than_the_on_delay_never_raise(series, on):
    # Break every run of high readings before it reaches the on-delay.
    broken, run = [], 0
    for v in series:
        run = run + 1 if v >= 10.0 else 0
        if run >= on:
            v, run = 0.0, 0
        broken.append(v)
    m = machine(**LEL_RULE, on_delay_readings=on)
    assert feed(m, broken) == []
