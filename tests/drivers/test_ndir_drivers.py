from __future__ import annotations

import pytest

from drivers.base import OUT_OF_RANGE, SENSOR_FAULT, STALE, WARMING_UP, DriverError
from drivers.codec_error import ChecksumError, CodecError, NakError
from drivers.cubic import codec as cubic
from drivers.cubic.driver import CubicSettings, CubicSjh5Driver
from drivers.inir import codec as inir
from drivers.inir.driver import InirDriver, InirSettings, flags_for
from drivers.nmea import codec as nmea
from drivers.nmea.driver import NmeaGpsDriver, NmeaSettings
from drivers.winsen import codec as winsen
from drivers.winsen.driver import WinsenMh440dDriver, WinsenSettings
from tests.devices.cubic import CubicDevice
from tests.devices.inir import InirDevice
from tests.devices.nmea import NmeaDevice
from tests.devices.winsen import WinsenDevice
from tests.eventually import eventually

FAST = {"timeout_s": 0.4, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}


def _by_q(ms):
    return {m.quantity: m for m in ms}


def test_cubic_vectors():
    assert cubic.build_request(cubic.CMD_READ) == bytes.fromhex("11 01 01 ED")
    assert cubic.build_request(cubic.CMD_ZERO) == bytes.fromhex("11 01 03 EB")
    abc = bytes.fromhex("11 07 10 00 01 07 00 00 00 D0")
    assert cubic.build_request(0x10, bytes.fromhex("00 01 07 00 00 00")) == abc
    m = cubic.decode_measurement(cubic.parse_reply(bytes.fromhex("16 05 01 00 FA 00 00 EA"), 1))
    assert (m.value, m.st1) == (2.5, 0)
    m = cubic.decode_measurement(cubic.parse_reply(bytes.fromhex("16 05 01 00 00 01 00 E3"), 1))
    assert (m.value, m.st1) == (0.0, 1)
    with pytest.raises(NakError) as info:
        cubic.parse_reply(bytes((0x06, 0x02, 0x01, 0x02, (-(0x06 + 0x02 + 0x01 + 0x02)) & 0xFF)), 1)
    assert info.value.code == 2


@pytest.mark.parametrize(("st1", "flags"), [
    (0x01, {WARMING_UP}), (0x02, {SENSOR_FAULT}), (0x04, {OUT_OF_RANGE}), (0x20, {SENSOR_FAULT}),
    (0x08, set()), (0x80 | 0x01, {SENSOR_FAULT, WARMING_UP}),
])
def test_cubic_status_flags(pty_factory, st1, flags):
    dev = CubicDevice(percent_vol=0.0 if st1 & 1 else 0.75, st1=st1)
    d = CubicSjh5Driver(CubicSettings(port=pty_factory(dev).port, warmup_s=0, **FAST))
    try:
        ms = _by_q(d.read())
    finally:
        d.close()
    assert ms["methane"].flags == flags
    assert ms["methane"].value == (0.0 if st1 & 1 else 7500.0)


@pytest.mark.parametrize("pct", [0.0, 0.01, 1.0, 2.5, 4.99, 5.0, 5.5, 99.99])
def test_cubic_many_values(pty_factory, pct):
    dev = CubicDevice(percent_vol=pct)
    d = CubicSjh5Driver(CubicSettings(port=pty_factory(dev).port, warmup_s=0, **FAST))
    try:
        ms = _by_q(d.read())
        d.calibrate("zero")
        with pytest.raises(DriverError):
            d.calibrate("span", 1.0)
    finally:
        d.close()
    assert ms["methane"].value == pytest.approx(pct * 10_000)
    assert (OUT_OF_RANGE in ms["methane"].flags) == (pct > 5.0)
    assert dev.zeroed == 1 and dev.requests[-1] == bytes.fromhex("11 01 03 EB")


def test_winsen_vectors_and_calibration(pty_factory):
    assert winsen.build_request(winsen.CMD_READ) == bytes.fromhex("FF 01 86 00 00 00 00 00 79")
    assert winsen.build_request(winsen.CMD_ZERO) == bytes.fromhex("FF 01 87 00 00 00 00 00 78")
    assert winsen.build_request(winsen.CMD_SPAN, bytes((0x07, 0xD0))) == bytes.fromhex("FF 01 88 07 D0 00 00 00 A0")
    assert winsen.parse_read_reply(bytes.fromhex("FF 86 02 60 47 00 00 00 D1")) == 608
    dev = WinsenDevice(raw=608)
    d = WinsenMh440dDriver(WinsenSettings(port=pty_factory(dev).port, scale=0.01, unit="%vol", warmup_s=60, **FAST))
    try:
        ms = _by_q(d.read())
        d.calibrate("zero")
        d.calibrate("span", 20.0)
        eventually(lambda: len(dev.calibrations) == 2, 5)
        assert dev.calibrations == [(0x87, 0), (0x88, 2000)]
        assert dev.requests[0] == bytes.fromhex("FF 01 86 00 00 00 00 00 79")
    finally:
        d.close()
    assert ms["methane"].value == pytest.approx(60_800.0)
    assert ms["methane"].flags == {WARMING_UP}
    assert ms["sensor_raw"].value == 608


def test_winsen_scale_and_unit_required():
    with pytest.raises(ValueError, match="scale"):
        WinsenSettings(port="/dev/ttyS0", unit="ppm")


def test_inir_vector_and_faults():
    words = ["0000005b", "00002710", "aaaaaaaa", "00000ba6", "000003eb", "fffffc14", "0000005d"]
    f = inir.parse(b"\r\n".join(w.encode() for w in words))
    assert (f.concentration_ppm, f.temperature_c) == (10_000, 25.05)
    assert flags_for(0xAAAAAAAA) == set()
    assert flags_for(0xAAAAAA1A) == set()  # power-on reset is normal after power-up
    assert flags_for(0xAAAAAAA1) == {SENSOR_FAULT}
    assert flags_for(0xAAAAA1AA) == {WARMING_UP}
    assert flags_for(0xA1AAAAAA) == {OUT_OF_RANGE}
    assert inir.describe_faults(0xA2AAAAA3) == ["gas sensor: active or reference weak", "general: under range"]


@pytest.mark.parametrize("term", [b"\n\r", b"\r\n", b" "])
@pytest.mark.parametrize("ppm", [0, 91, 93, 10_000, 49_999, 60_000])
def test_inir_stream_mode(pty_factory, term, ppm):
    dev = InirDevice(ppm=ppm, faults=0xAAAAAA1A, temp_c=-5.0, terminator=term)
    d = InirDriver(InirSettings(port=pty_factory(dev).port, warmup_s=0, timeout_s=2.0, startup_commands=False))
    try:
        ms = _by_q(d.read())
    finally:
        d.close()
    assert ms["methane"].value == ppm
    assert ms["sensor_temperature"].value == pytest.approx(-5.0, abs=0.06)
    assert ms["methane"].flags == ({OUT_OF_RANGE} if ppm > 50_000 else set())
    assert dev.requests == []  # stream mode never writes to the sensor


def test_inir_on_demand_warmup(pty_factory):
    dev = InirDevice(ppm=500, streaming=False)
    d = InirDriver(InirSettings(port=pty_factory(dev).port, mode="on_demand", startup_commands=False, **FAST))
    try:
        ms = _by_q(d.read())
    finally:
        d.close()
    assert dev.requests == [b"[Q]"]
    assert ms["methane"].flags == {WARMING_UP}


def test_nmea_vectors():
    gga = nmea.parse_gga(nmea.parse_sentence(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"))
    assert gga.latitude == pytest.approx(48.1173) and gga.longitude == pytest.approx(11.516666, abs=1e-6)
    assert (gga.quality, gga.satellites, gga.altitude_m) == (1, 8, 545.4)
    rmc = nmea.parse_rmc(nmea.parse_sentence(b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"))
    assert rmc.valid and rmc.when is not None and rmc.when.isoformat() == "1994-03-23T12:35:19+00:00"
    # The widely copied variant without the trailing ",," keeps *47 and passes the XOR (the two commas
    # cancel out, contrary to reference §5), but it has 13 fields, so the GGA parser rejects it.
    short = nmea.parse_sentence(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M*47")
    with pytest.raises(CodecError, match="14 fields"):
        nmea.parse_gga(short)
    with pytest.raises(ChecksumError):
        nmea.parse_sentence(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*46")
    assert nmea.build_sentence("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,").endswith(b"*47\r\n")


def test_nmea_driver_fix_clock_and_stale(pty_factory):
    dev = NmeaDevice(lat=51.5, lon=-0.1276)
    host = pty_factory(dev)
    d = NmeaGpsDriver(NmeaSettings(port=host.port, **FAST))
    try:
        ms = _by_q(d.read())
        assert ms["latitude"].value == pytest.approx(51.5, abs=1e-6)
        assert ms["longitude"].value == pytest.approx(-0.1276, abs=1e-6)
        assert abs(ms["gps_clock_offset_s"].value) < 5
        assert ms["latitude"].flags == frozenset()
        dev.frozen = True
        d.read()
        assert _by_q(d.read())["latitude"].flags == {STALE}
        dev.frozen, dev.fix = False, 0
        ms = _by_q(d.read())
    finally:
        d.close()
    assert ms["gps_fix_quality"].value == 0 and "latitude" not in ms


def test_calibration_capability_is_optional():
    from drivers.base import Calibratable
    from drivers.dynament.driver import DynamentDriver, DynamentSettings

    assert isinstance(CubicSjh5Driver(CubicSettings(port="/dev/null")), Calibratable)
    assert isinstance(WinsenMh440dDriver(WinsenSettings(port="/dev/null", scale=1, unit="ppm")), Calibratable)
    assert not isinstance(DynamentDriver(DynamentSettings(port="/dev/null", unit="ppm")), Calibratable)
