"""The ``json`` encoding: readable, and queryable as-is by IoT rules SQL.

Keys mirror ``agent.reading.Reading``. Non-finite values are not JSON numbers, so they travel as
the strings "NaN", "Infinity", "-Infinity" (a NaN's payload bits are not kept; use ``compact`` for
bit-exact NaNs)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from agent.payload.batch import (
    SEQ_MAX,
    TS_MAX,
    TS_MIN,
    Batch,
    check_envelope,
    check_reading,
)
from agent.payload.errors import PayloadError
from agent.reading import Reading

FORMAT_VERSION = 1
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_dumps: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
).encode


def _value(v: float | int, seq: int) -> float | str:
    try:
        f = float(v)
    except OverflowError:
        raise PayloadError(f"reading seq {seq}: value {v!r} does not fit a 64-bit float") from None
    if math.isfinite(f):
        return f
    return "NaN" if f != f else ("Infinity" if f > 0 else "-Infinity")


def reading_fragments(readings: Sequence[Reading], batch: Batch) -> list[bytes]:
    """One UTF-8 JSON object per reading; a payload is the envelope around their comma-join."""
    out: list[bytes] = []
    prev = -1
    for r in readings:
        check_reading(r, prev, batch)
        prev = r.seq
        obj = {
            "seq": r.seq,
            "ts_ms": r.ts_ms,
            "clock_synced": r.clock_synced,
            "sensor_id": r.sensor_id,
            "quantity": r.quantity,
            "value": _value(r.value, r.seq),
            "unit": r.unit,
            "flags": list(r.flags),
            "alarm": r.alarm,
        }
        try:
            out.append(_dumps(obj).encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise PayloadError(f"reading seq {r.seq}: text is not valid Unicode ({exc.reason})") from None
    return out


def envelope_parts(batch: Batch) -> tuple[bytes, bytes]:
    """The bytes before and after the readings array."""
    head = _dumps(
        {
            "v": FORMAT_VERSION,
            "device": batch.device,
            "batch_id": batch.batch_id,
            "first_seq": batch.first_seq,
            "last_seq": batch.last_seq,
            "count": len(batch.readings),
        }
    )
    try:
        return head[:-1].encode("utf-8") + b',"readings":[', b"]}"
    except UnicodeEncodeError as exc:
        raise PayloadError(f"device or batch_id is not valid Unicode ({exc.reason})") from None


def assemble(head: bytes, fragments: Sequence[bytes], tail: bytes) -> bytes:
    return head + b",".join(fragments) + tail


def encode(batch: Batch) -> bytes:
    check_envelope(batch)
    head, tail = envelope_parts(batch)
    return assemble(head, reading_fragments(batch.readings, batch), tail)


# ---------------------------------------------------------------- decoding


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"bad JSON: bare {name} is not JSON (non-finite values travel as strings)")


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise PayloadError(f"bad JSON field {where}.{key}: missing")
    v = obj[key]
    if type(v) is bool and kind is not bool:
        raise PayloadError(f"bad JSON field {where}.{key}: expected {_kind_name(kind)}, got a boolean")
    if not isinstance(v, kind):
        raise PayloadError(f"bad JSON field {where}.{key}: expected {_kind_name(kind)}, got {type(v).__name__}")
    return v


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _int_in(obj: dict[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    v: int = _field(obj, key, int, where)
    if not lo <= v <= hi:
        raise PayloadError(f"bad JSON field {where}.{key}: {v} is outside {lo}..{hi}")
    return v


def _decode_value(v: Any, where: str) -> float:
    if isinstance(v, str):
        if v in _NONFINITE:
            return _NONFINITE[v]
        raise PayloadError(f"bad JSON field {where}.value: string {v[:20]!r} is not NaN/Infinity/-Infinity")
    if type(v) is bool or not isinstance(v, int | float):
        raise PayloadError(f"bad JSON field {where}.value: expected a number, got {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:
        raise PayloadError(f"bad JSON field {where}.value: {v} does not fit a 64-bit float") from None
    if not math.isfinite(f):
        raise PayloadError(f"bad JSON field {where}.value: number out of 64-bit float range")
    return f


def _decode_reading(obj: Any, i: int) -> Reading:
    where = f"readings[{i}]"
    if not isinstance(obj, dict):
        raise PayloadError(f"bad JSON field {where}: expected an object")
    flags = _field(obj, "flags", list, where)
    if not all(isinstance(f, str) for f in flags):
        raise PayloadError(f"bad JSON field {where}.flags: expected a list of strings")
    if "value" not in obj:
        raise PayloadError(f"bad JSON field {where}.value: missing")
    return Reading(
        seq=_int_in(obj, "seq", 0, SEQ_MAX, where),
        ts_ms=_int_in(obj, "ts_ms", TS_MIN, TS_MAX, where),
        clock_synced=_field(obj, "clock_synced", bool, where),
        sensor_id=_field(obj, "sensor_id", str, where),
        quantity=_field(obj, "quantity", str, where),
        value=_decode_value(obj["value"], where),
        unit=_field(obj, "unit", str, where),
        flags=tuple(flags),
        alarm=_field(obj, "alarm", bool, where),
    )


def decode(payload: bytes) -> Batch:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"bad JSON: not UTF-8 at byte {exc.start}") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"bad JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PayloadError("bad JSON: nested too deeply") from None
    except ValueError as exc:  # int literal with too many digits (CPython's int_max_str_digits)
        if isinstance(exc, PayloadError):
            raise
        raise PayloadError(f"bad JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PayloadError("bad JSON: the payload must be an object")
    v = _field(doc, "v", int, "batch")
    if v != FORMAT_VERSION:
        raise PayloadError(f"bad JSON field batch.v: version {v} is not supported (this reader knows 1)")
    items = _field(doc, "readings", list, "batch")
    readings = [_decode_reading(obj, i) for i, obj in enumerate(items)]
    batch = Batch(
        device=_field(doc, "device", str, "batch"),
        batch_id=_field(doc, "batch_id", str, "batch"),
        first_seq=_int_in(doc, "first_seq", 0, SEQ_MAX, "batch"),
        last_seq=_int_in(doc, "last_seq", 0, SEQ_MAX, "batch"),
        readings=readings,
    )
    count = _field(doc, "count", int, "batch")
    if count != len(readings):
        raise PayloadError(f"bad JSON field batch.count: says {count}, readings has {len(readings)}")
    check_envelope(batch)
    prev = -1
    for r in readings:
        check_reading(r, prev, batch)
        prev = r.seq
    return batch
