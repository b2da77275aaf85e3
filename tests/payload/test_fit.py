"""``fit``: never over budget, maximal (one more reading would not fit), and what it packs decodes."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import payload
from agent.payload import Batch, PayloadError
from agent.reading import Reading
from tests.payload.conftest import DEVICE, assert_same_batch, batches, simulated_stream


def _encoded_prefix(readings: list[Reading], n: int, encoding: str) -> bytes:
    first, last = readings[0].seq, readings[n - 1].seq
    return payload.encode(Batch(DEVICE, payload.batch_id(DEVICE, first, last), first, last, readings[:n]), encoding)


def _check(readings: list[Reading], encoding: str, budget: int) -> int:
    data, n = payload.fit(DEVICE, readings, encoding, budget)
    assert 1 <= n <= len(readings)
    assert len(data) <= budget
    assert data == _encoded_prefix(readings, n, encoding)  # fit's payload is encode's payload
    if n < len(readings):
        assert len(_encoded_prefix(readings, n + 1, encoding)) > budget
    first, last = readings[0].seq, readings[n - 1].seq
    want = Batch(DEVICE, payload.batch_id(DEVICE, first, last), first, last, readings[:n])
    assert_same_batch(payload.decode(data), want, exact_nan=encoding == "compact")
    return n


@pytest.mark.parametrize("encoding", payload.ENCODINGS)
@pytest.mark.parametrize("budget", [300, 1000, 5085, 20_000])
def test_fit_on_the_simulated_stream(encoding: str, budget: int, stream: list[Reading]) -> None:
    n = _check(stream, encoding, budget)
    if encoding == "compact" and budget == 5085:
        assert n > 5000  # ~0.7 bytes per reading: the point of the format


@pytest.mark.parametrize("encoding", payload.ENCODINGS)
def test_fit_drains_a_backlog_in_consecutive_maximal_batches(encoding: str) -> None:
    readings = simulated_stream(4000 if encoding == "compact" else 100, seed=7)
    pos = 0
    while pos < len(readings):
        pos += _check(readings[pos:], encoding, 4000)
    assert pos == len(readings)


@pytest.mark.parametrize("encoding", payload.ENCODINGS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(max_readings=60), budget=st.integers(200, 6000))
def test_fit_on_arbitrary_readings(encoding: str, batch: Batch, budget: int) -> None:
    try:
        data, n = payload.fit(batch.device, batch.readings, encoding, budget)
    except PayloadError as exc:
        assert "one reading needs" in str(exc)
        assert len(payload.encode(_single(batch), encoding)) > budget
        return
    assert len(data) <= budget
    if n < len(batch.readings):
        assert len(payload.encode(_prefix(batch, n + 1), encoding)) > budget
    assert_same_batch(payload.decode(data), _prefix(batch, n), exact_nan=encoding == "compact")


def _prefix(batch: Batch, n: int) -> Batch:
    rs = batch.readings[:n]
    return Batch(batch.device, payload.batch_id(batch.device, rs[0].seq, rs[-1].seq), rs[0].seq, rs[-1].seq, rs)


def _single(batch: Batch) -> Batch:
    return _prefix(batch, 1)


def test_fit_when_one_reading_does_not_fit(stream: list[Reading]) -> None:
    with pytest.raises(PayloadError, match=r"one reading needs \d+ bytes in json, over the 100-byte budget"):
        payload.fit(DEVICE, stream, "json", 100)
    with pytest.raises(PayloadError, match="at least one reading"):
        payload.fit(DEVICE, [], "compact", 5000)


def test_fit_survives_a_mid_stream_change_of_scale_and_raw_values(stream: list[Reading]) -> None:
    """Values that need float64 (NaN, 1/3) late in the window must not corrupt earlier prefixes."""
    rs = list(stream[:2000])
    for i in (1500, 1501, 1777):
        r = rs[i]
        v = [math.nan, 1 / 3, 2.125][i % 3]
        rs[i] = Reading(r.seq, r.ts_ms, r.clock_synced, r.sensor_id, r.quantity, v, r.unit)
    for budget in (600, 1100, 1300, 1600):
        _check(rs, "compact", budget)
