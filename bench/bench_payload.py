"""Payload benchmark: bytes per reading, billed IoT Core message units, and CPU per reading for
every encoding we ship and every candidate we measured before choosing ``compact``.

Stream: ``drivers.simulated.SimulatedDriver`` with its defaults (4 channels, 1 Hz), seq 1..N,
timestamps 1000 ms apart. Billing: IoT Core meters (payload + topic) per started 5120 bytes; the
topic is ``dt/methane/site-1/gw-0001/telemetry``. The naive baseline publishes one JSON message per
reading, as the AWS SDK samples do.

    .venv/bin/python -m bench.bench_payload [--seconds 30000] [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
import zlib
from collections.abc import Callable, Sequence

import zstandard

from agent import payload
from agent.payload import Batch, compact
from agent.payload.wire import put_varint, zigzag
from agent.reading import Reading
from drivers.simulated import SimulatedDriver, SimulatedSettings

TOPIC = "dt/methane/site-1/gw-0001/telemetry"
UNIT = 5120
DEVICE = "gw-0001"
BUDGET = UNIT - len(TOPIC)
# A compact 5 KB batch holds ~6,600 readings: --quick must still fill several of them.
QUICK_SECONDS = 6000


def stream(seconds: int) -> list[Reading]:
    driver = SimulatedDriver(SimulatedSettings())
    out: list[Reading] = []
    for s in range(seconds):
        for m in driver.read():
            out.append(
                Reading(len(out) + 1, 1_700_000_000_000 + 1000 * s, True, "sim-1", m.quantity, m.value, m.unit,
                        tuple(sorted(m.flags)), False)
            )  # fmt: skip
    return out


def units(size: int) -> int:
    return math.ceil((size + len(TOPIC)) / UNIT)


# ---------------------------------------------------------------- candidates (not shipped)


def naive_message(r: Reading) -> bytes:
    """One reading per message, the way SDK samples publish: readable keys, ISO-less epoch ms."""
    return json.dumps(
        {"device": DEVICE, "seq": r.seq, "timestamp": r.ts_ms, "clock_synced": r.clock_synced,
         "sensor_id": r.sensor_id, "quantity": r.quantity, "value": r.value, "unit": r.unit,
         "flags": list(r.flags), "alarm": r.alarm}
    ).encode()


def columnar_varint(batch: Batch) -> bytes:
    """The layout the issue sketched: series dictionary, per-reading index, ts and value deltas as
    zigzag varints (values per series as scaled integers at the simulated 0.01 resolution)."""
    out = bytearray()
    series: dict[tuple[str, str, str], int] = {}
    for r in batch.readings:
        series.setdefault((r.sensor_id, r.quantity, r.unit), len(series))
    for key in series:
        out += ("\x00".join(key) + "\x01").encode()
    put_varint(out, batch.first_seq)
    put_varint(out, len(batch.readings))
    prev_ts = 0
    prev_val = [0] * len(series)
    cols: list[bytearray] = [bytearray(), bytearray(), bytearray(), bytearray()]
    for r in batch.readings:
        i = series[(r.sensor_id, r.quantity, r.unit)]
        cols[0].append(i)
        cols[1].append(r.clock_synced | r.alarm << 1)
        put_varint(cols[2], zigzag(r.ts_ms - prev_ts))
        k = round(r.value * 100)
        put_varint(cols[3], zigzag(k - prev_val[i]))
        prev_ts, prev_val[i] = r.ts_ms, k
    for c in cols:
        out += c
    return bytes(out)


_ZSTD19 = zstandard.ZstdCompressor(level=19, write_checksum=False, write_content_size=False)
_ZSTD3 = zstandard.ZstdCompressor(level=3, write_checksum=False, write_content_size=False)


def _deflate_dict(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=compact.ZDICT)
    return c.compress(data) + c.flush()


CANDIDATES: dict[str, Callable[[Batch], bytes]] = {
    "json": lambda b: payload.encode(b, "json"),
    "compact": lambda b: payload.encode(b, "compact"),
    "json+gzip": lambda b: gzip.compress(payload.encode(b, "json"), 9, mtime=0),
    "json+zstd19": lambda b: _ZSTD19.compress(payload.encode(b, "json")),
    "columnar-varint+gzip": lambda b: gzip.compress(columnar_varint(b), 9, mtime=0),
    "columnar-varint+deflate-dict": lambda b: _deflate_dict(columnar_varint(b)),
    "columnar-varint+zstd3": lambda b: _ZSTD3.compress(columnar_varint(b)),
    "columnar-varint+zstd19": lambda b: _ZSTD19.compress(columnar_varint(b)),
}
SHIPPED = {"json", "compact"}


def make(readings: Sequence[Reading]) -> Batch:
    rs = list(readings)
    return Batch(DEVICE, payload.batch_id(DEVICE, rs[0].seq, rs[-1].seq), rs[0].seq, rs[-1].seq, rs)


def generic_fit(enc: Callable[[Batch], bytes], readings: Sequence[Reading], hint: int) -> tuple[bytes, int]:
    """Bisection for candidates without a fit of their own (the sizes, not the speed, matter here)."""
    lo, hi = 0, len(readings) + 1
    n = min(hint, len(readings))
    best = b""
    while hi - lo > 1:
        data = enc(make(readings[:n]))
        if len(data) <= BUDGET:
            lo, best = n, data
        else:
            hi = n
        n = (lo + hi) // 2 if hi <= len(readings) else min(len(readings), max(lo + 1, lo * 2))
    return best, lo


def measure(name: str, readings: list[Reading], drain: list[Reading]) -> dict[str, object]:
    enc = CANDIDATES[name]
    minute = 240
    batches = [make(readings[i : i + minute]) for i in range(0, len(readings) - minute + 1, minute)]
    t0 = time.process_time()
    encoded = [enc(b) for b in batches]
    t_enc = time.process_time() - t0
    n_readings = minute * len(batches)
    result: dict[str, object] = {
        "shipped": name in SHIPPED,
        "60s_batches": {
            "bytes_per_reading": round(sum(map(len, encoded)) / n_readings, 3),
            "billed_units_per_million": round(sum(units(len(e)) for e in encoded) * 1e6 / n_readings),
        },
        "encode_cpu_us_per_reading": round(t_enc / n_readings * 1e6, 2),
    }
    if name in SHIPPED:
        t0 = time.process_time()
        for e, b in zip(encoded, batches, strict=True):
            if payload.decode(e) != b:
                raise SystemExit(f"{name}: round trip failed")
        result["decode_cpu_us_per_reading"] = round((time.process_time() - t0) / n_readings * 1e6, 2)
    # Batches filled to one billed unit while draining a backlog.
    pos = sizes = msgs = 0
    fit_time = 0.0
    hint = 30
    while pos < len(drain):
        t0 = time.process_time()
        if name in SHIPPED:
            data, n = payload.fit(DEVICE, drain[pos:], name, BUDGET)
        else:
            data, n = generic_fit(enc, drain[pos:], hint)
        fit_time += time.process_time() - t0
        hint = n
        if pos + n < len(drain):  # the last, partial batch is not "filled"
            sizes += len(data)
            msgs += 1
            result.setdefault("_filled_readings", 0)
            result["_filled_readings"] = int(result["_filled_readings"]) + n  # type: ignore[call-overload]
        pos += n
    filled = int(result.pop("_filled_readings", 0))  # type: ignore[call-overload]
    result["5KB_batches"] = {
        "readings_per_message": round(filled / max(1, msgs)),
        "bytes_per_reading": round(sizes / max(1, filled), 3),
        "billed_units_per_million": round(msgs * 1e6 / max(1, filled)),
    }
    if name in SHIPPED:
        result["fit_cpu_us_per_reading"] = round(fit_time / len(drain) * 1e6, 2)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=30_000, help="simulated seconds (4 readings each)")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_SECONDS} simulated seconds (about 30 s): enough for a few filled 5 KB batches")
    args = ap.parse_args()
    seconds = QUICK_SECONDS if args.quick else args.seconds
    readings = stream(seconds)
    minute_set = readings[: min(len(readings), 240 * 200)]
    naive = [naive_message(r) for r in minute_set]
    report: dict[str, object] = {
        "stream": {"readings": len(readings), "channels": 4, "rate_hz": 1, "topic": TOPIC, "billing_unit": UNIT},
        "baseline_one_json_message_per_reading": {
            "bytes_per_reading": round(sum(map(len, naive)) / len(naive), 1),
            "billed_units_per_million": round(sum(units(len(m)) for m in naive) * 1e6 / len(naive)),
        },
        "encodings": {},
    }
    encodings: dict[str, object] = {}
    for name in CANDIDATES:
        drain = readings if name != "json" else readings[:4000]
        encodings[name] = measure(name, minute_set, drain)
    report["encodings"] = encodings
    base = report["baseline_one_json_message_per_reading"]
    assert isinstance(base, dict)
    ratios = {}
    for name in SHIPPED:
        r = encodings[name]
        assert isinstance(r, dict)
        ratios[name] = {
            "bytes_vs_baseline_60s": round(base["bytes_per_reading"] / r["60s_batches"]["bytes_per_reading"], 1),
            "billed_units_vs_baseline_5KB": round(
                base["billed_units_per_million"] / max(1, r["5KB_batches"]["billed_units_per_million"]), 1
            ),
        }
    report["ratios"] = ratios
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
