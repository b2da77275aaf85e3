"""Generic Modbus RTU (RS-485) methane transmitter through pymodbus: framing, CRC and register decoding
are the library's; this module only maps a configurable register map onto measurements.

There is no common register map for CH4 transmitters (reference §2), so everything is a setting:
slave id, function 03/04, the register number as the vendor documents it plus ``address_offset``
(e.g. 40001 for "4xxxx" numbering, 1 for 1-based lists), data type, word order, scale/offset, unit,
and an optional status register with fault / warm-up bit masks.

A frame with a bad CRC is discarded by pymodbus, so a corrupted reply surfaces as ``timeout``; an
exception response surfaces as ``nak`` with the exception code.

The port is opened exclusively, like every other UART driver's: pymodbus's ``ModbusSerialClient.connect``
passes ``exclusive=True`` to pyserial (a ``flock``), so two drivers, or the agent and a technician's
``sensor read``, cannot interleave frames on one RS-485 line. pymodbus only returns False when the open
fails, so the reason is found out separately (``open_failure_reason``) to name it in the error.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusException

from drivers.backoff import Backoff
from drivers.base import SENSOR_FAULT, WARMING_UP, DriverError, DriverSettings, Measurement
from drivers.methane import MethaneSettings, MethaneUnit, methane_measurements, to_ppm
from drivers.transport.serial_port import SerialSettings, open_failure_reason
from drivers.warmup import WarmupTimer

DataType = Literal["u16", "s16", "u32", "s32", "float32"]
_TYPES = {
    "u16": ModbusSerialClient.DATATYPE.UINT16,
    "s16": ModbusSerialClient.DATATYPE.INT16,
    "u32": ModbusSerialClient.DATATYPE.UINT32,
    "s32": ModbusSerialClient.DATATYPE.INT32,
    "float32": ModbusSerialClient.DATATYPE.FLOAT32,
}
EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "device failure"}


class ModbusSettings(SerialSettings, MethaneSettings):
    baud: int = Field(9600, description="line speed")
    parity: Literal["N", "E", "O"] = Field("N", description="parity (8N1 and 8E1 are common)")
    stopbits: Literal[1, 2] = Field(1, description="stop bits")
    slave: int = Field(1, ge=1, le=247, description="Modbus slave (unit) id")
    function: Literal[3, 4] = Field(3, description="3 = holding registers, 4 = input registers")
    value_register: int = Field(..., ge=0, description="concentration register number as the vendor documents it")
    address_offset: int = Field(0, ge=0, description="subtracted to get the wire address (40001, 30001, 1 or 0)")
    data_type: DataType = Field("u16", description="u16, s16, u32, s32 or float32")
    word_order: Literal["big", "little"] = Field("big", description="32-bit word order: big = ABCD, little = CDAB")
    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = Field(0.0, description="value = raw * scale + offset")
    unit: MethaneUnit = Field("ppm", description="unit of the scaled value")
    status_register: int | None = Field(None, ge=0, description="optional status register (same numbering)")
    status_function: Literal[3, 4] | None = Field(None, description="function for the status register")
    status_fault_mask: int = Field(0xFFFF, ge=0, le=0xFFFF, description="status bits meaning fault")
    status_warmup_mask: int = Field(0, ge=0, le=0xFFFF, description="status bits meaning warming up")
    warmup_s: float = Field(0.0, ge=0, le=172_800, description="host-side warm-up window after (re)open")

    @model_validator(mode="after")
    def _addresses(self) -> ModbusSettings:
        for name, reg in (("value_register", self.value_register), ("status_register", self.status_register)):
            if reg is not None and not 0 <= reg - self.address_offset <= 0xFFFF:
                raise ValueError(f"{name} {reg} minus address_offset {self.address_offset} is not 0..65535")
        return self

    def wire(self, reg: int) -> int:
        return reg - self.address_offset


class ModbusRtuDriver:
    name: ClassVar[str] = "modbus-rtu"
    Settings: ClassVar[type[DriverSettings]] = ModbusSettings

    def __init__(self, settings: DriverSettings) -> None:
        if not isinstance(settings, ModbusSettings):
            raise TypeError("ModbusRtuDriver needs ModbusSettings")
        self._s = settings
        self._client: ModbusSerialClient | None = None
        self._backoff = Backoff(settings.reconnect_min_s, max(settings.reconnect_min_s, settings.reconnect_max_s))
        self._warmup = WarmupTimer()

    def open(self) -> None:
        self._ensure()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _ensure(self) -> ModbusSerialClient:
        if self._client is not None:
            return self._client
        if not self._backoff.ready():
            raise DriverError("port_unavailable", f"{self._s.port}: next try in {self._backoff.remaining_s():.1f}s")
        s = self._s
        client = ModbusSerialClient(
            s.port, baudrate=s.baud, parity=s.parity, stopbits=s.stopbits, timeout=s.timeout_s, retries=0
        )
        if not client.connect():
            client.close()
            delay = self._backoff.failure()
            reason = open_failure_reason(s.port)
            raise DriverError("port_unavailable", f"{s.port}: cannot open: {reason}; retry in {delay:.1f}s")
        self._backoff.success()
        self._warmup.restart()
        self._client = client
        return client

    def _registers(self, function: int, reg: int, count: int) -> list[int]:
        client = self._ensure()
        read = client.read_holding_registers if function == 3 else client.read_input_registers
        try:
            reply: Any = read(self._s.wire(reg), count=count, device_id=self._s.slave)
        except ModbusException as exc:
            if client.connected:
                raise DriverError("timeout", f"{self._s.port}: slave {self._s.slave}: {exc}") from exc
            self.close()
            delay = self._backoff.failure()
            raise DriverError("port_lost", f"{self._s.port}: {exc}; reconnecting in {delay:.1f}s") from exc
        if reply.isError():
            code = getattr(reply, "exception_code", 0)
            raise DriverError("nak", f"slave {self._s.slave} exception {code} ({EXCEPTIONS.get(code, 'unknown')})")
        registers = list(reply.registers)
        if len(registers) != count:
            raise DriverError("bad_frame", f"asked for {count} registers, got {len(registers)}")
        return registers

    def read(self) -> list[Measurement]:
        s = self._s
        dtype = _TYPES[s.data_type]
        regs = self._registers(s.function, s.value_register, 1 if s.data_type in ("u16", "s16") else 2)
        raw = ModbusSerialClient.convert_from_registers(regs, dtype, word_order=s.word_order)
        assert isinstance(raw, int | float)
        if isinstance(raw, float) and not math.isfinite(raw):
            raise DriverError("sensor_fault", f"register {s.value_register} holds {raw}, not a reading")
        flags: set[str] = {WARMING_UP} if self._warmup.active(s.warmup_s) else set()
        extra: list[Measurement] = []
        if s.status_register is not None:
            status = self._registers(s.status_function or s.function, s.status_register, 1)[0]
            if status & s.status_fault_mask:
                flags.add(SENSOR_FAULT)
            if status & s.status_warmup_mask:
                flags.add(WARMING_UP)
            extra.append(Measurement("sensor_status", float(status), "bits", frozenset(flags)))
        ppm = to_ppm(raw * s.scale + s.offset, s.unit, s.lel_vol_percent)
        return [*methane_measurements(ppm, s, frozenset(flags)), *extra]
