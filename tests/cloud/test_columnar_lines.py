"""The ingest's columnar path (``decode_columns`` -> ``schema.reading_lines``) against the plain
per-reading one (``decode`` -> one ``lineproto.line`` per Reading, written out below as the
reference): exactly the same points for arbitrary batches, de-duplication masks included, and the
same error naming the same first reading when a batch cannot be written."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import payload
from agent.payload import Batch
from agent.payload.columns import Columns
from agent.reading import Reading
from cloud import lineproto, schema
from cloud.lineproto import FieldValue, LineProtocolError
from cloud.seqranges import SeqRanges, new_readings
from tests.payload.conftest import values

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = 1_790_000_000_000
REAL_SERIES = [("sim-1", "methane", "ppm"), ("sim-1", "methane_lel", "%LEL"), ("sim-1", "temperature", "degC"),
               ("s 2", "methane", "ppm")]
odd_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=6)


def per_reading_lines(batch: Batch, site: str, keep: list[bool] | None, lel_vol_percent: float) -> list[str]:
    """The schema as the docstring of cloud/schema.py states it, one point at a time."""
    out = []
    for i, r in enumerate(batch.readings):
        if keep is not None and not keep[i]:
            continue
        try:
            head = lineproto.measurement(r.quantity) + lineproto.tags(
                {"site": site, "device": batch.device, "sensor": r.sensor_id, "unit": r.unit})
            fields: dict[str, FieldValue] = {}
            if math.isfinite(r.value):
                fields["value"] = r.value
                if (r.quantity, r.unit) == ("methane", "ppm"):
                    fields["lel_pct"] = r.value / (lel_vol_percent * 100.0)
            else:
                fields["nonfinite"] = repr(r.value)
            fields["seq"] = r.seq
            if r.alarm:
                fields["alarm"] = True
            if not r.clock_synced:
                fields["clock_synced"] = False
            if r.flags:
                fields["flags"] = ",".join(r.flags)
            text = lineproto.fields(fields)
        except LineProtocolError as exc:
            raise LineProtocolError(f"reading seq {r.seq}: {exc}") from None
        ns = schema.point_ns(r.ts_ms, r.seq)
        if not lineproto.MIN_NS <= ns <= lineproto.MAX_NS:
            raise LineProtocolError(f"reading seq {r.seq}: ts_ms {r.ts_ms} is outside InfluxDB's time range")
        out.append(f"{head} {text} {ns}")
    return out


@st.composite
def gas_batches(draw: st.DrawFn) -> Batch:
    """Mostly realistic batches (so most are writable), with odd names, flags, gaps, clock jumps,
    non-finite values and timestamps beyond InfluxDB's range mixed in."""
    n = draw(st.integers(1, 60))
    series = draw(st.lists(st.one_of(st.sampled_from(REAL_SERIES), st.tuples(odd_text, odd_text, odd_text)),
                           min_size=1, max_size=5))
    flagsets = draw(st.lists(st.one_of(st.sampled_from([(), ("simulated",), ("warming_up", "stale")]),
                                       st.lists(odd_text, max_size=2).map(tuple)), min_size=1, max_size=3))
    round_robin = draw(st.booleans())
    seq = draw(st.integers(0, 2**40))
    ts = draw(st.one_of(st.just(T0), st.integers(-(2**62), 2**62)))
    readings = []
    for i in range(n):
        seq += 1 + draw(st.sampled_from([0, 0, 0, 1, 7]))
        ts += draw(st.sampled_from([0, 0, 1000, -5, 10**7]))
        key = series[i % len(series)] if round_robin else draw(st.sampled_from(series))
        readings.append(Reading(seq, ts, draw(st.booleans()), key[0], key[1], draw(values), key[2],
                                draw(st.sampled_from(flagsets)), draw(st.booleans())))
    device = draw(st.sampled_from(["gw-0001", "gw 2,x=y", "gw\\"]))
    return Batch(device, payload.batch_id(device, readings[0].seq, readings[-1].seq), readings[0].seq,
                 readings[-1].seq, readings)


def _lines_or_error(fn: object, *args: object) -> tuple[str, object]:
    try:
        return ("lines", sorted(fn(*args)))  # type: ignore[operator]
    except LineProtocolError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize("encoding", payload.ENCODINGS)
@FUZZ
@given(batch=gas_batches(), site=st.sampled_from(["site-1", "a b", ""]), lel=st.sampled_from([5.0, 4.4]),
       data=st.data())
def test_columnar_points_equal_per_reading_points(encoding: str, batch: Batch, site: str, lel: float,
                                                  data: st.DataObject) -> None:
    raw = payload.encode(batch, encoding)
    n = len(batch.readings)
    keep = data.draw(st.one_of(st.none(), st.lists(st.booleans(), min_size=n, max_size=n)))
    want = _lines_or_error(per_reading_lines, payload.decode(raw), site, keep, lel)
    got = _lines_or_error(schema.reading_lines, payload.decode_columns(raw), site, keep, lel)
    assert got == want


@FUZZ
@given(seqs=st.lists(st.integers(0, 60), min_size=1, max_size=40, unique=True).map(sorted),
       seen=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 8)), max_size=4))
def test_new_readings_by_range_equal_per_reading(seqs: list[int], seen: list[tuple[int, int]]) -> None:
    ledger = SeqRanges((a, a + w) for a, w in seen)
    col = Columns.of_batch(Batch("d", "d/x", seqs[0], seqs[-1], [
        Reading(s, T0, True, "s", "q", 1.0, "u") for s in seqs])).seqs
    fresh, keep = new_readings(col, ledger)
    want = [s not in ledger for s in seqs]
    assert (keep if keep is not None else [True] * len(seqs)) == want
    assert sorted(s for a, b in fresh for s in range(a, b + 1)) == [s for s, k in zip(seqs, want) if k]


def test_simulated_stream_lines_are_the_per_reading_lines() -> None:
    from tests.payload.conftest import simulated_stream

    rs = simulated_stream(600)
    batch = Batch("gw-0001", payload.batch_id("gw-0001", 1, len(rs), "0badcafe"), 1, len(rs), rs)
    raw = payload.encode(batch, "compact")
    cols = payload.decode_columns(raw)
    assert isinstance(cols.seqs, range) and all(isinstance(p, range) for p in cols.positions())
    assert sorted(schema.reading_lines(cols, "site-1")) == sorted(
        per_reading_lines(payload.decode(raw), "site-1", None, schema.DEFAULT_LEL_VOL_PERCENT))
