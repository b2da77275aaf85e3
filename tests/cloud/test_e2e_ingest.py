"""The local twin end to end: agent -> emulator (``emulator serve --ingest``, a subprocess, as a user
runs it) -> ingest -> InfluxDB -> ``cloud completeness``: no gap; a replayed batch is not counted
twice; a malformed batch goes to the dead-letter path with its reason and writes nothing."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from cloud.influx import InfluxClient
from emulator.state import EmulatorInfo
from tests.e2e.conftest import ROOT, agent_factory, write_config  # noqa: F401 - fixture
from tests.eventually import eventually
from tests.mqtt_client import MqttClient


def _completeness(ingest: dict, thing: str, *extra: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "cloud", "completeness", "--influx-url", ingest["influx_url"],
         "--database", ingest["database"], "--thing", thing, "--json", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def served(tmp_path):
    state = tmp_path / "emu"
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "agent", "emulator", "serve", "--state-dir", str(state),
                                 "--ingest"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        def ready():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return "ingest" in json.loads((state / "emulator.json").read_text())
            except (OSError, ValueError):
                return False

        eventually(ready, 60, 0.1, what="emulator serve --ingest ready")
        yield proc, state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_agent_to_store_no_gap_replay_and_dead_letter(served, agent_factory, tmp_path):  # noqa: F811
    proc, state = served
    doc = json.loads((state / "emulator.json").read_text())
    ingest = doc["ingest"]
    assert set(ingest) == {"influx_url", "database"} and ingest["database"] == "methane"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", ingest["influx_url"])
    info = EmulatorInfo.load(state)
    thing = info.device.thing_name
    store = InfluxClient(ingest["influx_url"], ingest["database"])

    with MqttClient.for_admin(info) as spy:
        spy.subscribe("dt/methane/+/+/telemetry")
        config = write_config(tmp_path / "agent.toml", info, tmp_path / "state")
        agent = agent_factory(config).start()
        agent.wait_status(lambda s: s["uplink"].get("readings_acked", 0) >= 200, timeout=60)
        rc, _ = agent.terminate()
        assert rc == 0
        captured = spy.expect(10)

    def settled():  # the agent has stopped; wait until the ingest has stored all it was sent
        first = _completeness(ingest, thing)
        time.sleep(1)
        return first["received"] >= 200 and first == _completeness(ingest, thing) and first

    rep = eventually(settled, 60, 0.1, what="readings stored")
    last_seq = _ledger_last(store, thing)
    assert rep["gaps"] == [] and rep["duplicates_dropped"] == 0
    assert rep["received"] == rep["expected"] == last_seq
    # Up the whole time it ran: every 10 s bucket up to its last stored reading holds readings (not up
    # to now: a loaded machine may put now, or the unsent tail of the spool, in a later, empty bucket).
    last = datetime.fromtimestamp(rep["last_reading_ns"] / 1e9, UTC).isoformat()
    assert _completeness(ingest, thing, "--until", last, "--bucket-s", "10")["uptime_fraction"] == 1.0
    n_points = sum(s.values[0][1] for s in store.query_one('SELECT count("seq") FROM "methane","temperature",'
                                                           '"humidity","pressure"'))
    assert n_points == rep["received"]

    # The same bytes again (a resend after a lost PUBACK): nothing new is stored.
    replayed = len(_readings(captured.payload))
    with MqttClient.for_device(info) as dev:
        dev.publish(captured.topic, captured.payload)
        again = eventually(lambda: (r := _completeness(ingest, thing))["duplicates_dropped"] == replayed and r, 30,
                           0.1, what="replay counted")
        assert again["received"] == rep["received"] and again["gaps"] == []

        # A malformed batch: whole to the dead-letter folder with its reason, nothing written.
        bad = captured.payload[:-4] + b"\x00\x00\x00\x00"
        dev.publish(captured.topic, bad)
        dead = eventually(lambda: sorted((state / "ingest" / "deadletter").glob("*.json")), 30, 0.1, what="dead letter")
    letter = json.loads(dead[0].read_text())
    assert letter["stage"] == "decode" and "CRC" in letter["reason"] and letter["topic"] == captured.topic
    final = _completeness(ingest, thing)
    assert final["received"] == rep["received"] and final["rejected_messages"] == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def _ledger_last(store: InfluxClient, thing: str) -> int | None:
    series = store.query_one(f"SELECT max(\"last_seq\") FROM \"ingest_batch\" WHERE \"device\" = '{thing}'")
    return int(series[0].values[0][1]) if series else None


def _readings(payload: bytes) -> list:
    from agent.payload import decode

    return decode(payload).readings
