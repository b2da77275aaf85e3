"""The ingest core against a real influxd: exactly-once storage per (device, epoch, seq), the
ledger of seq ranges, and the dead-letter path (whole message, reason, never half-written)."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.payload import encode
from agent.payload.batch import Batch
from agent.reading import Reading
from cloud.deadletter import Message, message_of
from cloud.influx import InfluxClient, StoreUnavailable
from cloud.ingest import Ingestor, parse_topic
from tests.cloud.conftest import DEVICE, EPOCH, SITE, T0, TOPIC, count, message, readings

PAYLOADS = Path(__file__).resolve().parent / "payloads"


def test_batch_is_stored_point_per_reading_with_schema(ingestor, client):
    res = ingestor.ingest(message(readings(1, 20)))
    assert (res.status, res.received, res.duplicates) == ("stored", 20, 0)
    assert count(client, "methane") == 10 and count(client, "temperature") == 10
    rows = client.query_one('SELECT * FROM "methane" WHERE "seq" = 11')[0].rows()
    assert rows == [{"time": (T0 + 500 * 11) * 1_000_000 + 11, "alarm": True,
                     "device": DEVICE, "flags": "simulated", "lel_pct": 2.11 / 500, "sensor": "sim-1",
                     "seq": 11, "site": SITE, "unit": "ppm", "value": 2.11}]
    ledger = client.query_one('SELECT * FROM "ingest_batch"')[0].rows()
    assert len(ledger) == 1
    assert ledger[0]["ranges"] == "1-20" and ledger[0]["epoch"] == EPOCH and ledger[0]["encoding"] == "compact"
    assert ledger[0]["batch_id"] == f"{DEVICE}/{EPOCH}:1-20"


@pytest.mark.parametrize("encoding", ["json", "compact"])
def test_resent_batch_changes_no_reading(ingestor, client, encoding):
    msg = message(readings(1, 30), encoding)
    ingestor.ingest(msg)
    before = client.query_one('SELECT * FROM "methane","temperature"')
    again = ingestor.ingest(Message(msg.topic, msg.payload, None, msg.received_ns + 5))
    assert (again.status, again.received, again.duplicates) == ("duplicate", 0, 30)
    assert client.query_one('SELECT * FROM "methane","temperature"') == before
    # A fresh ingestor (a restart: ledger read back from the store) drops it as well.
    fresh = Ingestor(client, ingestor.deadletter)
    third = fresh.ingest(message(readings(1, 30), encoding))
    assert (third.received, third.duplicates) == (0, 30)
    assert client.query_one('SELECT * FROM "methane","temperature"') == before
    sums = client.query_one('SELECT sum("received"), sum("duplicates") FROM "ingest_batch"')[0].values[0]
    assert sums[1:] == [30, 60]


def test_rebatched_overlap_stores_only_the_new_readings(ingestor, client):
    ingestor.ingest(message(readings(1, 20)))
    res = ingestor.ingest(message(readings(11, 40)))  # after a restart the agent re-batched differently
    assert (res.received, res.duplicates) == (20, 10)
    assert count(client, "methane") + count(client, "temperature") == 40
    ranges = [r["ranges"] for r in client.query_one('SELECT "ranges" FROM "ingest_batch"')[0].rows()]
    assert ranges == ["1-20", "21-40"]


def test_same_seq_under_a_new_epoch_is_not_a_duplicate(ingestor, client):
    ingestor.ingest(message(readings(1, 10)))
    res = ingestor.ingest(message(readings(1, 10), epoch="0000beef"))  # spool lost, seqs restart at 1
    assert (res.received, res.duplicates) == (10, 0)


def test_stateless_ledger_sees_other_writers(client, deadletter):
    a = Ingestor(client, deadletter, cache_ledger=False)
    b = Ingestor(client, deadletter, cache_ledger=False)
    a.ingest(message(readings(1, 10)))
    assert b.ingest(message(readings(5, 15))).duplicates == 6


def test_undecodable_batch_goes_whole_to_dead_letter(ingestor, client, deadletter):
    good = message(readings(1, 10))
    bad = Message(TOPIC, good.payload[:-3] + b"xyz", None, 1)
    res = ingestor.ingest(bad)
    assert res.status == "dead_letter" and res.stage == "decode" and "CRC" in res.reason
    (doc,) = deadletter.entries()
    assert doc["stage"] == "decode" and "CRC" in doc["reason"] and doc["topic"] == TOPIC
    assert base64.b64decode(doc["payload_b64"]) == bad.payload and message_of(doc).payload == bad.payload
    assert count(client, "methane") == 0
    assert count(client, "ingest_reject", "bytes") == 1
    # The run goes on: the next good batch is stored.
    assert ingestor.ingest(good).received == 10


def test_device_must_match_the_topic_and_be_known(client, deadletter):
    ing = Ingestor(client, deadletter, known_device=lambda thing: thing == DEVICE)
    spoof = message(readings(1, 4), device="gw-evil")
    assert ing.ingest(spoof).stage == "device"
    unknown = message(readings(1, 4), device="gw-9999", topic="dt/methane/site-1/gw-9999/telemetry")
    res = ing.ingest(unknown)
    assert res.stage == "device" and "unknown device 'gw-9999'" in res.reason
    assert [d["stage"] for d in deadletter.entries()] == ["device", "device"]
    assert count(client, "methane") == 0


def test_batch_id_must_name_device_and_range(ingestor, deadletter):
    rs = readings(1, 4)
    forged = encode(Batch(DEVICE, "gw-0002/0badcafe:1-4", 1, 4, rs), "compact")
    res = ingestor.ingest(Message(TOPIC, forged, None, 1))
    assert res.stage == "envelope" and "does not name device" in res.reason


def test_unwritable_reading_dead_letters_the_batch_before_anything_is_written(ingestor, client):
    rs = readings(1, 6)
    rs[3] = Reading(4, 10**17, True, "sim-1", "temperature", 1.0, "degC")  # year ~3 million: beyond InfluxDB
    res = ingestor.ingest(message(rs))
    assert res.stage == "schema" and "reading seq 4" in res.reason
    assert count(client, "methane") + count(client, "temperature") == 0


def test_partial_write_is_taken_back(ingestor, client, deadletter):
    # Another writer made "temperature"."value" a string in this shard: InfluxDB writes the methane points of the
    # batch and refuses the temperature ones ("partial write").
    client.write([f'temperature,device=other value="warm" {T0 * 1_000_000}'])  # same shard as the batch
    res = ingestor.ingest(message(readings(1, 10)))
    assert res.status == "dead_letter" and res.stage == "store" and "field type conflict" in res.reason
    assert count(client, "methane") == 0  # the half that was written is gone again
    assert count(client, "ingest_batch", "received") == 0
    assert len(deadletter.entries()) == 1


def test_non_finite_value_keeps_its_seq(ingestor, client):
    rs = [Reading(1, T0, True, "s", "methane", math.nan, "ppm"), Reading(2, T0, True, "s", "methane", 3.0, "ppm")]
    assert ingestor.ingest(message(rs)).received == 2
    rows = client.query_one('SELECT "seq", "nonfinite", "value" FROM "methane"')[0].rows()
    assert [(r["seq"], r["nonfinite"], r["value"]) for r in rows] == [(1, "nan", None), (2, None, 3.0)]


def test_same_millisecond_readings_stay_two_points(ingestor, client):
    rs = [Reading(1, T0, False, "s", "methane", 1.0, "ppm"), Reading(2, T0, False, "s", "methane", 2.0, "ppm")]
    ingestor.ingest(message(rs))
    assert count(client, "methane") == 2
    # Sparse marks: an unsynced clock is written, a quiet reading carries no alarm field.
    rows = client.query_one('SELECT "clock_synced", "alarm" FROM "methane"')[0].rows()
    assert [(r["clock_synced"], r["alarm"]) for r in rows] == [(False, None), (False, None)]
    assert count(client, "methane", where='"alarm" = true') == 0


def test_basic_ingest_topic_and_alarm_events(ingestor, client):
    basic = f"$aws/rules/methane_telemetry/{TOPIC}"
    assert parse_topic(basic).thing == DEVICE
    assert ingestor.handle(Message(basic, message(readings(1, 4)).payload, None, 1)).received == 4
    # The agent's own first event of a plume, byte for byte (tests/cloud/capture_payloads.py).
    captured = json.loads((PAYLOADS / "alarm-events.json").read_text())[0]
    event = captured["payload"].encode()
    res = ingestor.handle(Message(f"dt/methane/{SITE}/{DEVICE}/alarm", event, captured["content_type"], 2))
    assert res.status == "stored"
    row = client.query_one('SELECT * FROM "alarm_event"')[0].rows()[0]
    assert (row["type"], row["level"], row["value"], row["threshold"], row["seq"]) == ("raised", "warn", 10.3876,
                                                                                       10.0, 65)
    bad = ingestor.handle(Message(f"dt/methane/{SITE}/{DEVICE}/alarm", b'{"type":"exploded"}', None, 3))
    assert bad.stage == "decode" and "exploded" in bad.reason


def test_store_outage_raises_and_dead_letters_nothing(deadletter):
    dead = InfluxClient("http://127.0.0.1:9", "x", timeout=2)
    with pytest.raises(StoreUnavailable):
        Ingestor(dead, deadletter).ingest(message(readings(1, 4)))
    assert deadletter.entries() == []


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_the_dead_letter_path(influx_server, tmp_path_factory, data):
    from cloud.deadletter import DirDeadLetter

    client = InfluxClient(influx_server.url, "fuzz")
    client.create_database()
    dl = DirDeadLetter(tmp_path_factory.mktemp("dl"))
    res = Ingestor(client, dl).ingest(Message(TOPIC, data, None, 1))
    assert res.status == "dead_letter" and len(dl.entries()) == 1


def test_a_corrupt_ledger_row_dead_letters_instead_of_crashing(ingestor, client, deadletter):
    client.write([f'ingest_batch,device={DEVICE},epoch={EPOCH},site={SITE} ranges="garbage" 1'])
    res = ingestor.ingest(message(readings(1, 4)))
    assert res.stage == "store" and "ledger look-up failed" in res.reason
    assert count(client, "methane") == 0 and len(deadletter.entries()) == 1


def test_site_from_reported_config_tolerates_any_shape():
    from emulator.ingest import _site

    assert _site({"state": {"reported": {"config": {"device": {"site_id": "north-7"}}}}}) == "north-7"
    for bad in ({}, {"state": []}, {"state": {"reported": {"config": "x"}}},
                {"state": {"reported": {"config": {"device": {"site_id": 7}}}}}):
        assert _site(bad) is None
