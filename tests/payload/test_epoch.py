"""An epoch-qualified batch id survives both encodings, and costs compact only the id's bytes."""

from __future__ import annotations

import pytest

from agent import payload
from agent.reading import Reading


def readings(n: int) -> list[Reading]:
    return [Reading(i + 1, 1_700_000_000_000 + i * 1000, True, "s1", "methane", 2.0 + i / 100, "ppm") for i in range(n)]


@pytest.mark.parametrize("encoding", payload.ENCODINGS)
def test_epoch_batch_id_round_trips(encoding):
    body, n = payload.fit("gw-1", readings(300), encoding, 5000, epoch="1a2b3c4d")
    batch = payload.decode(body, payload.content_type(encoding))
    assert batch.batch_id == f"gw-1/1a2b3c4d:1-{n}"
    assert [r.seq for r in batch.readings] == list(range(1, n + 1))
    plain, n2 = payload.fit("gw-1", readings(n), encoding, 5000)
    assert payload.decode(plain).batch_id == f"gw-1/1-{n2}"


def test_epoch_costs_compact_only_the_id_bytes():
    rs = readings(240)
    with_epoch, _ = payload.fit("gw-1", rs, "compact", 100_000, epoch="1a2b3c4d")
    without, _ = payload.fit("gw-1", rs, "compact", 100_000)
    assert 0 < len(with_epoch) - len(without) <= len("gw-1/1a2b3c4d:1-240") + 2
