"""Log redaction: key material never reaches a log line, whether it sits in the message, an
extra field, a nested value, an exception's text or traceback, or a PEM cut short."""

from __future__ import annotations

import io
import json
import logging

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent import logs


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _body(pem: str) -> list[str]:
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


KEY_PEM = _pem(ec.generate_private_key(ec.SECP256R1()))
BODY_LINES = _body(KEY_PEM)
# An RSA-2048 body ends in a short line (24-28 characters), which the 40-character base64 rule
# alone let through from a tail cut before its BEGIN line.
RSA_PEM = _pem(rsa.generate_private_key(65537, 2048))
KEYS = {"ec": KEY_PEM, "rsa": RSA_PEM}


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


SHAPES = {
    "str": lambda p: p, "dict": lambda p: {"a": {"b": p}}, "list": lambda p: [[p]], "repr": repr,
    "repr-of-repr": lambda p: repr(repr(p)), "json": json.dumps, "bytes-repr": lambda p: repr(p.encode()),
    "crlf-repr": lambda p: repr(p.replace("\n", "\r\n")), "exception": Exception,
}


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(KEYS)), start=st.integers(0, len(RSA_PEM)), length=st.integers(120, len(RSA_PEM)),
       shape=st.sampled_from(sorted(SHAPES)), prefix=st.text(max_size=20), suffix=st.text(max_size=20))
# The failure seen last session (any key): a BEGIN line cut to "EGIN ..." and the last whole line
# after an escaped newline, which the run rule took from its "n" on.
@example(key="ec", start=6, length=151, shape="repr", prefix="", suffix="")
# The headerless tail of an RSA key: its short last line before the END line.
@example(key="rsa", start=30, length=len(RSA_PEM), shape="str", prefix="", suffix="")
# The same tail starting mid-line, escaped twice: neither run sits after a newline it recognised.
@example(key="rsa", start=len(RSA_PEM) - 70, length=120, shape="repr-of-repr", prefix="", suffix="")
def test_any_slice_of_a_key_is_redacted_in_any_shape(key, start, length, shape, prefix, suffix):
    pem = KEYS[key]
    piece = prefix + pem[start:start + length] + suffix
    out = json.dumps(logs.redact(SHAPES[shape](piece)), default=str)
    # A slice is a secret when it holds whole base64 lines of the key.
    whole = [line for line in _body(pem) if line in piece]
    assert not [line for line in whole if line in out], out
