"""Log redaction: key material never reaches a log line, whether it sits in the message, an
extra field, a nested value, an exception's text or traceback, or a PEM cut short."""

from __future__ import annotations

import io
import json
import logging

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import logs

KEY_PEM = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
BODY_LINES = [line for line in KEY_PEM.splitlines() if line and not line.startswith("-----")]


def _leaks(text: str) -> list[str]:
    """Whole base64 lines of the key that made it into ``text``."""
    return [line for line in BODY_LINES if line in text]


def _emit(fmt: str, build) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter() if fmt == "json" else logs.LogfmtFormatter())
    log = logging.getLogger(f"test.redact.{fmt}")
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        build(log)
    finally:
        log.removeHandler(handler)
    return stream.getvalue()


def test_exception_text_and_traceback_are_logged_and_redacted():
    def build(log: logging.Logger) -> None:
        try:
            raise ValueError(f"bad key file: {KEY_PEM}")
        except ValueError:
            log.error("load failed", exc_info=True)

    for fmt in ("logfmt", "json"):
        line = _emit(fmt, build)
        assert _leaks(line) == [], line
        assert "Traceback (most recent call last)" in line and "raise ValueError" in line
        assert line.count("\n") == 1  # one line per event, the traceback escaped inside it


def test_truncated_pem_and_nested_values():
    cut = KEY_PEM[: len(KEY_PEM) // 2]  # BEGIN line and half the body, no END
    tail = KEY_PEM[len(KEY_PEM) // 2:]  # the rest of the body and END, no BEGIN

    def build(log: logging.Logger) -> None:
        log.warning("cut %s", cut)
        log.warning("tail", extra={"output": tail, "escaped": repr(tail)})
        log.warning("nested", extra={"detail": {"files": [{"name": "k", "text": KEY_PEM}], "auth": {"password": "x"}},
                                     "obj": Exception(KEY_PEM)})

    for fmt in ("logfmt", "json"):
        out = _emit(fmt, build)
        assert _leaks(out) == [], out
    nested = json.loads(_emit("json", build).splitlines()[2])
    assert nested["detail"]["auth"]["password"] == "<redacted>"
    assert nested["detail"]["files"][0] == {"name": "k", "text": "<redacted PEM>\n"}


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, len(KEY_PEM)), length=st.integers(120, len(KEY_PEM)),
       shape=st.sampled_from(["str", "dict", "list", "repr"]), prefix=st.text(max_size=20))
def test_any_slice_of_a_key_is_redacted_in_any_shape(start, length, shape, prefix):
    piece = prefix + KEY_PEM[start:start + length]
    value = {"str": piece, "dict": {"a": {"b": piece}}, "list": [[piece]], "repr": repr(piece)}[shape]
    out = json.dumps(logs.redact(value))
    # A slice is a secret when it holds whole base64 lines of the key.
    whole = [line for line in BODY_LINES if line in piece]
    assert not [line for line in whole if line in out], out
