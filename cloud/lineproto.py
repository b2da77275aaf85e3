"""InfluxDB line protocol, the few rules the writer needs (docs.influxdata.com, "Line protocol"):
measurement escapes comma and space; tag keys, tag values and field keys escape comma, ``=`` and
space; string field values escape ``"`` and ``\\``. Newlines cannot be escaped anywhere, so a name
or tag holding one is refused rather than written as a broken line. Empty tag values are not
allowed (the tag is left out instead)."""

from __future__ import annotations

import math
from collections.abc import Mapping

# InfluxDB's own bounds for a nanosecond timestamp (models.MinNanoTime / MaxNanoTime).
MIN_NS = -9_223_372_036_854_775_806
MAX_NS = 9_223_372_036_854_775_806

FieldValue = float | int | bool | str


class LineProtocolError(ValueError):
    """A point cannot be written as line protocol; the message names the part."""


_MEAS = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_STR = str.maketrans({'"': r"\"", "\\": r"\\"})


def _check_name(kind: str, text: str) -> None:
    if not text:
        raise LineProtocolError(f"{kind} must not be empty")
    if "\n" in text or "\r" in text:
        raise LineProtocolError(f"{kind} {text!r} contains a newline")
    if text.endswith("\\"):
        raise LineProtocolError(f"{kind} {text!r} ends with a backslash (it would escape the separator)")


def measurement(name: str) -> str:
    _check_name("measurement", name)
    if name.startswith("_"):
        raise LineProtocolError(f"measurement {name!r} starts with '_' (reserved by InfluxDB)")
    return name.translate(_MEAS)


def key(kind: str, text: str) -> str:
    """A tag key, tag value or field key."""
    _check_name(kind, text)
    return text.translate(_KEY)


def tags(pairs: Mapping[str, str]) -> str:
    """``,k=v`` pairs sorted by key (InfluxDB's preferred order); empty values are left out."""
    return "".join(f",{key('tag key', k)}={key('tag value', v)}" for k, v in sorted(pairs.items()) if v)


def field_value(name: str, v: FieldValue) -> str:
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        if not math.isfinite(v):
            raise LineProtocolError(f"field {name!r}: {v!r} is not a finite number (InfluxDB stores no NaN/inf)")
        return repr(v)
    if isinstance(v, str):
        if "\n" in v or "\r" in v:
            raise LineProtocolError(f"field {name!r}: string value contains a newline")
        return f'"{v.translate(_STR)}"'
    raise LineProtocolError(f"field {name!r}: unsupported type {type(v).__name__}")


def fields(values: Mapping[str, FieldValue]) -> str:
    if not values:
        raise LineProtocolError("a point needs at least one field")
    return ",".join(f"{key('field key', k)}={field_value(k, v)}" for k, v in values.items())


def timestamp(ns: int) -> str:
    if not MIN_NS <= ns <= MAX_NS:
        raise LineProtocolError(f"timestamp {ns} ns is outside InfluxDB's range (years 1677-2262)")
    return str(ns)


def line(meas: str, tag_pairs: Mapping[str, str], field_values: Mapping[str, FieldValue], ns: int) -> str:
    return f"{measurement(meas)}{tags(tag_pairs)} {fields(field_values)} {timestamp(ns)}"
