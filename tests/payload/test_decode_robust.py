"""Bad payloads raise PayloadError naming the problem; never another exception, never a hang."""

from __future__ import annotations

import json
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import payload
from agent.payload import Batch, PayloadError, compact
from agent.payload.wire import Reader, put_varint
from agent.reading import Reading
from tests.payload.conftest import DEVICE

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_error(data: bytes, ct: str | None = None) -> None:
    try:
        got = payload.decode(data, ct)
    except PayloadError as exc:
        assert str(exc)
    else:
        assert isinstance(got, Batch) and got.readings


def _varint(n: int) -> bytes:
    out = bytearray()
    put_varint(out, n)
    return bytes(out)


def _wrap(structure: bytes, *, deflated: bytes | None = None, rest: bytes = b"") -> bytes:
    """A compact payload with a correct CRC around any inner bytes, to reach the parser behind it."""
    inner = deflated if deflated is not None else compact.deflate_structure(structure)
    body = bytearray(compact.HEADER) + _varint(len(inner)) + inner + rest
    return bytes(body) + zlib.crc32(body).to_bytes(4, "little")


def _split(good: bytes) -> tuple[bytes, bytes]:
    rd = Reader(good, len(compact.HEADER))
    size = rd.varint("len")
    structure = compact.inflate_structure(rd.take(size, "structure"))
    return structure, good[rd.pos : -4]


@pytest.fixture(scope="module")
def good(stream: list[Reading]) -> bytes:
    return payload.encode(Batch(DEVICE, payload.batch_id(DEVICE, 1, 400), 1, 400, stream[:400]), "compact")


def test_wrap_reproduces_a_real_payload(good: bytes) -> None:
    structure, rest = _split(good)
    assert _wrap(structure, rest=rest) == good  # so the fuzzers below really reach the parser


@FUZZ
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_or_error(data)
    _decode_or_error(compact.MAGIC + data)
    _decode_or_error(compact.HEADER + data)


@FUZZ
@given(structure=st.binary(max_size=300), rest=st.binary(max_size=40))
def test_arbitrary_structure_behind_a_valid_crc(structure: bytes, rest: bytes) -> None:
    _decode_or_error(_wrap(structure, rest=rest))


@FUZZ
@given(data=st.data())
def test_mutated_valid_payload_with_fixed_crc(good: bytes, data: st.DataObject) -> None:
    """Corrupt the inside of a real payload but keep the CRC right: the parser must still hold."""
    structure, rest = _split(good)
    s = bytearray(structure)
    for _ in range(data.draw(st.integers(1, 4))):
        s[data.draw(st.integers(0, len(s) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(rest)))
    bits = bytearray(rest[:cut] + data.draw(st.binary(max_size=4)))
    if bits and data.draw(st.booleans()):
        bits[data.draw(st.integers(0, len(bits) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    _decode_or_error(_wrap(bytes(s), rest=bytes(bits)))


def test_every_truncation_and_bit_flip_is_rejected(good: bytes) -> None:
    for cut in range(len(good)):
        with pytest.raises(PayloadError):
            payload.decode(good[:cut])
    for i in range(len(good)):
        for bit in (0, 3, 7):
            bad = bytearray(good)
            bad[i] ^= 1 << bit
            with pytest.raises(PayloadError):
                payload.decode(bytes(bad))


def test_named_errors(good: bytes) -> None:
    with pytest.raises(PayloadError, match="bad CRC"):
        payload.decode(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(PayloadError, match="version 9"):
        payload.decode(compact.MAGIC + b"\x09" + good[4:])
    with pytest.raises(PayloadError, match="bad magic"):
        payload.decode(b"\x00" + good[1:], payload.content_type("compact"))
    with pytest.raises(PayloadError, match="empty"):
        payload.decode(b"")
    with pytest.raises(PayloadError, match="exceeds"):
        payload.decode(b"{" + b" " * payload.MAX_PAYLOAD_BYTES)


def test_decompression_bomb_is_refused() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=compact.ZDICT)
    deflated = bomb.compress(b"\x00" * (compact.MAX_STRUCTURE_BYTES + 1)) + bomb.flush()
    assert len(deflated) < 100_000
    with pytest.raises(PayloadError, match="inflates beyond"):
        payload.decode(_wrap(b"", deflated=deflated))


def test_absurd_reading_count_is_refused() -> None:
    structure = b"\x00" + b"\x01d" + b"\x01" + b"\x00" + _varint(10**9)
    with pytest.raises(PayloadError, match="reading count"):
        payload.decode(_wrap(structure))


def test_unexplained_bytes_are_refused(good: bytes) -> None:
    structure, rest = _split(good)
    with pytest.raises(PayloadError, match="unexplained bytes"):
        payload.decode(_wrap(structure + b"\x00", rest=rest))
    with pytest.raises(PayloadError, match="unexplained bits"):
        payload.decode(_wrap(structure, rest=rest + b"\x00"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(doc=json_values)
def test_arbitrary_json_documents(doc: object) -> None:
    _decode_or_error(json.dumps(doc).encode())


@FUZZ
@given(data=st.data())
def test_json_with_one_field_broken(stream: list[Reading], data: st.DataObject) -> None:
    doc = json.loads(payload.encode(Batch(DEVICE, "b", 1, 8, stream[:8]), "json"))
    target = doc if data.draw(st.booleans()) else doc["readings"][data.draw(st.integers(0, 7))]
    key = data.draw(st.sampled_from(sorted(target)))
    if data.draw(st.booleans()):
        del target[key]
    else:
        target[key] = data.draw(json_values)
    _decode_or_error(json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("text", "ct", "message"),
    [
        (b'{"v": 2}', None, "version 2"),
        (b"[1]", None, "neither"),
        (b"[1]", "application/vnd.methane.batch.v1+json", "must be an object"),
        (b"{" * 100_000, None, "bad JSON"),
        (b'{"v": NaN}', None, "bare NaN"),
        (b"\xff{", None, "neither"),
        (b" {\xff}", None, "not UTF-8"),
        (b'{"v":1,"readings":[{"seq":1}]', None, "bad JSON"),
    ],
)
def test_json_errors_name_the_problem(text: bytes, ct: str | None, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        payload.decode(text, ct)


def test_json_field_error_names_the_field(stream: list[Reading]) -> None:
    doc = json.loads(payload.encode(Batch(DEVICE, "b", 1, 8, stream[:8]), "json"))
    doc["readings"][3]["ts_ms"] = "soon"
    with pytest.raises(PayloadError, match=r"readings\[3\]\.ts_ms: expected int, got str"):
        payload.decode(json.dumps(doc).encode())
