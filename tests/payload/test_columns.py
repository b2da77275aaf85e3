"""The columnar decode (what the cloud ingest reads) against the reading-by-reading one: the same
batch, and for a corrupted payload the same error. Its fast paths (one-byte varint columns, gapless
seqs as a range, table-driven Rice blocks, round-robin positions) against their plain forms."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import payload
from agent.payload import Batch, PayloadError, rice
from agent.payload.columns import Columns
from agent.payload.wire import Reader
from agent.reading import Reading
from tests.payload.conftest import DEVICE, batches

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BATCHES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # costly to draw


def _outcome(fn: object, *args: object) -> object:
    try:
        return ("ok", fn(*args))  # type: ignore[operator]
    except PayloadError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize("encoding", payload.ENCODINGS)
@BATCHES
@given(batch=batches())
def test_columns_hold_exactly_the_decoded_readings(encoding: str, batch: Batch) -> None:
    data = payload.encode(batch, encoding)
    cols = payload.decode_columns(data)
    want = payload.decode(data)
    assert (cols.device, cols.batch_id, cols.first_seq, cols.last_seq) == (
        want.device, want.batch_id, want.first_seq, want.last_seq)
    assert len(cols) == len(want.readings)
    got = cols.readings()
    # NaN != NaN: compare the float64 bits through repr-free tuples
    assert [(r.seq, r.ts_ms, r.clock_synced, r.sensor_id, r.quantity, r.unit, r.flags, r.alarm) for r in got] == [
        (r.seq, r.ts_ms, r.clock_synced, r.sensor_id, r.quantity, r.unit, r.flags, r.alarm) for r in want.readings]
    assert [_bits(r.value) for r in got] == [_bits(r.value) for r in want.readings]
    seqs = [r.seq for r in want.readings]
    assert list(cols.seqs) == seqs
    assert isinstance(cols.seqs, range) == (seqs[-1] - seqs[0] == len(seqs) - 1)
    positions = cols.positions()
    for s, key in enumerate(cols.series):
        assert list(positions[s]) == [i for i, r in enumerate(want.readings)
                                      if (r.sensor_id, r.quantity, r.unit) == key]


def _bits(v: float) -> bytes:
    import struct

    return struct.pack("<d", v)


@pytest.fixture(scope="module")
def good(stream: list[Reading]) -> bytes:
    return payload.encode(Batch(DEVICE, payload.batch_id(DEVICE, 1, 400), 1, 400, stream[:400]), "compact")


def _refresh_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


@FUZZ
@given(data=st.data())
def test_corrupted_payload_gives_the_same_error_both_ways(good: bytes, data: st.DataObject) -> None:
    body = bytearray(good[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.just(len(body)), st.integers(5, len(body))))
    bad = _refresh_crc(bytes(body[:cut]))
    by_reading = _outcome(payload.decode, bad)
    by_column = _outcome(lambda b: payload.decode_columns(b).batch(), bad)
    assert by_column == by_reading


@FUZZ
@given(raw=st.binary(max_size=64), n=st.integers(0, 70), start=st.integers(0, 8))
def test_varint_column_fast_path_equals_one_by_one(raw: bytes, n: int, start: int) -> None:
    def one_by_one() -> tuple[list[int], int]:
        rd = Reader(raw, min(start, len(raw)))
        return [rd.varint("column") for _ in range(n)], rd.pos

    def column() -> tuple[list[int], int]:
        rd = Reader(raw, min(start, len(raw)))
        return rd.varints(n, "column"), rd.pos

    assert _outcome(column) == _outcome(one_by_one)


def _block_by_block(data: bytes, count: int) -> tuple[list[int], int]:
    """The plain decoder: every block code by code."""
    br = rice.BitReader(data)
    out: list[int] = []
    for start in range(0, count, rice.BLOCK):
        k = br.fixed(rice.K_BITS)
        br.block(k, min(rice.BLOCK, count - start), out)
    return out, br.pos


def _table_decode(data: bytes, count: int) -> tuple[list[int], int]:
    br = rice.BitReader(data)
    return br.decode(count), br.pos


def _geometric(k: int) -> st.SearchStrategy[list[int]]:
    """Values around 2**k with outliers: every quotient 0..15 and escapes appear."""
    return st.lists(st.one_of(st.integers(0, 2 ** (k + 1)), st.integers(0, 2 ** (k + 5))), max_size=200)


@FUZZ
@given(values=st.one_of(
    st.lists(st.one_of(st.integers(0, 40), st.integers(0, 2**20), st.integers(0, 2**62)), max_size=200),
    st.integers(0, 14).flatmap(_geometric)))
def test_rice_table_decode_equals_code_by_code(values: list[int]) -> None:
    parts: list[str] = []
    rice.encode(values, parts)
    data = rice.to_bytes(parts)
    assert _table_decode(data, len(values)) == _block_by_block(data, len(values)) == (values, len("".join(parts)))


@FUZZ
@given(data=st.binary(max_size=80), count=st.integers(0, 300))
def test_rice_table_decode_of_any_bits_equals_code_by_code(data: bytes, count: int) -> None:
    assert _outcome(_table_decode, data, count) == _outcome(_block_by_block, data, count)


def test_round_robin_channels_give_range_positions(stream: list[Reading]) -> None:
    cols = Columns.of_batch(Batch(DEVICE, "x", 1, 400, stream[:400]))
    assert len(cols.series) == 4
    assert all(isinstance(p, range) for p in cols.positions())
    assert isinstance(cols.seqs, range)


@pytest.mark.parametrize("k", range(rice.LUT_MAX_K + 2))
def test_rice_every_quotient_and_escape_decodes(k: int) -> None:
    """Blocks written bit by bit (not by the encoder, whose parameter choice avoids long codes):
    every quotient 0..15 with the lowest and highest low bits, then an escaped value."""
    values = [(q << k) | low for q in range(rice.ESCAPE) for low in {0, (1 << k) - 1}] + [(16 << k) + 5]
    bits = ""
    for start in range(0, len(values), rice.BLOCK):
        bits += format(k, "06b")
        for x in values[start : start + rice.BLOCK]:
            q = x >> k
            if q < rice.ESCAPE:
                bits += "1" * q + "0" + (format(x & ((1 << k) - 1), f"0{k}b") if k else "")
            else:
                bits += "1" * rice.ESCAPE + format(x.bit_length(), "06b") + format(x, "b")
    data = rice.to_bytes([bits])
    assert _table_decode(data, len(values)) == _block_by_block(data, len(values)) == (values, len(bits))
