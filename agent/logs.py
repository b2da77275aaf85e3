"""Structured logs on stderr for journald: logfmt or JSON, one line per event.

Secrets never reach a handler: ``redact`` masks PEM blocks and known secret-bearing keys, and the
filter applies it to every record, so a careless ``log.info(..., extra=...)`` cannot leak a key.
Repeated identical messages are rate-limited so a sensor unplugged for a week does not fill the SD
card."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----", re.S)
_SECRET_KEYS = re.compile(r"(private_?key|secret|password|token|pem)", re.I)
_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def redact(value: Any) -> Any:
    if isinstance(value, str):
        return _PEM.sub("<redacted PEM>", value)
    return value


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": redact(record.getMessage()),
    }
    for k, v in record.__dict__.items():
        if k in _STD_ATTRS or k.startswith("_"):
            continue
        out[k] = "<redacted>" if _SECRET_KEYS.search(k) else redact(v)
    if record.exc_info and record.exc_info[0] is not None:
        out["exc"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
    return out


def _logfmt_value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    if s == "" or any(c in s for c in ' ="\n\t'):
        return json.dumps(s)
    return s


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, separators=(",", ":"))


class RateLimitFilter(logging.Filter):
    """Let an identical (logger, level, message) through at most once per ``window_s``; say how
    many were suppressed on the next one that passes."""

    def __init__(self, window_s: float = 60.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        if seen is not None and seen[1]:
            record.suppressed = seen[1]
        self._last[key] = (now, 0)
        if len(self._last) > 4096:  # bounded: forget the oldest half
            for k in sorted(self._last, key=lambda k: self._last[k][0])[:2048]:
                del self._last[k]
        return True


def setup(level: str = "INFO", fmt: str = "logfmt", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        if not getattr(h, "persistent", False):  # e.g. the diagnostics log ring (agent/remote)
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # awscrt and others are chatty at DEBUG; keep them at WARNING unless asked.
    for noisy in ("awscrt", "asyncio", "pymodbus"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
