"""The completeness report from the ledger in a real influxd: gaps by (epoch, seq), evictions,
duplicates, uptime; and the CLI's pinned JSON."""

from __future__ import annotations

import json

import pytest

from agent.cli import main
from cloud.completeness import device_report, parse_time
from tests.cloud.conftest import DEVICE, EPOCH, SITE, T0, message, readings


def test_gaps_duplicates_and_evictions(ingestor, client):
    ingestor.ingest(message(readings(1, 10)))
    ingestor.ingest(message(readings(1, 10)))  # resent
    ingestor.ingest(message(readings(21, 30, skip=frozenset({24, 25}))))  # 11..20 lost, 24..25 evicted
    ingestor.ingest(message(readings(1, 5), epoch="00000002"))
    rep = device_report(client, DEVICE, now_ns=(T0 + 500 * 30) * 1_000_000)
    assert rep.site == SITE
    assert rep.gaps == [[EPOCH, 11, 20], [EPOCH, 24, 25]]
    assert rep.evicted == [[EPOCH, 24, 25]]
    assert (rep.expected, rep.received, rep.missing, rep.duplicates_dropped) == (35, 23, 12, 10)
    assert rep.epochs == ["00000002", EPOCH] and rep.batches == 4


def test_uptime_counts_buckets_with_readings(ingestor, client):
    ingestor.ingest(message(readings(1, 240)))  # 2 readings/s from T0+0.5s: two minutes of data
    end = T0 + 240_000 + 4 * 60_000  # then four silent minutes
    rep = device_report(client, DEVICE, now_ns=end * 1_000_000, bucket_s=60)
    start_bucket, end_bucket = (T0 + 500) // 60_000, end // 60_000
    busy = len({(T0 + 500 * s) // 60_000 for s in range(1, 241)})
    assert rep.uptime_fraction == round(busy / (end_bucket - start_bucket + 1), 6)
    assert 0 < rep.uptime_fraction < 1


def test_parse_time():
    assert parse_time("2026-11-29T20:00:00Z") == 1_795_982_400 * 10**9
    assert parse_time("15m", now_ns=10**12) == 10**12 - 900 * 10**9
    with pytest.raises(ValueError, match="no time zone"):
        parse_time("2026-11-29T20:00:00")


def test_cli_json_holds_the_pinned_keys(ingestor, client, influx_server, capsys):
    ingestor.ingest(message(readings(1, 10)))
    ingestor.ingest(message(readings(14, 20)))
    ingestor.ingest(message(readings(14, 20)))
    rc = main(["cloud", "completeness", "--influx-url", influx_server.url, "--database", client.database,
               "--thing", DEVICE, "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["thing"] == DEVICE and doc["received"] == 17 and doc["duplicates_dropped"] == 7
    assert doc["gaps"] == [[EPOCH, 11, 13]] and doc["expected"] == 20
    rc = main(["cloud", "completeness", "--influx-url", influx_server.url, "--database", client.database,
               "--site", SITE])
    out = capsys.readouterr().out
    assert rc == 0 and "received 17" in out and f"{EPOCH}:11-13" in out


def test_cli_errors(capsys):
    assert main(["cloud", "completeness", "--influx-url", "http://127.0.0.1:9", "--database", "m"]) == 2
    assert "--thing or --site" in capsys.readouterr().err
    assert main(["cloud", "completeness", "--influx-url", "ftp://x", "--database", "m", "--thing", "t"]) == 2
    assert main(["cloud", "completeness", "--influx-url", "http://127.0.0.1:9", "--database", "m",
                 "--thing", "t"]) == 1
    assert "127.0.0.1:9" in capsys.readouterr().err
