"""Choosing an encoding: content types, sniffing, and ``fit`` (the longest prefix under a budget).

Each encoder module is imported the first time its encoding is used: the daemon sends one encoding
and should not carry the other (the footprint the README's Performance section measures)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from agent.payload.batch import Batch, check_envelope, make_batch
from agent.payload.errors import PayloadError
from agent.reading import Reading

if TYPE_CHECKING:
    from agent.payload.columns import Columns

ENCODINGS = ("json", "compact")
CONTENT_TYPES = {
    "json": "application/vnd.methane.batch.v1+json",
    "compact": "application/vnd.methane.batch-compact.v1",
}
_BY_CONTENT_TYPE = {ct: enc for enc, ct in CONTENT_TYPES.items()}
USER_PROPERTY = "encoding"  # MQTT5 user property ("encoding", <name>) set next to the content type
MAX_PAYLOAD_BYTES = 1024 * 1024  # decode refuses more; IoT Core itself refuses over 128 KB
COMPACT_MAGIC = b"\x93MB"  # agent.payload.compact.MAGIC, here so sniffing loads no encoder (a test checks)
_MODULES = {"json": "agent.payload.jsonfmt", "compact": "agent.payload.compact"}


def _codec(encoding: str) -> ModuleType:
    return importlib.import_module(_MODULES[encoding])


def _check_encoding(encoding: str) -> None:
    if encoding not in CONTENT_TYPES:
        raise PayloadError(f"unknown encoding {encoding!r}; known: {', '.join(ENCODINGS)}")


def content_type(encoding: str) -> str:
    _check_encoding(encoding)
    return CONTENT_TYPES[encoding]


def encode(batch: Batch, encoding: str) -> bytes:
    _check_encoding(encoding)
    check_envelope(batch)
    encoded: bytes = _codec(encoding).encode(batch)
    return encoded


def sniff(payload: bytes) -> str:
    """The encoding of a payload from its first bytes (IoT rules and Firehose drop MQTT5 properties)."""
    if payload[: len(COMPACT_MAGIC)] == COMPACT_MAGIC:
        return "compact"
    if payload.lstrip(b" \t\r\n")[:1] == b"{":
        return "json"
    raise PayloadError("unrecognised payload: neither the compact magic nor a JSON object")


def encoding_of(content_type: str) -> str:
    """Encoding named by an MQTT5 content type (parameters such as '; charset=utf-8' ignored)."""
    base = content_type.split(";", 1)[0].strip().lower()
    if base in _BY_CONTENT_TYPE:
        return _BY_CONTENT_TYPE[base]
    if base == "application/json":
        return "json"
    raise PayloadError(f"unsupported content type {content_type!r}; known: {', '.join(_BY_CONTENT_TYPE)}")


def _checked(payload: bytes, content_type: str | None) -> tuple[bytes, str]:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise PayloadError(f"payload must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    if not payload:
        raise PayloadError("empty payload")
    return payload, sniff(payload) if content_type is None else encoding_of(content_type)


def decode(payload: bytes, content_type: str | None = None) -> Batch:
    payload, encoding = _checked(payload, content_type)
    batch: Batch = _codec(encoding).decode(payload)
    return batch


def decode_columns(payload: bytes, content_type: str | None = None) -> Columns:
    """As ``decode``, the batch as columns (no object per reading; same checks, same errors)."""
    payload, encoding = _checked(payload, content_type)
    if encoding == "compact":
        cols: Columns = _codec(encoding).decode_columns(payload)
        return cols
    from agent.payload.columns import Columns as _Columns  # only consumers decode: not in the daemon

    return _Columns.of_batch(_codec(encoding).decode(payload))


# ---------------------------------------------------------------- fit

# Readings per payload byte seen by the previous call, per encoding: the first guess of the next.
_density: dict[str, float] = {"json": 1 / 160, "compact": 1.4}


def fit(
    device: str, readings: Sequence[Reading], encoding: str, max_payload_bytes: int, epoch: str = ""
) -> tuple[bytes, int]:
    """Encode the longest prefix of ``readings`` whose payload is <= ``max_payload_bytes``.

    Returns (payload, n) with n >= 1 and, when n < len(readings), the payload of n + 1 readings
    over the budget. Compressed sizes are not strictly monotonic in n, so "longest" is local: the
    search brackets the budget and narrows by interpolation (sizes are nearly linear in n), which
    needs a handful of encodes of the prefix instead of one per reading.
    """
    _check_encoding(encoding)
    if not readings:
        raise PayloadError("fit needs at least one reading")
    if max_payload_bytes < 1:
        raise PayloadError(f"max_payload_bytes must be positive, got {max_payload_bytes}")
    total = len(readings)
    guess = max(1, min(total, int(_density[encoding] * max_payload_bytes)))
    window = min(total, guess + guess // 16 + 16)
    size_of, grow = _prefix_encoder(device, readings, encoding, window, epoch)
    cache: dict[int, bytes] = {}

    def size(n: int) -> int:
        nonlocal window
        if n > window:
            window = min(total, max(n + n // 16 + 16, window + window // 4))
            grow(window)
        if n not in cache:
            cache[n] = size_of(n)
        return len(cache[n])

    lo, hi = 0, total + 1  # size(lo) fits (lo=0: nothing yet), size(hi) does not (total+1: sentinel)
    lo_size, hi_size = 0, 0
    n = guess
    probes = 0
    while hi - lo > 1:
        probes += 1
        s = size(n)
        if s <= max_payload_bytes:
            lo, lo_size = n, s
        else:
            hi, hi_size = n, s
        if hi - lo <= 1:
            break
        n = _next_probe(lo, lo_size, hi, hi_size, total, max_payload_bytes)
        if probes > 6 and lo > 0 and hi <= total:  # interpolation is stalling: bisect
            n = (lo + hi) // 2
    if lo == 0:
        raise PayloadError(
            f"one reading needs {size(1)} bytes in {encoding}, over the {max_payload_bytes}-byte budget"
        )
    _density[encoding] = lo / max(1, len(cache[lo]))
    return cache[lo], lo


def _next_probe(lo: int, lo_size: int, hi: int, hi_size: int, total: int, budget: int) -> int:
    """Interpolate where the budget falls; when one side is still open, step by the local density."""
    if hi > total:  # no upper bound yet: extrapolate past the budget a little
        per = lo_size / lo
        step = int((budget - lo_size) / per * 1.02) + 1
        return min(total, lo + max(1, step))
    if lo == 0:
        per = hi_size / hi
        return max(1, min(hi - 1, int(budget / per * 0.98)))
    est = lo + (budget - lo_size) * (hi - lo) // max(1, hi_size - lo_size)
    return min(hi - 1, max(lo + 1, est))


def _prefix_encoder(
    device: str, readings: Sequence[Reading], encoding: str, window: int, epoch: str = ""
) -> tuple[Callable[[int], bytes], Callable[[int], None]]:
    """(payload_of_prefix(n), grow(window)): per-reading work is done once per window, not per probe."""
    if encoding == "compact":
        analysis = _codec("compact").Analysis(device, readings, upto=window, epoch=epoch)
        return analysis.payload, analysis.extend

    jsonfmt = _codec("json")
    frags: list[bytes] = []

    def grow_j(w: int) -> None:
        probe = make_batch(device, list(readings[:w]), epoch)
        check_envelope(probe)
        frags[:] = jsonfmt.reading_fragments(probe.readings, probe)

    def payload_j(n: int) -> bytes:
        b = make_batch(device, list(readings[:n]), epoch)
        head, tail = jsonfmt.envelope_parts(b)
        return jsonfmt.assemble(head, frags[:n], tail)

    grow_j(window)
    return payload_j, grow_j
