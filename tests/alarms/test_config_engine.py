"""``[[sensors.alarms]]`` in the config model (out-of-order thresholds, legacy keys, LEL basis) and
the engine that runs every rule on the data path."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent import config as cfg
from agent.alarms.engine import AckError, AlarmEngine
from agent.spool import NewReading


def load(tmp_path: Path, alarms: str, driver: str = "simulated", settings: str = "") -> cfg.AgentConfig:
    p = tmp_path / "agent.toml"
    p.write_text(f'[[sensors]]\nid = "ch4"\ndriver = "{driver}"\n{settings}\n{alarms}')
    return cfg.load(p, environ={})


def errors(tmp_path: Path, alarms: str, **kw) -> dict[str, str]:
    with pytest.raises(cfg.ConfigError) as ei:
        load(tmp_path, alarms, **kw)
    return dict(ei.value.errors)


def test_staged_lel_alarm_loads(tmp_path):
    conf = load(tmp_path, '[[sensors.alarms]]\nunit = "%LEL"\nwarn = 10\nalarm = 20\nclear_margin = 2\n'
                          'on_delay_readings = 2\noff_delay_s = 30\n')
    a = conf.sensors[0].alarms[0]
    assert (a.quantity, a.unit, a.warn, a.alarm, a.latch, a.watches_fault) == ("methane", "%LEL", 10, 20, True, True)
    assert a.clear_point("alarm") == 18 and a.clear_point("warn") == 8


@pytest.mark.parametrize(
    ("alarms", "message"),
    [
        ("warn = 20\nalarm = 10", "warn (20.0) must be below alarm (10.0) for a rising alarm"),
        ('direction = "falling"\nwarn = 10\nalarm = 20', "warn (10.0) must be above alarm (20.0)"),
        ("warn = 10\nalarm = 20\nclear = 12", "clear (12.0) must be below the first level (10.0)"),
        ("warn = 10\nclear = 5\nclear_margin = 1", "give clear or clear_margin, not both"),
        ('quantity = "methane"', "an alarm needs warn, alarm or both"),
        ("alarm = 10\nhigh = 5", "high/low cannot be combined with alarm"),
        ("high = 10\nlow = 1", "write two [[sensors.alarms]] entries"),
        ("alarm = 10\ncolour = 1", "Extra inputs are not permitted"),
    ],
)
def test_bad_alarm_is_a_clear_error_naming_the_entry(tmp_path, alarms, message):
    errs = errors(tmp_path, f"[[sensors.alarms]]\n{alarms}\n")
    assert any(path.startswith("sensors[0].alarms[0]") and message in reason for path, reason in errs.items()), errs


def test_sensor_level_checks(tmp_path):
    two = '[[sensors.alarms]]\nalarm = 10\n[[sensors.alarms]]\nalarm = 20\n'
    assert "a second rising alarm on methane" in errors(tmp_path, two)["sensors[0]"]
    lel_on_env = '[[sensors.alarms]]\nquantity = "methane"\nunit = "%LEL"\nalarm = 10\n'
    settings = 'settings = { bus = 1, address = 0x76 }'
    assert "needs the driver's lel_vol_percent" in errors(tmp_path, lel_on_env, driver="bme280",
                                                          settings=settings)["sensors[0]"]


def test_legacy_high_low_keep_working_with_a_message(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    conf = load(tmp_path, '[[sensors.alarms]]\nhigh = 1000.0\n[[sensors.alarms]]\nlow = 0.5\n')
    high, low = conf.sensors[0].alarms
    assert (high.alarm, high.direction, high.latch, high.margin) == (1000.0, "rising", False, 0.0)
    assert (low.alarm, low.direction) == (0.5, "falling")
    assert "deprecated and read as alarm = 1000.0" in caplog.text
    # The old behaviour exactly: the alarm bit set on every reading beyond the threshold.
    engine = AlarmEngine(clock=lambda: 0.0)
    engine.apply(conf.sensors)
    got = []
    for i, value in enumerate((2.0, 1000.0, 0.2, 2.0)):
        items, _ = engine.evaluate([NewReading(i, True, "ch4", "methane", value, "ppm")])
        got.append((value, items[0].alarm))
    assert got == [(2.0, False), (1000.0, True), (0.2, True), (2.0, True)]  # the clearing reading is kept too


def test_engine_keeps_state_of_unchanged_rules_and_acks(tmp_path):
    conf = load(tmp_path, '[[sensors.alarms]]\nunit = "%LEL"\nwarn = 10\nalarm = 20\n')
    engine = AlarmEngine(clock=lambda: 0.0)
    engine.apply(conf.sensors)
    items, fired = engine.evaluate([
        NewReading(1, True, "ch4", "methane", 12_000.0, "ppm"),  # 24 %LEL at 5.0 %vol
        NewReading(1, True, "ch4", "temperature", 12_000.0, "degC"),
    ])
    assert [i.alarm for i in items] == [True, False]
    assert [(f.key, f.transition.type, f.transition.level, f.index) for f in fired] == [
        ("ch4/methane", "raised", "alarm", 0)]
    assert engine.apply(conf.sensors) == []  # same rule: the latched state survives a reload
    assert engine.active()[0]["latched"]
    with pytest.raises(AckError, match="no alarm configured for ch4/oxygen"):
        engine.acknowledge("ch4", "oxygen", 5)
    assert [f.transition.type for f in engine.acknowledge("ch4", None, 5)] == ["acknowledged"]
    with pytest.raises(AckError, match=r"nothing to acknowledge: no latched alarm on ch4/methane=alarm \(ack"):
        engine.acknowledge("ch4", "methane", 6)
