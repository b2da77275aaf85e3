"""What a technician sees: active alarms first in the STATUS line, and `methane-agent events` reading
the event store with the agent stopped."""

from __future__ import annotations

import json

from agent.alarms.store import EventStore
from agent.cli import main
from agent.status import summary_line
from agent.status_model import AgentStatus


def test_summary_line_puts_active_alarms_first():
    status = {
        "agent": {"version": "x", "pid": 1, "thing_name": None, "uptime_s": 1, "config_hash": "h"},
        "spool": {"path": "/s", "readings": 3, "oldest_age_s": 1.0},
        "uplink": {"enabled": True, "connected": False},
        "sensors": [{"id": "ch4", "state": "failing"}],
        "alarms": {
            "active": [
                {"level": "fault", "sensor_id": "ch4", "quantity": "methane", "fault_reason": "timeout: no answer"},
                {"level": "alarm", "sensor_id": "ch4b", "quantity": "methane", "value": 23.456, "unit": "%LEL",
                 "latched": True, "acknowledged": False},
            ],
            "outputs": [{"name": "siren", "ok": False}],
        },
    }
    parts = summary_line(AgentStatus.from_dict(status)).split("; ")
    assert parts[:3] == ["FAULT ch4/methane (timeout: no answer)", "ALARM ch4b/methane 23.46 %LEL (latched)",
                         "OUTPUT FAILED siren"]
    assert parts[-1] == "failing sensors: ch4"
    quiet = AgentStatus.from_dict({**status, "alarms": {"active": [], "outputs": []}})
    assert summary_line(quiet).startswith("spool=")


def test_events_command_reads_the_store_with_the_agent_stopped(tmp_path, capsys):
    state = tmp_path / "state"
    conf = tmp_path / "agent.toml"
    conf.write_text(f'state_dir = "{state}"\n[[sensors]]\nid = "ch4"\ndriver = "simulated"\n')
    store = EventStore(state / "events.db")
    store.open()
    store.add("alarm", [("ch4/methane", {"type": "raised", "level": "alarm", "sensor_id": "ch4",
                                         "quantity": "methane", "value": 21.0, "threshold": 20.0, "unit": "%LEL",
                                         "ts_ms": 1_764_450_000_000, "seq": 7})])
    store.add("leak", [("ch4", {"type": "ended", "sensor_id": "ch4", "start_ts_ms": 1_764_450_000_000,
                                "peak_ppm": 900.0, "duration_s": 42.0, "excess_ppm_s": 12000.0})])
    store.mark_sent(1)
    store.close()
    assert main(["events", "--config", str(conf)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("#1 2025-11-29T21:00:00Z raised alarm ch4/methane value 21.0 threshold 20.0 %LEL seq 7 "
                        "[sent]")
    assert lines[1] == "#2 2025-11-29T21:00:00Z leak ended ch4 peak 900.0 ppm, 42.0 s, 12000.0 ppm·s [PENDING]"
    assert main(["events", "--config", str(conf), "--kind", "leak", "--json"]) == 0
    (only,) = capsys.readouterr().out.splitlines()
    assert json.loads(only)["event_id"] == 2
    assert main(["alarms", "ack", "--config", str(conf), "ch4"]) == 3  # no agent running


def test_changing_outputs_needs_a_restart_and_changes_nothing(tmp_path):
    import asyncio

    import pytest

    from agent.runtime import Agent, ConfigRejected
    from tests.alarms.conftest import load_toml

    base = f'state_dir = "{tmp_path}"\n[[sensors]]\nid = "ch4"\ndriver = "simulated"\n'
    old = load_toml(tmp_path, base)
    new = load_toml(tmp_path, base + '[[alarms.outputs]]\nname = "siren"\nbackend = "gpio"\npin = 17\n'
                                      'levels = ["alarm"]\n')
    agent = Agent(old)
    with pytest.raises(ConfigRejected, match=r"changing alarms\.outputs requires a restart"):
        asyncio.run(agent.apply(new))
    assert agent.conf is old
