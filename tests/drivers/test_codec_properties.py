"""Every frame parser: arbitrary bytes never crash it (only its CodecError escapes), and a frame whose
checksum is wrong never yields a value."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from drivers.codec_error import ChecksumError, CodecError
from drivers.cubic import codec as cubic
from drivers.dynament import codec as dynament
from drivers.inir import codec as inir
from drivers.nmea import codec as nmea
from drivers.winsen import codec as winsen


def _dyn(frame: bytes) -> object:
    return dynament.decode_live_data_simple(dynament.parse_reply(frame))


def _dyn_live(frame: bytes) -> object:
    return dynament.decode_live_data(dynament.parse_reply(frame))


def _cubic(frame: bytes) -> object:
    return cubic.decode_measurement(cubic.parse_reply(frame, cubic.CMD_READ))


PARSERS = {
    "dynament": (dynament.extract, _dyn),
    "dynament-live-data": (dynament.extract, _dyn_live),
    "cubic": (cubic.extract, _cubic),
    "winsen": (winsen.extract, winsen.parse_read_reply),
    "inir": (inir.extract, inir.parse),
    "nmea": (nmea.extract, nmea.parse_sentence),
}


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=160))
def test_arbitrary_bytes_only_codec_errors(name, data):
    extract, parse = PARSERS[name]
    frame, used = extract(data)
    assert 0 <= used <= len(data)
    for candidate in (data, frame or b""):
        with contextlib.suppress(CodecError):
            parse(candidate)


def _cubic_frame(raw: int, st1: int) -> bytes:
    body = bytes((0x16, 0x05, 0x01, raw >> 8, raw & 0xFF, st1, 0))
    return body + bytes(((-sum(body)) & 0xFF,))


def _winsen_frame(raw: int) -> bytes:
    body = bytes((0xFF, 0x86, raw >> 8, raw & 0xFF, 0, 0, 0, 0))
    return body + bytes((winsen.checksum(body + b"\x00"),))


def _inir_frame(ppm: int, faults: int, temp: int) -> bytes:
    data = [0x5B, ppm, faults, temp]
    crc = inir.word_crc(data)
    return b"".join(f"{w:08x}\n\r".encode() for w in [*data, crc, 0xFFFFFFFF - crc, 0x5D])


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.integers(0, 255), st.integers(1, 255))
def test_cubic_wrong_checksum_never_parses(raw, st1, delta, _x):
    frame = bytearray(_cubic_frame(raw, st1))
    assert _cubic(bytes(frame)).raw == raw
    frame[-1] = (frame[-1] + max(1, delta)) & 0xFF
    with pytest.raises(CodecError):
        _cubic(bytes(frame))


@given(st.integers(0, 0xFFFF), st.integers(1, 7), st.integers(1, 255))
def test_winsen_any_corruption_never_parses(raw, pos, flip):
    frame = bytearray(_winsen_frame(raw))
    assert winsen.parse_read_reply(bytes(frame)) == raw
    frame[pos] ^= flip
    with pytest.raises(CodecError):
        winsen.parse_read_reply(bytes(frame))


@given(st.integers(0, 10**6), st.integers(0, 0xFFFFFFFF), st.integers(2000, 3500),
       st.integers(0, 69), st.sampled_from(b"0123456789abcdef"))
def test_inir_any_digit_change_never_parses(ppm, faults, temp, pos, digit):
    frame = bytearray(_inir_frame(ppm, faults, temp))
    assert inir.parse(bytes(frame)).concentration_ppm == ppm
    word, offset = divmod(pos, 10)
    idx = word * 10 + min(offset, 7)
    assume(frame[idx] != digit)
    frame[idx] = digit
    with pytest.raises(CodecError):
        inir.parse(bytes(frame))


@given(st.floats(allow_nan=False, allow_infinity=False, width=32), st.binary(min_size=1, max_size=3))
def test_dynament_bad_checksum_never_parses(value, junk):
    frame = dynament.build_data_reply(struct.pack("<HHf", 1, 0, value))
    bad = frame[:-2] + bytes(((frame[-2] ^ junk[0]) | 0x80 if frame[-2] & 0x80 == 0 else frame[-2] ^ 0x80,
                              frame[-1]))
    with pytest.raises(ChecksumError):
        _dyn(bad)


@given(st.floats(allow_nan=False, allow_infinity=False, width=32), st.floats(-40, 85, width=32),
       st.integers(0, 0xFFFF), st.sampled_from(["sum", "crc"]), st.integers(1, 0xFFFF))
def test_dynament_live_data_wrong_checksum_never_parses(value, temperature, status, mode, delta):
    payload = struct.pack("<HHffHHfIHHHH", 4, status, value, temperature, 1, 2, 0.5, 3, 4, 5, 6, 7)
    frame = dynament.build_data_reply(payload, mode)
    assert dynament.decode_live_data(dynament.parse_reply(frame, mode)).reading == value
    cs = (int.from_bytes(frame[-2:], "big") + delta) & 0xFFFF
    with pytest.raises(ChecksumError):
        dynament.decode_live_data(dynament.parse_reply(frame[:-2] + cs.to_bytes(2, "big"), mode))
