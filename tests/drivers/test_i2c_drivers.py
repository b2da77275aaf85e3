from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ads1115 import codec as ads
from drivers.ads1115.driver import Ads1115MosDriver, Ads1115MosSettings
from drivers.base import OUT_OF_RANGE, SENSOR_FAULT, WARMING_UP, DriverError
from drivers.bme280 import codec as bme
from drivers.bme280.driver import Bme280Driver, Bme280Settings
from drivers.codec_error import ChecksumError, CodecError
from drivers.sht31 import codec as sht
from drivers.sht31.driver import Sht31Driver, Sht31Settings
from tests.devices.ads1115 import Ads1115Chip
from tests.devices.bme280 import Bme280Chip
from tests.devices.i2c_bus import FakeSMBus
from tests.devices.sht31 import Sht31Chip


def _q(ms):
    return {m.quantity: m for m in ms}


# --- ADS1115 + MOX -----------------------------------------------------------------------------
def test_ads1115_reference_vector():
    chip = Ads1115Chip(volts=(2.048, 0, 0, 0))
    bus = FakeSMBus({0x48: chip})
    bus.write_i2c_block_data(0x48, 0x01, [0xC3, 0x83])
    assert bus.read_i2c_block_data(0x48, 0x01, 2)[0] & 0x80 == 0  # still converting
    while not bus.read_i2c_block_data(0x48, 0x01, 2)[0] & 0x80:
        pass
    assert bytes(bus.read_i2c_block_data(0x48, 0x00, 2)) == bytes.fromhex("40 00")
    assert ads.conversion_volts(b"\x40\x00", 4.096) == (0x4000, 2.048)


def _mos(chip, **kw):
    s = Ads1115MosSettings(**{"r0_ohm": 14_414.0625, "warmup_s": 0, **kw})
    return Ads1115MosDriver(s, bus=FakeSMBus({s.address: chip}))


@pytest.mark.parametrize(("v_rl", "ratio"), [(2.048, 1.0), (1.5, None), (2.5, None), (1.0, None)])
def test_mos_ppm_from_emulated_adc(v_rl, ratio):
    chip = Ads1115Chip(volts=(0, 0, v_rl, 0))
    d = _mos(chip, channel=2)
    d.open()
    ms = _q(d.read())
    lsb = 4.096 / 32768
    v = round(v_rl / lsb) * lsb
    rs = (5.0 / v - 1) * 10_000
    want = 5000 * (rs / 14_414.0625) ** -2.15
    assert ms["mos_voltage"].value == pytest.approx(v, abs=1e-6)
    assert ms["mos_resistance"].value == pytest.approx(rs, rel=1e-6)
    assert ms["methane"].value == pytest.approx(want, rel=1e-6)
    if ratio == 1.0:
        assert ms["methane"].value == pytest.approx(5000.0, rel=1e-4)
    assert chip.conversions == 1
    assert (OUT_OF_RANGE in ms["methane"].flags) == (not 500 <= want <= 12_500)


def test_mos_divider_gain_and_mq4_preset():
    chip = Ads1115Chip(volts=(0.5, 0, 0, 0))
    d = _mos(chip, fsr_v=1.024, input_divider=2.0, model="mq4", r0_ohm=40_000.0)
    ms = _q(d.read())
    assert ms["mos_voltage"].value == pytest.approx(1.0, abs=1e-4)
    assert ms["methane"].value == pytest.approx(1012.7 * ((5 / 1.0 - 1) * 10_000 / 40_000) ** -2.786, rel=1e-3)


def test_mos_open_sensor_and_saturation_never_invent_ppm():
    d = _mos(Ads1115Chip(volts=(0.0, 0, 0, 0)))
    ms = d.read()
    assert [m.quantity for m in ms] == ["mos_voltage"] and ms[0].flags == {SENSOR_FAULT}
    d = _mos(Ads1115Chip(volts=(5.0, 0, 0, 0)), fsr_v=2.048)
    ms = _q(d.read())
    assert OUT_OF_RANGE in ms["mos_voltage"].flags


def test_mos_warmup_flag_and_stuck_conversion():
    chip = Ads1115Chip(volts=(2.0, 0, 0, 0))
    d = _mos(chip, warmup_s=3600, timeout_s=0.05)
    d.open()
    assert WARMING_UP in _q(d.read())["methane"].flags
    chip.stuck = True
    with pytest.raises(DriverError) as info:
        d.read()
    assert info.value.kind == "timeout"


def test_mos_settings_errors():
    with pytest.raises(ValueError, match="r0_ohm"):
        Ads1115MosSettings()
    with pytest.raises(ValueError, match="curve_a"):
        Ads1115MosSettings(r0_ohm=1000, model="custom")
    with pytest.raises(ValueError, match="fsr_v"):
        Ads1115MosSettings(r0_ohm=1000, fsr_v=3.3)


def test_missing_chip_is_an_i2c_error():
    d = Ads1115MosDriver(Ads1115MosSettings(r0_ohm=1000), bus=FakeSMBus({}))
    with pytest.raises(DriverError) as info:
        d.read()
    assert info.value.kind == "i2c_error" and "0x48" in info.value.message


# --- BME280 ------------------------------------------------------------------------------------
def test_bme280_reference_vector():
    cal = bme.Calibration((27504, 26435, -1000), (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000),
                          (75, 362, 0, 324, 50, 30))
    tf = bme.t_fine(cal, 519888)
    assert (tf, bme.temperature_centi(tf)) == (128422, 2508)
    assert bme.pressure_q24_8(cal, tf, 415148) == 25767233


@pytest.mark.parametrize(("t", "p", "h"), [(25.08, 100_653.25, 50.0), (-20.0, 95_000.0, 10.0), (0.0, 101_325.0, 99.0),
                                           (45.5, 80_000.0, 0.5), (21.5, 110_000.0, 65.0)])
def test_bme280_gives_back_chosen_values(t, p, h):
    chip = Bme280Chip(temp_c=t, pa=p, rh=h)
    bus = FakeSMBus({0x77: chip})
    d = Bme280Driver(Bme280Settings(address=0x77), bus=bus)
    d.open()
    ms = _q(d.read())
    assert ms["temperature"].value == pytest.approx(t, abs=0.011)
    assert ms["pressure"].value == pytest.approx(p / 100, abs=0.03)
    assert ms["humidity"].value == pytest.approx(h, abs=0.05)
    assert chip.measurements == 1 and chip.regs[0xF2] == 0x01 and chip.regs[0xF4] & 0xFC == 0x24


@settings(max_examples=40, deadline=None)
@given(st.floats(-30, 60), st.floats(70_000, 110_000), st.floats(1, 99))
def test_bme280_property_roundtrip(t, p, h):
    d = Bme280Driver(Bme280Settings(), bus=FakeSMBus({0x76: Bme280Chip(temp_c=t, pa=p, rh=h, busy_reads=0)}))
    ms = _q(d.read())
    assert ms["temperature"].value == pytest.approx(t, abs=0.011)
    assert ms["pressure"].value == pytest.approx(p / 100, abs=0.03)
    assert ms["humidity"].value == pytest.approx(h, abs=0.05)


def test_bme280_wrong_chip_is_refused():
    d = Bme280Driver(Bme280Settings(), bus=FakeSMBus({0x76: Bme280Chip(chip_id=0x58)}))
    with pytest.raises(DriverError) as info:
        d.open()
    assert info.value.kind == "wrong_chip" and "0x58" in info.value.message


# --- SHT31 -------------------------------------------------------------------------------------
def test_sht31_vectors():
    assert sht.crc8(b"\xbe\xef") == 0x92
    assert sht.parse_measurement(bytes.fromhex("66 66 93 66 66 93")) == (25.0, 40.0)
    with pytest.raises(ChecksumError):
        sht.parse_measurement(bytes.fromhex("66 66 92 66 66 93"))


@pytest.mark.parametrize(("t", "rh"), [(25.0, 40.0), (-40.0, 0.0), (125.0, 100.0), (21.37, 55.55)])
def test_sht31_driver(t, rh):
    chip = Sht31Chip(temp_c=t, rh=rh, busy_reads=3)
    d = Sht31Driver(Sht31Settings(measure_delay_s=0), bus=FakeSMBus({0x44: chip}))
    ms = _q(d.read())
    assert chip.commands == [b"\x24\x00"]
    assert ms["temperature"].value == pytest.approx(t, abs=0.003)
    assert ms["humidity"].value == pytest.approx(rh, abs=0.002)


def test_sht31_crc_error_and_timeout():
    chip = Sht31Chip()
    chip.corrupt = True
    d = Sht31Driver(Sht31Settings(measure_delay_s=0, address=0x45), bus=FakeSMBus({0x45: chip}))
    with pytest.raises(DriverError) as info:
        d.read()
    assert info.value.kind == "checksum_error"
    chip.corrupt, chip.busy_reads = False, 10**9
    d = Sht31Driver(Sht31Settings(measure_delay_s=0, timeout_s=0.05, address=0x45), bus=FakeSMBus({0x45: chip}))
    with pytest.raises(DriverError) as info:
        d.read()
    assert info.value.kind == "i2c_error"


@given(st.binary(max_size=12))
def test_i2c_parsers_only_codec_errors(data):
    for parse in (sht.parse_measurement, bme.split_data, lambda b: ads.conversion_volts(b, 4.096),
                  lambda b: bme.parse_calibration(b[:26].ljust(26, b"\0"), b[:7].ljust(7, b"\0"))):
        with contextlib.suppress(CodecError):
            parse(data)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 5), st.integers(1, 255))
def test_sht31_corruption_never_yields_value(a, b, pos, flip):
    reply = bytearray(a.to_bytes(2, "big") + bytes((sht.crc8(a.to_bytes(2, "big")),)) + b.to_bytes(2, "big")
                      + bytes((sht.crc8(b.to_bytes(2, "big")),)))
    reply[pos] ^= flip
    with pytest.raises(ChecksumError):
        sht.parse_measurement(bytes(reply))
