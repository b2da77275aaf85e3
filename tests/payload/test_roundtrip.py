"""Every encoding gives back exactly what went in, over arbitrary batches."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings

from agent import payload
from agent.payload import Batch, PayloadError
from agent.reading import Reading
from tests.payload.conftest import DEVICE, assert_same_batch, batches


@pytest.mark.parametrize("encoding", payload.ENCODINGS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_round_trip_arbitrary_batches(encoding: str, batch: Batch) -> None:
    data = payload.encode(batch, encoding)
    # Sniffed and by content type: both give the same batch back.
    for got in (payload.decode(data), payload.decode(data, payload.content_type(encoding))):
        assert_same_batch(got, batch, exact_nan=encoding == "compact")


@pytest.mark.parametrize("encoding", payload.ENCODINGS)
def test_simulated_stream_round_trip_and_deterministic(encoding: str, stream: list[Reading]) -> None:
    batch = Batch(DEVICE, payload.batch_id(DEVICE, 1, 240), 1, 240, stream[:240])
    data = payload.encode(batch, encoding)
    assert payload.decode(data) == batch
    assert payload.encode(batch, encoding) == data  # a resend is byte-identical


def test_batch_id_is_deterministic_and_distinct() -> None:
    assert payload.batch_id("gw-1", 1, 240) == payload.batch_id("gw-1", 1, 240)
    ids = {payload.batch_id("gw-1", 1, 240), payload.batch_id("gw-1", 1, 241), payload.batch_id("gw-2", 1, 240)}
    assert len(ids) == 3


def test_json_is_readable_by_rules_sql(stream: list[Reading]) -> None:
    import json

    batch = Batch(DEVICE, payload.batch_id(DEVICE, 1, 4), 1, 4, stream[:4])
    doc = json.loads(payload.encode(batch, "json"))
    assert doc["v"] == 1 and doc["device"] == DEVICE and doc["count"] == 4
    assert doc["readings"][0] == {
        "seq": 1,
        "ts_ms": stream[0].ts_ms,
        "clock_synced": True,
        "sensor_id": "sim-1",
        "quantity": "methane",
        "value": stream[0].value,
        "unit": "ppm",
        "flags": ["simulated"],
        "alarm": False,
    }


def test_json_carries_non_finite_values_as_strings() -> None:
    rs = [Reading(i + 1, 0, True, "s", "q", v, "u") for i, v in enumerate([math.nan, math.inf, -math.inf])]
    data = payload.encode(Batch("d", payload.batch_id("d", 1, 3), 1, 3, rs), "json")
    assert b'"value":"NaN"' in data and b'"value":"Infinity"' in data and b'"value":"-Infinity"' in data
    got = payload.decode(data).readings
    assert math.isnan(got[0].value) and got[1].value == math.inf and got[2].value == -math.inf


def _r(seq: int, **kw: object) -> Reading:
    base: dict[str, object] = dict(seq=seq, ts_ms=0, clock_synced=True, sensor_id="s", quantity="q", unit="u")
    base["value"] = 1.0
    base.update(kw)
    return Reading(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", payload.ENCODINGS)
@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (Batch("d", "b", 1, 2, []), "at least one reading"),
        (Batch("", "b", 1, 2, [_r(1)]), "device"),
        (Batch("d", "b", 5, 2, [_r(3)]), "after last_seq"),
        (Batch("d", "b", 1, 9, [_r(3), _r(2)]), "does not increase"),
        (Batch("d", "b", 1, 9, [_r(3), _r(3)]), "does not increase"),
        (Batch("d", "b", 4, 9, [_r(3)]), "outside"),
        (Batch("d", "b", 1, 9, [_r(3, ts_ms=2**63)]), "ts_ms"),
        (Batch("d", "b", 1, 9, [_r(3, value="1.0")]), "value"),
        (Batch("d", "b", 1, 9, [_r(3, value=10**400)]), "64-bit float"),
        (Batch("d", "b", 1, 9, [_r(3, sensor_id="\ud800")]), "Unicode"),
        (Batch("d", "b", 1, 9, [_r(3, flags=["x"])]), "flags"),
        (Batch("d", "b", 1, 9, [_r(True)]), "seq"),
        (Batch("d", "b", -1, 9, [_r(3)]), "first_seq"),
    ],
)
def test_bad_batches_are_rejected_with_a_reason(encoding: str, batch: Batch, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        payload.encode(batch, encoding)


def test_unknown_encoding_and_content_type() -> None:
    with pytest.raises(PayloadError, match="unknown encoding 'cbor'"):
        payload.content_type("cbor")
    with pytest.raises(PayloadError, match="unsupported content type"):
        payload.decode(b"{}", "text/plain")


def test_content_types_and_parameters() -> None:
    assert payload.content_type("json") == "application/vnd.methane.batch.v1+json"
    assert payload.encoding_of("application/vnd.methane.batch-compact.v1") == "compact"
    assert payload.encoding_of("Application/VND.methane.batch.v1+json; charset=utf-8") == "json"
