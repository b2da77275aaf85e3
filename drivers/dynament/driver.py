"""Dynament Premier / Platinum NDIR methane sensor over UART, P2P protocol, live-data-simple (var 0x06).

Unconfirmed points (reference §9.2) are settings: the unit of the live-data float (it is not in the
frame), the checksum mode, the warm-up time. Status bit meanings are not public, so any non-zero
status word flags ``sensor_fault`` and the raw word is reported as ``sensor_status``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from drivers.base import SENSOR_FAULT, WARMING_UP, DriverError, DriverSettings, Measurement
from drivers.codec_error import CodecError
from drivers.dynament import codec
from drivers.methane import MethaneSettings, MethaneUnit, methane_measurements, to_ppm
from drivers.transport.serial_port import SerialPort, SerialSettings
from drivers.warmup import WarmupTimer


class DynamentSettings(SerialSettings, MethaneSettings):
    baud: int = Field(38400, description="line speed; Premier/Platinum default 38400 8N1 (9600 if reconfigured)")
    unit: MethaneUnit = Field(
        ..., description="unit of the sensor's reading (%LEL, %vol or ppm; set by the sensor's type/config) [U]"
    )
    checksum_mode: codec.ChecksumMode = Field("sum", description="'sum' (default) or 'crc' (CRC-16 0x8005) [U]")
    warmup_s: float = Field(60.0, ge=0, le=172_800, description="warm-up flag window after (re)open [U]")


class DynamentDriver:
    name: ClassVar[str] = "dynament"
    Settings: ClassVar[type[DriverSettings]] = DynamentSettings

    def __init__(self, settings: DriverSettings) -> None:
        if not isinstance(settings, DynamentSettings):
            raise TypeError("DynamentDriver needs DynamentSettings")
        self._s = settings
        self._warmup = WarmupTimer()
        self._port = SerialPort.from_settings(settings, on_open=self._warmup.restart)
        self._request = codec.build_read_request(codec.VAR_LIVE_DATA_SIMPLE, settings.checksum_mode)

    def open(self) -> None:
        self._port.ensure_open()

    def close(self) -> None:
        self._port.close()

    def read(self) -> list[Measurement]:
        frame = self._port.transact(self._request, codec.extract, self._s.timeout_s)
        try:
            live = codec.decode_live_data_simple(codec.parse_reply(frame, self._s.checksum_mode))
        except CodecError as exc:
            raise DriverError(exc.kind, f"{self._s.port}: {exc.message}") from exc
        flags: set[str] = set()
        if live.status:
            flags.add(SENSOR_FAULT)
        if self._warmup.active(self._s.warmup_s):
            flags.add(WARMING_UP)
        ppm = to_ppm(live.reading, self._s.unit, self._s.lel_vol_percent)
        out = methane_measurements(ppm, self._s, frozenset(flags))
        out.append(Measurement("sensor_status", float(live.status), "bits", frozenset(flags)))
        return out
