"""A real influxd (Debian's influxdb package) per test worker, a fresh database per test, and
telemetry batches built with the agent's own encoder."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest

from agent.payload import encode
from agent.payload.batch import make_batch
from agent.reading import Reading
from cloud.deadletter import DirDeadLetter, Message
from cloud.influx import InfluxClient
from cloud.ingest import Ingestor
from cloud.localstore import LocalInflux

DEVICE = "gw-0001"
SITE = "site-1"
TOPIC = f"dt/methane/{SITE}/{DEVICE}/telemetry"
EPOCH = "0badcafe"
T0 = 1_700_000_000_000


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory) -> Iterator[LocalInflux]:
    with LocalInflux(tmp_path_factory.mktemp("influx")) as server:
        yield server


@pytest.fixture
def client(influx_server) -> InfluxClient:
    c = InfluxClient(influx_server.url, f"t_{uuid.uuid4().hex[:12]}")
    c.create_database()
    return c


@pytest.fixture
def deadletter(tmp_path) -> DirDeadLetter:
    return DirDeadLetter(tmp_path / "deadletter")


@pytest.fixture
def ingestor(client, deadletter) -> Ingestor:
    return Ingestor(client, deadletter)


def readings(first: int, last: int, sensor: str = "sim-1", skip: frozenset[int] = frozenset()) -> list[Reading]:
    """Two channels per second (methane ppm, temperature); seq first..last."""
    out = []
    for seq in range(first, last + 1):
        if seq in skip:
            continue
        methane = seq % 2 == 1
        out.append(Reading(seq, T0 + 500 * seq, True, sensor, "methane" if methane else "temperature",
                           2.0 + seq / 100 if methane else 21.5, "ppm" if methane else "degC",
                           ("simulated",), methane and seq % 10 == 1))
    return out


_ns = itertools.count(1_800_000_000_000_000_000)


def message(rs: list[Reading], encoding: str = "compact", device: str = DEVICE, topic: str = TOPIC,
            epoch: str = EPOCH) -> Message:
    return Message(topic, encode(make_batch(device, rs, epoch), encoding), None, next(_ns))


def count(client: InfluxClient, measurement: str, field: str = "seq", where: str = "") -> int:
    series = client.query_one(f'SELECT count("{field}") FROM "{measurement}"' + (f" WHERE {where}" if where else ""))
    return int(series[0].values[0][1]) if series else 0
