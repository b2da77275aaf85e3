from __future__ import annotations

import struct

import pytest

from drivers.base import SENSOR_FAULT, WARMING_UP, DriverError
from drivers.modbus.driver import ModbusRtuDriver, ModbusSettings
from tests.devices.modbus_rtu import ModbusRtuDevice
from tests.drivers.conftest import eventually

FAST = {"timeout_s": 0.4, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}


def _read(pty_factory, dev, **kw):
    d = ModbusRtuDriver(ModbusSettings(port=pty_factory(dev).port, **{**FAST, **kw}))
    try:
        return {m.quantity: m for m in d.read()}
    finally:
        d.close()


def test_reference_request_and_reply(pty_factory):
    dev = ModbusRtuDevice(holding={0: 500})
    ms = _read(pty_factory, dev, value_register=0)
    assert dev.requests == [bytes.fromhex("01 03 00 00 00 01 84 0A")]
    assert ms["methane"].value == 500.0


def test_input_registers_float_word_orders(pty_factory):
    hi, lo = struct.unpack(">HH", struct.pack(">f", 123456.0))
    assert (hi, lo) == (0x47F1, 0x2000)
    dev = ModbusRtuDevice(slave=7, inputs={0: hi, 1: lo, 10: lo, 11: hi})
    ms = _read(pty_factory, dev, slave=7, function=4, value_register=30001, address_offset=30001,
               data_type="float32")
    assert dev.requests[0] == bytes.fromhex("07 04 00 00 00 02") + dev.requests[0][-2:]
    assert ms["methane"].value == 123456.0
    ms = _read(pty_factory, dev, slave=7, function=4, value_register=10, data_type="float32", word_order="little")
    assert ms["methane"].value == 123456.0


@pytest.mark.parametrize(("dtype", "regs", "raw"), [
    ("u16", [0xFFFF], 65535), ("s16", [0xFFFE], -2), ("u32", [0x0001, 0x0002], 65538),
    ("s32", [0xFFFF, 0xFFFF], -1),
])
def test_integer_types_scale_offset_units(pty_factory, dtype, regs, raw):
    dev = ModbusRtuDevice(holding=dict(enumerate(regs)))
    ms = _read(pty_factory, dev, value_register=0, data_type=dtype, scale=0.01, offset=0.5, unit="%LEL",
               negative_tolerance_ppm=1e9)
    assert ms["methane_lel"].value == pytest.approx(raw * 0.01 + 0.5)
    assert ms["methane"].value == pytest.approx((raw * 0.01 + 0.5) * 500)


def test_status_register_flags(pty_factory):
    dev = ModbusRtuDevice(holding={100: 1234, 101: 0x0003})
    ms = _read(pty_factory, dev, value_register=100, status_register=101, status_fault_mask=0x0002,
               status_warmup_mask=0x0001)
    assert ms["methane"].flags == {SENSOR_FAULT, WARMING_UP}
    assert ms["sensor_status"].value == 3


def test_exception_response_and_other_slave(pty_factory):
    dev = ModbusRtuDevice(holding={0: 1})
    with pytest.raises(DriverError) as info:
        _read(pty_factory, dev, value_register=5)
    assert info.value.kind == "nak" and "illegal data address" in info.value.message
    with pytest.raises(DriverError) as info:
        _read(pty_factory, ModbusRtuDevice(slave=2, holding={0: 1}), value_register=0)
    assert info.value.kind == "timeout"


def test_nan_float_is_not_a_reading(pty_factory):
    hi, lo = struct.unpack(">HH", struct.pack(">f", float("nan")))
    with pytest.raises(DriverError) as info:
        _read(pty_factory, ModbusRtuDevice(holding={0: hi, 1: lo}), value_register=0, data_type="float32")
    assert info.value.kind == "sensor_fault"


def test_register_numbering_is_validated():
    with pytest.raises(ValueError, match="address_offset"):
        ModbusSettings(port="/dev/ttyUSB0", value_register=1, address_offset=40001)


def _opened(port: str) -> ModbusRtuDriver:
    d = ModbusRtuDriver(ModbusSettings(port=port, value_register=0, **FAST))
    d.open()
    return d


def test_second_opener_gets_clear_error(pty_factory):
    """pymodbus opens with pyserial's exclusive flock, as SerialPort does: a second Modbus driver, or any
    other UART driver, on the same port is refused with a message that says the port is in use."""
    from drivers.dynament.driver import DynamentDriver, DynamentSettings

    host = pty_factory(ModbusRtuDevice(holding={0: 321}))
    first = _opened(host.port)
    try:
        second = ModbusRtuDriver(ModbusSettings(port=host.port, value_register=0, **FAST))
        with pytest.raises(DriverError) as info:
            second.read()
        assert info.value.kind == "port_unavailable"
        assert "in use" in info.value.message and "exclusive lock" in info.value.message
        other = DynamentDriver(DynamentSettings(port=host.port, unit="ppm", **FAST))
        with pytest.raises(DriverError) as info:
            other.open()
        assert info.value.kind == "port_unavailable" and "exclusively lock" in info.value.message
        assert {m.quantity: m.value for m in first.read()}["methane"] == 321.0  # the holder is undisturbed
    finally:
        first.close()
    ms, errors = eventually(second.read, 5)  # free again: the refused driver gets in after its backoff
    second.close()
    assert {m.quantity: m.value for m in ms}["methane"] == 321.0
    assert {e.kind for e in errors} <= {"port_unavailable"}


def test_modbus_refused_while_another_uart_driver_holds_port(pty_factory):
    from drivers.transport.serial_port import SerialPort

    host = pty_factory(ModbusRtuDevice(holding={0: 1}))
    holder = SerialPort(host.port, 9600)
    holder.ensure_open()
    try:
        with pytest.raises(DriverError) as info:
            _opened(host.port)
    finally:
        holder.close()
    assert info.value.kind == "port_unavailable" and "in use" in info.value.message


def test_missing_port_names_the_reason(tmp_path):
    with pytest.raises(DriverError) as info:
        _opened(str(tmp_path / "ttyUSB7"))
    assert info.value.kind == "port_unavailable" and "No such file" in info.value.message
