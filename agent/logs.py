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
import traceback
from typing import Any

# A PEM block, also one cut short by a truncation (no END line left, or the start of its BEGIN
# line gone).
_PEM = re.compile(
    r"(?:-*BEGIN [A-Z0-9 ]*-+|[A-Z0-9 ]*(?:KEY|CERTIFICATE|REQUEST)-{2,}).*?(?:-+END [A-Z0-9 ]+-+|\Z)", re.S
)
# Key material without its BEGIN line (the tail of a cut PEM, base64 DER): a base64 run of 40+
# characters next to a newline (real or escaped, as in a repr) as PEM lines are, or of 200+
# anywhere. Hex-only runs (digests, certificate ids) are left alone.
_B64_RUN = re.compile(r"(?<!\\)[A-Za-z0-9+/]{40,}={0,2}")  # not starting at the n of an escaped \n
_HEX = re.compile(r"[0-9a-fA-F]+")
_NEWLINE_BEFORE = ("\n", "\\n")
_NEWLINE_AFTER = re.compile(r"\r|\n|\\+[rn]")  # real, escaped (repr, JSON) or escaped more
# A PEM body's last line is often shorter than 40 (24-28 characters for an RSA-2048 key): a
# tail cut before its BEGIN line would leak it, so any base64 line goes after a masked line or
# before an END line (which the PEM rule has turned into "-----<redacted PEM>"). Newlines real,
# escaped (repr, JSON) or escaped twice (a repr of a repr).
_NL = r"(?:\r?\n|(?:\\+r)?\\+n)"
_AFTER_MASKED = re.compile(rf"(<redacted base64>{_NL})[A-Za-z0-9+/]+={{0,2}}")
_BEFORE_END = re.compile(rf"(?<!\\)[A-Za-z0-9+/]+={{0,2}}(?={_NL}-+(?:END |<redacted PEM>))")


def _mask_base64(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        run = m.group(0)
        if len(run) < 200:
            if _HEX.fullmatch(run):
                return run
            before = text[max(0, m.start() - 2) : m.start()]
            if not (before.endswith(_NEWLINE_BEFORE) or _NEWLINE_AFTER.match(text, m.end())):
                return run
        return "<redacted base64>"

    masked = _AFTER_MASKED.sub(r"\1<redacted base64>", _B64_RUN.sub(repl, text))
    return _BEFORE_END.sub("<redacted base64>", masked)


_SECRET_KEYS = re.compile(r"(private_?key|secret|password|token|pem)", re.I)
_STD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
MAX_EXC_CHARS = 8000
_DEPTH = 8


def redact(value: Any, _depth: int = 0) -> Any:
    """``value`` with key material masked, in strings at any depth of dicts and lists, and every
    value under a secret-sounding key replaced. Other objects are logged as their (redacted) text."""
    if isinstance(value, str):
        return _mask_base64(_PEM.sub("<redacted PEM>", value))
    if value is None or isinstance(value, bool | int | float):
        return value
    if _depth >= _DEPTH:
        return "<nested too deep>"
    if isinstance(value, dict):
        return {str(k): "<redacted>" if _SECRET_KEYS.search(str(k)) else redact(v, _depth + 1)
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, _depth + 1) for v in value]
    return redact(str(value), _depth + 1)


def _exc_text(record: logging.LogRecord) -> str:
    """The traceback (redacted: an exception's text may carry a PEM), newest frames kept."""
    assert record.exc_info is not None
    text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
    return redact(text[-MAX_EXC_CHARS:])


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
        out["exc"] = _exc_text(record)
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
