"""Streams and hypothesis strategies shared by the payload tests."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import strategies as st

from agent.payload import Batch, batch_id
from agent.reading import Reading
from drivers.base import SIMULATED
from drivers.simulated import SimulatedDriver, SimulatedSettings

DEVICE = "gw-0001"
T0 = 1_700_000_000_000


def simulated_stream(seconds: int, seed: int = 0, sensor_id: str = "sim-1") -> list[Reading]:
    """The issue's reference stream: 4 channels at 1 Hz, seq 1..N, ts 1000 ms apart."""
    driver = SimulatedDriver(SimulatedSettings(seed=seed))
    out: list[Reading] = []
    seq = 1
    for s in range(seconds):
        for m in driver.read():
            flags = tuple(sorted(m.flags))
            assert SIMULATED in flags
            out.append(Reading(seq, T0 + 1000 * s, True, sensor_id, m.quantity, m.value, m.unit, flags, False))
            seq += 1
    return out


@pytest.fixture(scope="session")
def stream() -> list[Reading]:
    return simulated_stream(3000)


def bits(v: float) -> bytes:
    return struct.pack("<d", v)


def same_value(a: float, b: float, *, exact_nan: bool) -> bool:
    if exact_nan:
        return bits(a) == bits(b)
    if math.isnan(a):
        return math.isnan(b)
    return bits(a) == bits(b)


def assert_same_batch(got: Batch, want: Batch, *, exact_nan: bool = True) -> None:
    assert (got.device, got.batch_id, got.first_seq, got.last_seq) == (
        want.device,
        want.batch_id,
        want.first_seq,
        want.last_seq,
    )
    assert len(got.readings) == len(want.readings)
    for g, w in zip(got.readings, want.readings, strict=True):
        assert type(g.value) is float
        assert same_value(g.value, float(w.value), exact_nan=exact_nan), (g, w)
        assert (g.seq, g.ts_ms, g.clock_synced, g.sensor_id, g.quantity, g.unit, g.flags, g.alarm) == (
            w.seq,
            w.ts_ms,
            w.clock_synced,
            w.sensor_id,
            w.quantity,
            w.unit,
            w.flags,
            w.alarm,
        )


# ---------------------------------------------------------------- strategies

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
EXTREMES = [
    0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 5e-324, -5e-324, 2.2250738585072014e-308,
    1.7976931348623157e308, -1.7976931348623157e308, 1e16, 9007199254740993.0, 0.1, 1 / 3, 1e-5,
    123456789.123, -2.5, 0.00012345678901234567, 2.0**60, 1e23,
    struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0],  # NaN with payload bits
]  # fmt: skip
values = st.one_of(
    st.floats(),
    st.integers(-(10**9), 10**9).map(lambda k: k / 100),
    st.integers(-(10**6), 10**6).map(float),
    st.sampled_from(EXTREMES),
)


@st.composite
def batches(draw: st.DrawFn, max_readings: int = 40) -> Batch:
    n = draw(st.integers(1, max_readings))
    start = draw(st.one_of(st.integers(0, 10), st.integers(0, 2**63 - 1 - 10**6)))
    gaps = draw(st.lists(st.one_of(st.just(0), st.integers(0, 3), st.integers(0, 10**5)), min_size=n, max_size=n))
    seqs = []
    seq = start - 1
    for g in gaps:
        seq = seq + 1 + g
        seqs.append(seq)
    series = draw(st.lists(st.tuples(text, text, text), min_size=1, max_size=5))
    flagsets = draw(st.lists(st.lists(text, max_size=3).map(tuple), min_size=1, max_size=3))
    ts0 = draw(st.integers(-(2**62), 2**62))
    readings = []
    ts = ts0
    for s in seqs:
        ts += draw(st.one_of(st.sampled_from([0, 1000]), st.integers(-(10**9), 10**9)))
        sid, qty, unit = draw(st.sampled_from(series))
        readings.append(
            Reading(
                seq=s,
                ts_ms=ts,
                clock_synced=draw(st.booleans()),
                sensor_id=sid,
                quantity=qty,
                value=draw(values),
                unit=unit,
                flags=draw(st.sampled_from(flagsets)),
                alarm=draw(st.booleans()),
            )
        )
    device = draw(st.text(min_size=1, max_size=20).filter(lambda t: all(not 0xD800 <= ord(c) <= 0xDFFF for c in t)))
    first = seqs[0] - draw(st.sampled_from([0, 0, 1, 100]))
    last = seqs[-1] + draw(st.sampled_from([0, 0, 1, 100]))
    first = max(0, first)
    last = min(2**63 - 1, last)
    bid = draw(st.one_of(st.just(batch_id(device, first, last)), text.filter(bool)))
    return Batch(device, bid, first, last, readings)
