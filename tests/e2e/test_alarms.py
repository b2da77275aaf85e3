"""Alarms end to end: a scripted plume in the simulated sensor raises alarm events on the alarm
topic (plain JSON, QoS 1, allowed by the shipped device policy as the emulator's policy plugin
enforces it), they clear after the plume, a latched alarm is acknowledged from the site's CLI, and
with the broker down the events wait in the event store and arrive later, in order, none lost."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.devices.modbus_rtu import ModbusRtuDevice
from tests.devices.pty_host import PtyHost
from tests.e2e.conftest import ROOT, write_config
from tests.mqtt_client import MqttClient

PINNED = ("type", "level", "sensor_id", "quantity", "value", "threshold", "ts_ms", "seq")


def plume_config(path, info, state, *, start_s: float, latch: bool, extra: str = ""):
    config = write_config(path, info, state, interval=0.2)
    text = config.read_text().replace(
        "settings = { seed = 3 }",
        f"settings = {{ seed = 3, noise_ppm = 0.0, plumes = [{{ start_s = {start_s}, duration_s = 6, "
        "peak_ppm = 15000 }] }\n"
        "[[sensors.alarms]]\n"
        f'unit = "%LEL"\nwarn = 10.0\nalarm = 20.0\nclear_margin = 2.0\nlatch = {str(latch).lower()}\n' + extra,
    )
    config.write_text(text)
    return config


def alarm_events(client: MqttClient, count: int, timeout: float = 60) -> list[dict]:
    msgs = client.drain(count, timeout=timeout)
    for m in msgs:
        assert m.topic.endswith("/alarm") and m.content_type == "application/json"
    return [json.loads(m.payload) for m in msgs]


def cli(config, *args):
    return subprocess.run([sys.executable, "-m", "agent", *args, "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_plume_raises_publishes_and_clears(fleet_emulator, tmp_path, agent_factory):
    emu = fleet_emulator  # enforces config/iot-policy-device.json
    info = emu.info
    thing = info.device.thing_name
    with MqttClient.for_admin(info) as watcher:
        watcher.subscribe(f"dt/methane/+/{thing}/alarm")
        config = plume_config(tmp_path / "agent.toml", info, tmp_path / "state", start_s=4, latch=False)
        agent = agent_factory(config).start()
        events = alarm_events(watcher, 4)
        assert [(e["type"], e["level"]) for e in events] == [
            ("raised", "warn"), ("escalated", "alarm"), ("cleared", "warn"), ("cleared", "normal")]
        for e in events:
            assert all(k in e for k in PINNED), e
            assert (e["sensor_id"], e["quantity"], e["site"], e["device"], e["unit"]) == (
                "sim-1", "methane", "site-1", thing, "%LEL")
            assert isinstance(e["seq"], int) and isinstance(e["ts_ms"], int)
        assert [e["event_id"] for e in events] == [1, 2, 3, 4]
        assert events[0]["value"] >= 10.0 and events[1]["value"] >= 20.0 and events[1]["threshold"] == 20.0
        st = agent.wait_status(lambda s: s["alarms"]["events"]["pending"] == 0)
        assert st["alarms"]["active"] == []
        listed = cli(config, "events", "--json")
        assert [json.loads(line)["type"] for line in listed.stdout.splitlines()] == [e["type"] for e in events]
        rc, _ = agent.terminate()
        assert rc == 0


def test_latched_alarm_is_acknowledged_from_the_site_cli(emulator, agent_factory, tmp_path):
    info = emulator.info
    thing = info.device.thing_name
    with MqttClient.for_admin(info) as watcher:
        watcher.subscribe(f"dt/methane/+/{thing}/alarm")
        config = plume_config(tmp_path / "agent.toml", info, tmp_path / "state", start_s=2, latch=True)
        agent = agent_factory(config).start()
        events = alarm_events(watcher, 2)
        assert [(e["type"], e["level"]) for e in events] == [("raised", "warn"), ("escalated", "alarm")]
        # The plume passes; the latch holds the alarm, and status shows it first.
        st = agent.wait_status(lambda s: (s["sensors"][0]["last"].get("methane") or {}).get("value", 1e9) < 100
                               and s["spool"]["next_seq"] > 60, timeout=40)
        assert st["alarms"]["active"][0]["level"] == "alarm" and st["alarms"]["active"][0]["latched"]
        human = cli(config, "status")
        assert human.stdout.splitlines()[0].startswith("ALARM sim-1/methane"), human.stdout
        ack = cli(config, "alarms", "ack", "sim-1", "--by", "technician")
        assert ack.returncode == 0, ack.stderr
        events = alarm_events(watcher, 2)
        assert [(e["type"], e["level"], e["by"]) for e in events] == [
            ("acknowledged", "alarm", "technician"), ("cleared", "normal", "technician")]
        again = cli(config, "alarms", "ack", "sim-1")
        assert again.returncode == 1 and "nothing to acknowledge" in again.stderr
        assert cli(config, "alarms", "ack", "nope").returncode == 1
        agent.terminate()


def test_broker_down_relay_switches_and_events_arrive_later_in_order(emulator, agent_factory, tmp_path):
    info = emulator.info
    thing = info.device.thing_name
    relay = ModbusRtuDevice(slave=1, coils=4)  # an RS-485 relay module on a pty
    host = PtyHost(relay, link=tmp_path / "rs485").start()
    watcher = MqttClient.for_admin(info, client_id="alarm-watcher", session_expiry_s=600)
    watcher.connect()
    try:
        watcher.subscribe(f"dt/methane/+/{thing}/alarm")
        emulator.broker.stop()
        relay_conf = (f'[[alarms.outputs]]\nname = "relay"\nbackend = "modbus-coil"\nport = "{host.port}"\n'
                      'coil = 2\nlevels = ["warn", "alarm"]\n')
        config = plume_config(tmp_path / "agent.toml", info, tmp_path / "state", start_s=1, latch=False,
                              extra=relay_conf)
        agent = agent_factory(config).start()
        st = agent.wait_status(lambda s: s["alarms"]["events"]["pending"] >= 4 and not s["alarms"]["active"],
                               timeout=60)
        assert st["uplink"]["connected"] is False
        # With no broker at all, the relay switched on for the plume and off after it.
        assert [(coil, on) for coil, on, _ in relay.coil_log] == [(2, False), (2, True), (2, False)]
        assert st["alarms"]["outputs"][0]["ok"] and st["alarms"]["outputs"][0]["switches"] == 3
        emulator.broker.start()
        events = alarm_events(watcher, 4, timeout=90)
        assert [e["event_id"] for e in events] == [1, 2, 3, 4]
        assert [(e["type"], e["level"]) for e in events] == [
            ("raised", "warn"), ("escalated", "alarm"), ("cleared", "warn"), ("cleared", "normal")]
        assert [e["ts_ms"] for e in events] == sorted(e["ts_ms"] for e in events)
        agent.wait_status(lambda s: s["alarms"]["events"]["pending"] == 0, timeout=30)
        agent.terminate()
        assert relay.coils[2] is False
    finally:
        watcher.close()
        host.stop()
