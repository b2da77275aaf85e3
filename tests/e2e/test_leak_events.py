"""Leak events end to end: a scripted plume in the simulated sensor (ppm above the site's
background) makes the real agent publish a started and an ended event on
``dt/methane/{site}/{thing}/leak`` (allowed by the shipped device policy, which the emulator's
policy plugin enforces), and the readings the pre-trigger ring held back while the site was quiet
reach the telemetry recorder, with their own time stamps at the full read rate."""

from __future__ import annotations

import json
from itertools import pairwise

from agent.payload import decode
from agent.reading import Reading
from emulator.recorder import TelemetryRecorder
from tests.e2e.conftest import write_config
from tests.mqtt_client import MqttClient

INTERVAL_S = 0.1
QUIET_STORE_S = 1.0
PRETRIGGER_S = 2.0
PEAK_PPM = 300.0
PLUME_S = 2.0


def leak_config(path, info, state):
    config = write_config(path, info, state, interval=INTERVAL_S)
    config.write_text(config.read_text().replace(
        "settings = { seed = 3 }",
        f"settings = {{ seed = 3, noise_ppm = 0.0, plumes = [{{ start_s = 2, duration_s = {PLUME_S}, "
        f"peak_ppm = {PEAK_PPM} }}] }}\n"
        "[sensors.leak]\n"
        "margin_ppm = 10\nmin_duration_s = 0.3\nend_after_s = 0.5\nbackground_window_s = 10\n"
        f"quiet_store_s = {QUIET_STORE_S}\npretrigger_s = {PRETRIGGER_S}\n"))
    return config


def test_plume_publishes_a_leak_event_and_its_onset_reaches_the_recorder(fleet_emulator, tmp_path, agent_factory):
    emu = fleet_emulator
    recorder = TelemetryRecorder()
    emu.add_component(recorder)
    info = emu.info
    thing = info.device.thing_name
    with MqttClient.for_admin(info) as watcher:
        watcher.subscribe(f"dt/methane/+/{thing}/leak", f"dt/methane/+/{thing}/telemetry")
        agent = agent_factory(leak_config(tmp_path / "agent.toml", info, tmp_path / "state")).start()
        events: list[dict] = []
        readings: dict[int, Reading] = {}
        # Until both events and every reading up to the end (the ring's included) have arrived.
        while len(events) < 2 or not set(range(1, events[1]["seq"] + 1)) <= set(readings):
            msg = watcher.expect(timeout=60)
            if msg.topic.endswith("/leak"):
                assert msg.topic == f"dt/methane/site-1/{thing}/leak" and msg.content_type == "application/json"
                events.append(json.loads(msg.payload))
            else:
                readings.update((r.seq, r) for r in decode(msg.payload, msg.content_type).readings)
    agent.terminate()

    started, ended = events
    assert (started["type"], ended["type"]) == ("started", "ended")
    for e in events:
        assert (e["sensor_id"], e["quantity"], e["site"], e["device"]) == ("sim-1", "methane", "site-1", thing)
        assert e["start_ts_ms"] == started["start_ts_ms"] and isinstance(e["seq"], int)
    assert started["end_ts_ms"] is None and started["duration_s"] is None
    assert ended["end_ts_ms"] > ended["start_ts_ms"]
    assert ended["duration_s"] == round((ended["end_ts_ms"] - ended["start_ts_ms"]) / 1000, 3) <= PLUME_S
    background = ended["background_ppm"]
    assert 0 < background < 10  # the simulated ambient, a few ppm
    assert PEAK_PPM * 0.9 <= ended["peak_ppm"] - background <= PEAK_PPM * 1.05
    assert ended["start_ts_ms"] < ended["peak_ts_ms"] < ended["end_ts_ms"]
    # The integrated excess: a sin^2 plume holds PEAK_PPM * PLUME_S / 2 ppm*s, less its low flanks.
    assert 0.5 * PEAK_PPM * PLUME_S / 2 <= ended["excess_ppm_s"] <= PEAK_PPM * PLUME_S / 2 * 1.1

    # The ring: the readings held back while quiet, committed ahead of the starting reading with
    # new seqs and their own (earlier) time stamps; the recorder has them.
    n_ring = started["pretrigger_readings"]
    ring_seqs = range(started["seq"] - n_ring, started["seq"])
    recorder.wait_for(thing, ring_seqs, timeout=30)
    ring = sorted(readings[s].ts_ms for s in ring_seqs if readings[s].quantity == "methane")
    assert ring and all(started["ts_ms"] - (PRETRIGGER_S + 0.5) * 1000 <= ts < started["ts_ms"] for ts in ring), ring
    # With them the cloud has the onset at the full read rate, not one reading per quiet_store_s:
    # every methane reading of the pre-trigger window up to the start.
    window = sorted(r.ts_ms for r in readings.values() if r.quantity == "methane"
                    and started["ts_ms"] - PRETRIGGER_S * 1000 <= r.ts_ms <= started["ts_ms"])
    assert len(window) >= PRETRIGGER_S / INTERVAL_S / 2, window
    assert max(b - a for a, b in pairwise(window)) < QUIET_STORE_S * 1000 / 2, window
