"""Input checks: bad limits or a bad reading raise a clear error naming what was wrong, and the
spool changes nothing (``append`` checks every item before it numbers any)."""

from __future__ import annotations

import math

from agent.reading import UNNUMBERED, Reading
from agent.spool.model import INT64_MAX, SYNCHRONOUS_LEVELS

_INT64_MIN = -(2**63)


def check_limits(max_bytes: int, min_free_disk_bytes: int, commit_interval_s: float) -> None:
    for name, value in (("max_bytes", max_bytes), ("min_free_disk_bytes", min_free_disk_bytes)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if min_free_disk_bytes < 0:
        raise ValueError(f"min_free_disk_bytes must be >= 0, got {min_free_disk_bytes}")
    if (
        not isinstance(commit_interval_s, int | float)
        or isinstance(commit_interval_s, bool)
        or not math.isfinite(commit_interval_s)
        or commit_interval_s <= 0
    ):
        raise ValueError(f"commit_interval_s must be a positive number of seconds, got {commit_interval_s!r}")


def check_synchronous(synchronous: object) -> str:
    level = synchronous.upper() if isinstance(synchronous, str) else synchronous
    if level not in SYNCHRONOUS_LEVELS:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, got {synchronous!r}")
    return str(level)


def check_seq(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= INT64_MAX:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


# Text already found valid: sensor ids, quantities, units and flags repeat in every reading, and
# encoding each to prove it is UTF-8 was a large part of the per-reading cost. Bounded.
_VALID_TEXT: set[str] = set()
_VALID_TEXT_MAX = 4096


def _check_text(index: int, name: str, value: object, *, allow_empty: bool = False) -> str:
    if type(value) is str and value in _VALID_TEXT:
        return value
    if not isinstance(value, str):
        raise TypeError(f"reading #{index}: {name} must be a str, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ValueError(f"reading #{index}: {name} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"reading #{index}: {name} is not valid UTF-8 text: {exc.reason}") from None
    if value and type(value) is str:  # not a subclass: its __hash__/__eq__ could lie
        if len(_VALID_TEXT) >= _VALID_TEXT_MAX:
            _VALID_TEXT.clear()
        _VALID_TEXT.add(value)
    return value


def check_reading(index: int, item: object, seq: int = UNNUMBERED) -> Reading:
    """Validate one incoming reading; the error names the reading and the field. Returns it
    normalised (value a float, flags a tuple) with sequence number ``seq``."""
    if not isinstance(item, Reading):
        raise TypeError(f"reading #{index}: expected a Reading, got {type(item).__name__}")
    if item.seq != UNNUMBERED:
        raise ValueError(f"reading #{index}: already has sequence number {item.seq!r} (append it once)")
    if not isinstance(item.ts_ms, int) or isinstance(item.ts_ms, bool):
        raise TypeError(f"reading #{index}: ts_ms must be an int, got {type(item.ts_ms).__name__}")
    if not _INT64_MIN <= item.ts_ms <= INT64_MAX:
        raise ValueError(f"reading #{index}: ts_ms {item.ts_ms} does not fit in 64 bits")
    if not isinstance(item.clock_synced, bool):
        raise TypeError(f"reading #{index}: clock_synced must be a bool")
    if not isinstance(item.alarm, bool):
        raise TypeError(f"reading #{index}: alarm must be a bool")
    if not isinstance(item.value, int | float) or isinstance(item.value, bool):
        raise TypeError(f"reading #{index}: value must be a number, got {type(item.value).__name__}")
    try:
        value = float(item.value)
    except OverflowError:
        raise ValueError(f"reading #{index}: value {item.value} is too large for a float") from None
    if not isinstance(item.flags, tuple | list):
        raise TypeError(f"reading #{index}: flags must be a tuple of str, got {type(item.flags).__name__}")
    flags = tuple([_check_text(index, "flag", f) for f in item.flags]) if item.flags else ()
    return Reading(
        seq,
        item.ts_ms,
        item.clock_synced,
        _check_text(index, "sensor_id", item.sensor_id),
        _check_text(index, "quantity", item.quantity),
        value,
        _check_text(index, "unit", item.unit, allow_empty=True),
        flags,
        item.alarm,
    )
