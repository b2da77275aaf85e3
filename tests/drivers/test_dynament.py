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


# Live data (var 0x01, v4): reading 2.5, temperature 25.0 degC, status 0, detector 31000, reference 32000,
# absorbance 0.0125, uptime 3600 s (0x0E10: its 0x10 is stuffed), min/max 30000/32000/31000/33000.
LIVE_VECTOR = ("10 1A 20 04 00 00 00 00 00 20 40 00 00 C8 41 18 79 00 7D CD CC 4C 3C 10 10 0E 00 00 30 75 00 7D"
               " 18 79 E8 80 10 1F 08 5E")


def _live_payload(reading: float, temperature: float, status: int = 0, version: int = 4) -> bytes:
    return struct.pack("<HHffHHfIHHHH", version, status, reading, temperature, 31000, 32000, 0.0125, 3600,
                       30000, 32000, 31000, 33000)


def test_live_data_vector():
    frame = bytes.fromhex(LIVE_VECTOR)
    # The checksum is the plain 16-bit sum of every wire byte up to EOF, stuffing DLE included.
    assert int.from_bytes(frame[-2:], "big") == sum(frame[:-2]) & 0xFFFF
    assert codec.build_data_reply(_live_payload(2.5, 25.0)) == frame
    assert DynamentDevice(reading=2.5, temperature=25.0).reply(codec.build_read_request(0x01)) == frame
    live = codec.decode_live_data(codec.parse_reply(frame))
    assert (live.version, live.status, live.reading, live.temperature_c) == (4, 0, 2.5, 25.0)
    assert (live.detector, live.reference, live.uptime) == (31000, 32000, 3600)
    assert live.absorbance == pytest.approx(0.0125)


def test_live_data_wrong_version_or_length_refused():
    with pytest.raises(CodecError, match="version 3"):
        codec.decode_live_data(_live_payload(1.0, 20.0, version=3))
    with pytest.raises(CodecError, match="32 bytes, got 31"):
        codec.decode_live_data(_live_payload(1.0, 20.0)[:31])
    with pytest.raises(CodecError, match="temperature"):
        codec.decode_live_data(_live_payload(1.0, float("nan")))
    with pytest.raises(CodecError, match="reading"):
        codec.decode_live_data(_live_payload(float("inf"), 20.0))


@given(st.floats(allow_nan=False, allow_infinity=False, width=32),
       st.floats(min_value=-60, max_value=120, width=32), st.integers(0, 0xFFFF), st.sampled_from(["sum", "crc"]))
def test_live_data_roundtrip(value, temperature, status, mode):
    frame = codec.build_data_reply(_live_payload(value, temperature, status), mode)
    got, used = codec.extract(b"\x13\x1f" + frame)
    assert got == frame and used == len(frame) + 2
    live = codec.decode_live_data(codec.parse_reply(got, mode))
    assert (live.status, live.reading, live.temperature_c) == (status, value, temperature)


@settings(max_examples=300)
@given(st.floats(allow_nan=False, allow_infinity=False, width=32), st.floats(-40, 85, width=32),
       st.integers(0, 63), st.integers(1, 255))
def test_corrupted_live_data_never_yields_value(value, temperature, pos, flip):
    frame = bytearray(codec.build_data_reply(_live_payload(value, temperature)))
    frame[pos % len(frame)] ^= flip
    try:
        live = codec.decode_live_data(codec.parse_reply(bytes(frame)))
    except CodecError:
        return
    pytest.fail(f"corrupted frame accepted: {live}")


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
    dev = DynamentDevice(reading=value, temperature=-12.25)
    host = pty_factory(dev)
    d = _driver(host, range_ppm=400_000)
    try:
        ms = {m.quantity: m for m in d.read()}
    finally:
        d.close()
    assert dev.requests[-1] == bytes.fromhex("10 13 01 10 1F 00 53")  # live data (var 0x01) by default
    assert ms["methane"].value == pytest.approx(value * 10_000, rel=1e-6)
    assert ms["methane"].unit == "ppm"
    assert ms["methane_lel"].value == pytest.approx(value * 10_000 / 50_000 * 100, rel=1e-6)
    assert ms["methane"].flags == frozenset()
    assert (ms["sensor_temperature"].value, ms["sensor_temperature"].unit, ms["sensor_temperature"].flags) == (
        -12.25, "degC", frozenset())


def test_live_data_simple_variable_has_no_temperature(pty_factory):
    dev = DynamentDevice(reading=2.5)
    d = _driver(pty_factory(dev), variable="live-data-simple")
    try:
        ms = {m.quantity: m for m in d.read()}
    finally:
        d.close()
    assert dev.requests == [bytes.fromhex("10 13 06 10 1F 00 58")]
    assert ms["methane"].value == pytest.approx(25_000.0)
    assert "sensor_temperature" not in ms


def test_other_live_data_version_is_a_clear_error(pty_factory):
    dev = DynamentDevice(reading=2.5, live_data_version=5)
    d = _driver(pty_factory(dev))
    try:
        with pytest.raises(DriverError) as info:
            d.read()
    finally:
        d.close()
    assert info.value.kind == "bad_frame"
    assert "version 5" in info.value.message and 'variable = "live-data-simple"' in info.value.message


def test_settings_reject_unknown_variable():
    with pytest.raises(ValueError, match="variable"):
        DynamentSettings(port="/dev/null", unit="ppm", variable="live-data-2")


def test_driver_crc_mode_and_lel_unit(pty_factory):
    dev = DynamentDevice(reading=20.0, crc=True)
    host = pty_factory(dev)
    d = _driver(host, checksum_mode="crc", variable="live-data-simple")
    try:
        ms = {m.quantity: m for m in d.read()}
    finally:
        d.close()
    assert dev.requests[-1][-2:] == bytes.fromhex("9BBF")  # the reference's CRC-mode vector (var 0x06)
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
    assert ms["sensor_temperature"].flags == {SENSOR_FAULT}  # the gas warm-up window is not the temperature's


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
