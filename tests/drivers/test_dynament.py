from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import OUT_OF_RANGE, SENSOR_FAULT, WARMING_UP, DriverError
from drivers.codec_error import ChecksumError, CodecError, NakError
from drivers.dynament import codec
from drivers.dynament.driver import DynamentDriver, DynamentSettings
from tests.devices.dynament import DynamentDevice
from tests.devices.pty_host import Fault

VECTORS = [
    (2.5, "10 1A 08 01 00 00 00 00 00 20 40 10 1F 00 C2"),
    (36.0, "10 1A 08 01 00 00 00 00 00 10 10 42 10 1F 00 C4"),
    (0.0, "10 1A 08 01 00 00 00 00 00 00 00 10 1F 00 62"),
]


def test_request_vectors():
    assert codec.build_read_request(0x06) == bytes.fromhex("10 13 06 10 1F 00 58")
    assert codec.build_read_request(0x01) == bytes.fromhex("10 13 01 10 1F 00 53")
    assert codec.build_read_request(0x00) == bytes.fromhex("10 13 00 10 1F 00 52")
    assert codec.checksum(bytes.fromhex("10 13 06 10 1F"), "crc") == 0x9BBF


@pytest.mark.parametrize(("value", "wire"), VECTORS)
def test_reply_vectors(value, wire):
    frame = bytes.fromhex(wire)
    assert codec.build_data_reply(struct.pack("<HHf", 1, 0, value)) == frame
    assert codec.extract(b"\x00\x42" + frame + b"\x10") == (frame, len(frame) + 2)
    live = codec.decode_live_data_simple(codec.parse_reply(frame))
    assert (live.version, live.status, live.reading) == (1, 0, value)


def test_nak_vector():
    frame, used = codec.extract(bytes.fromhex("10 19 06"))
    assert used == 3
    with pytest.raises(NakError) as info:
        codec.parse_reply(frame)
    assert info.value.code == 6
    assert "checksum failed" in str(info.value)


def test_bad_checksum_and_length_rejected():
    good = bytearray(bytes.fromhex(VECTORS[0][1]))
    good[-1] ^= 1
    with pytest.raises(ChecksumError):
        codec.parse_reply(bytes(good))
    with pytest.raises(CodecError):
        codec.decode_live_data_simple(b"\x00" * 7)


@given(st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
       st.sampled_from(["sum", "crc"]))
def test_roundtrip_any_reading(value, status, version, mode):
    frame = codec.build_data_reply(struct.pack("<HHf", version, status, value), mode)
    got, used = codec.extract(frame)
    assert got == frame and used == len(frame)
    live = codec.decode_live_data_simple(codec.parse_reply(got, mode))
    assert (live.version, live.status, live.reading) == (version, status, value)


@settings(max_examples=400)
@given(st.binary(max_size=64), st.sampled_from(["sum", "crc"]))
def test_parsers_never_crash(data, mode):
    frame, used = codec.extract(data)
    assert 0 <= used <= len(data)
    with contextlib.suppress(CodecError):
        codec.decode_live_data_simple(codec.parse_reply(data if frame is None else frame, mode))


@settings(max_examples=300)
@given(st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(0, 16), st.integers(1, 255))
def test_corrupted_frame_never_yields_value(value, pos, flip):
    frame = bytearray(codec.build_data_reply(struct.pack("<HHf", 1, 0, value)))
    pos = pos % len(frame)
    frame[pos] ^= flip
    try:
        live = codec.decode_live_data_simple(codec.parse_reply(bytes(frame)))
    except CodecError:
        return
    # A single-byte change the 16-bit sum cannot see does not exist: any accepted frame is the original.
    pytest.fail(f"corrupted frame accepted: {live}")


def _driver(host, **kw):
    s = DynamentSettings(port=host.port, unit="%vol", timeout_s=0.3, warmup_s=0, reconnect_min_s=0.05,
                         reconnect_max_s=0.2, **kw)
    d = DynamentDriver(s)
    d.open()
    return d


@pytest.mark.parametrize("value", [0.0, 2.5, 36.0, 0.0625, 4.99, -0.005, 16.0])
def test_driver_reads_emulator(pty_factory, value):
    dev = DynamentDevice(reading=value)
    host = pty_factory(dev)
    d = _driver(host, range_ppm=400_000)
    try:
        ms = {m.quantity: m for m in d.read()}
    finally:
        d.close()
    assert dev.requests[-1] == bytes.fromhex("10 13 06 10 1F 00 58")
    assert ms["methane"].value == pytest.approx(value * 10_000, rel=1e-6)
    assert ms["methane"].unit == "ppm"
    assert ms["methane_lel"].value == pytest.approx(value * 10_000 / 50_000 * 100, rel=1e-6)
    assert ms["methane"].flags == frozenset()


def test_driver_crc_mode_and_lel_unit(pty_factory):
    dev = DynamentDevice(reading=20.0, crc=True)
    host = pty_factory(dev)
    d = _driver(host, checksum_mode="crc")
    try:
        ms = {m.quantity: m for m in d.read()}
    finally:
        d.close()
    assert dev.requests[-1][-2:] == bytes.fromhex("9BBF")
    assert ms["methane"].value == pytest.approx(200_000.0)
    s = DynamentSettings(port=host.port, unit="%LEL", lel_vol_percent=4.4, warmup_s=0, timeout_s=0.3)
    d = DynamentDriver(s)
    dev.crc = False
    dev.reading = 10.0
    try:
        ms = {m.quantity: m for m in d.read()}
    finally:
        d.close()
    assert ms["methane"].value == pytest.approx(4400.0)
    assert ms["methane_lel"].value == pytest.approx(10.0)


def test_status_warmup_and_range_flags(pty_factory):
    dev = DynamentDevice(reading=-250.0, status=0x0004)
    host = pty_factory(dev)
    s = DynamentSettings(port=host.port, unit="%vol", timeout_s=0.3, warmup_s=3600)
    d = DynamentDriver(s)
    try:
        ms = {m.quantity: m for m in d.read()}
    finally:
        d.close()
    assert ms["methane"].value == -2_500_000.0  # reported as the device sent it, never replaced
    assert ms["methane"].flags == {SENSOR_FAULT, WARMING_UP, OUT_OF_RANGE}
    assert ms["sensor_status"].value == 4.0


def test_settings_require_unit():
    with pytest.raises(ValueError, match="unit"):
        DynamentSettings(port="/dev/null")
    with pytest.raises(ValueError, match="bogus"):
        DynamentSettings(port="/dev/null", unit="ppm", bogus=1)


def test_nak_fault(pty_factory):
    dev = DynamentDevice(reading=1.0)
    host = pty_factory(dev)
    d = _driver(host)
    dev.fault = Fault.NAK
    dev.nak_reason = 8
    try:
        with pytest.raises(DriverError) as info:
            d.read()
    finally:
        d.close()
    assert info.value.kind == "nak" and "busy" in info.value.message
