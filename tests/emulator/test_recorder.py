from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from awscrt import mqtt5
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.payload import content_type, encode
from agent.payload.batch import make_batch
from agent.reading import Reading
from emulator.recorder import DB_FILE, TelemetryStore
from tests.mqtt_client import MqttClient

REPO = Path(__file__).resolve().parents[2]


def _payload(device: str, seqs, encoding: str = "compact") -> bytes:
    readings = [Reading(s, 1_700_000_000_000 + s, True, "ch4", "methane", 1.5 + s, "ppm") for s in seqs]
    return encode(make_batch(device, readings), encoding)


def _send(client: MqttClient, topic: str, device: str, seqs, encoding: str = "compact") -> None:
    ack = client.publish(topic, _payload(device, seqs, encoding), content_type=content_type(encoding))
    assert ack.reason_code in (mqtt5.PubackReasonCode.SUCCESS, mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS)


def test_recorder_counts_seqs_duplicates_and_gaps(emulator, telemetry):
    info = emulator.info
    thing = info.device.thing_name
    topic = f"dt/methane/site-1/{thing}/telemetry"
    with MqttClient.for_device(info) as dev:
        _send(dev, topic, thing, range(1, 11))
        _send(dev, topic, thing, range(11, 21), "json")
        _send(dev, topic, thing, range(11, 21))  # resend after a "lost" PUBACK
        _send(dev, topic, thing, range(31, 41))  # 21..30 never sent
    telemetry.wait_for(thing, [*range(1, 21), *range(31, 41)])
    telemetry.flush()
    assert telemetry.received(thing) == set(range(1, 21)) | set(range(31, 41))
    assert telemetry.duplicates(thing) == 10
    assert telemetry.gaps(thing) == [(21, 30)]
    assert telemetry.gaps(thing, upto=45) == [(21, 30), (41, 45)]
    assert telemetry.received("gw-other") == set()


def test_recorder_records_basic_ingest_and_survives_bad_payloads(emulator, telemetry):
    info = emulator.info
    thing = info.device.thing_name
    with MqttClient.for_device(info) as dev:
        dev.publish(f"dt/methane/site-1/{thing}/telemetry", b"\x00not a batch")
        _send(dev, f"$aws/rules/methane_ingest/dt/methane/site-1/{thing}/telemetry", thing, [1, 2, 3])
    telemetry.wait_for(thing, [1, 2, 3])
    telemetry.flush()
    rejects = telemetry.rejects()
    assert len(rejects) == 1 and rejects[0][0] == f"dt/methane/site-1/{thing}/telemetry"


def test_recorder_resubscribes_after_broker_restart(emulator, telemetry):
    info = emulator.info
    thing = info.device.thing_name
    topic = f"dt/methane/site-1/{thing}/telemetry"
    with MqttClient.for_device(info) as dev:
        _send(dev, topic, thing, [1])
        telemetry.wait_for(thing, [1])
        emulator.broker.restart()
        dev.wait_connections(2, timeout=30)
        # The recorder reconnects on its own schedule; publish until a message lands (bounded).
        seq = 2
        while seq < 200:
            _send(dev, topic, thing, [seq])
            try:
                telemetry.wait_for(thing, [seq], timeout=0.5)
                break
            except TimeoutError:
                seq += 1
        assert seq < 200, "recorder never received anything after the restart"
    assert telemetry.received(thing) >= {1, seq}


def test_telemetry_command_reports_from_the_state_dir(emulator, telemetry):
    info = emulator.info
    thing = info.device.thing_name
    with MqttClient.for_device(info) as dev:
        _send(dev, f"dt/methane/s/{thing}/telemetry", thing, [1, 2, 5])
    telemetry.wait_for(thing, [1, 2, 5])
    telemetry.flush()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base = [sys.executable, "-m", "agent.cli", "emulator", "telemetry", "--state-dir", str(info.state_dir)]
    out = subprocess.run([*base, "--thing", thing, "--json", "--upto", "6"], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    summary = json.loads(out)
    assert summary["received"] == 3 and summary["gaps"] == [[3, 4], [6, 6]] and summary["duplicates"] == 0
    text = subprocess.run([*base, "--thing", thing], capture_output=True, text=True, env=env, timeout=60,
                          check=True).stdout
    assert "received=3" in text and "gaps=3-4" in text
    missing = subprocess.run([*base[:-1], str(info.state_dir / "nope"), "--thing", thing], capture_output=True,
                             text=True, env=env, timeout=60)
    assert missing.returncode == 1 and "no telemetry recorded" in missing.stderr


@settings(max_examples=80, deadline=None)
@given(st.sets(st.integers(1, 200), max_size=60), st.integers(0, 220))
def test_gaps_and_received_partition_the_range(tmp_path_factory, seqs, upto):
    store = TelemetryStore(tmp_path_factory.mktemp("rec") / DB_FILE)
    try:
        if seqs:  # one batch holding exactly these seqs, recorded as a message from the broker
            store.record("dt/methane/s/t/telemetry", _payload("t", sorted(seqs)), content_type("compact"), 0.0)
        gaps = store.gaps("t", upto)
        covered = {s for a, b in gaps for s in range(a, b + 1)}
        assert covered.isdisjoint(seqs)
        assert covered | {s for s in seqs if s <= upto} == set(range(1, upto + 1))
        assert all(a <= b for a, b in gaps) and gaps == sorted(gaps)
        assert all(b + 1 < c for (_, b), (c, _) in itertools.pairwise(gaps))  # maximal ranges
    finally:
        store.close()


def test_store_readonly_refuses_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no telemetry recorded"):
        TelemetryStore(tmp_path / DB_FILE, readonly=True)
