"""Strict JSON input for the services: UTF-8 only, no NaN/Infinity, no overflowing floats, and
pathological nesting refused instead of crashing the parser — so a request can always be
answered with a well-formed error document."""

from __future__ import annotations

import json
import math
from typing import Any


class JsonInputError(ValueError):
    """``encoding`` is True when the bytes are not UTF-8 (IoT Core answers those differently)."""

    def __init__(self, message: str, *, encoding: bool = False) -> None:
        super().__init__(message)
        self.encoding = encoding


def _reject_constant(name: str) -> Any:
    raise JsonInputError(f"JSON constant {name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonInputError(f"number {text} is out of range")
    return value


def parse_json(payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonInputError("payload is not UTF-8", encoding=True) from exc
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise JsonInputError("JSON nested too deeply") from exc
    except json.JSONDecodeError as exc:
        raise JsonInputError(f"invalid JSON: {exc.msg}") from exc
    except ValueError as exc:  # int literal beyond Python's digit limit
        raise JsonInputError(str(exc)) from exc


def is_int(value: Any) -> bool:
    """A JSON integer (``true`` is not one, though Python says ``isinstance(True, int)``)."""
    return isinstance(value, int) and not isinstance(value, bool)
