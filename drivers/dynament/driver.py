"""Dynament Premier / Platinum NDIR methane sensor over UART, P2P protocol.

By default it reads "live data" (var 0x01, structure version 4, 32 bytes), which carries the sensor's
temperature as well as the gas reading; ``variable = "live-data-simple"`` reads the 8-byte var 0x06
instead (no temperature) for sensors that answer another live-data version. Both layouts come from two
third-party sources that agree [T]; the temperature's unit is not stated and is taken as degC [U].

Unconfirmed points (reference §9.2) are settings: the unit of the gas float (it is not in the frame),
the checksum mode, the warm-up time. Status bit meanings are not public, so any non-zero status word
flags ``sensor_fault`` and the raw word is reported as ``sensor_status``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import SENSOR_FAULT, WARMING_UP, DriverError, DriverSettings, Measurement
from drivers.codec_error import CodecError
from drivers.dynament import codec
from drivers.methane import MethaneSettings, MethaneUnit, methane_measurements, to_ppm
from drivers.transport.serial_port import SerialDriver, SerialPort, SerialSettings
from drivers.warmup import WarmupTimer

Variable = Literal["live-data", "live-data-simple"]
_VAR_IDS: dict[str, int] = {"live-data": codec.VAR_LIVE_DATA, "live-data-simple": codec.VAR_LIVE_DATA_SIMPLE}


class DynamentSettings(SerialSettings, MethaneSettings):
    baud: int = Field(38400, description="line speed; Premier/Platinum default 38400 8N1 (9600 if reconfigured)")
    unit: MethaneUnit = Field(
        ..., description="unit of the sensor's reading (%LEL, %vol or ppm; set by the sensor's type/config) [U]"
    )
    checksum_mode: codec.ChecksumMode = Field("sum", description="'sum' (default) or 'crc' (CRC-16 0x8005) [U]")
    warmup_s: float = Field(60.0, ge=0, le=172_800, description="warm-up flag window after (re)open [U]")
    variable: Variable = Field(
        "live-data",
        description="'live-data' (var 0x01 v4: reading and temperature, degC [U]) or 'live-data-simple' "
        "(var 0x06: reading only)",
    )


class DynamentDriver(SerialDriver):
    name: ClassVar[str] = "dynament"
    Settings: ClassVar[type[DriverSettings]] = DynamentSettings

    def __init__(self, settings: DriverSettings) -> None:
        if not isinstance(settings, DynamentSettings):
            raise TypeError("DynamentDriver needs DynamentSettings")
        self._s = settings
        self._warmup = WarmupTimer()
        self._port = SerialPort.from_settings(settings, on_open=self._warmup.restart)
        self._request = codec.build_read_request(_VAR_IDS[settings.variable], settings.checksum_mode)

    def _decode(self, frame: bytes) -> codec.LiveData | codec.LiveDataSimple:
        try:
            data = codec.parse_reply(frame, self._s.checksum_mode)
            if self._s.variable == "live-data":
                return codec.decode_live_data(data)
            return codec.decode_live_data_simple(data)
        except CodecError as exc:
            hint = ""
            if self._s.variable == "live-data" and exc.kind == "bad_frame":
                hint = '; variable = "live-data-simple" reads the 8-byte var 0x06 instead (no temperature)'
            raise DriverError(exc.kind, f"{self._s.port}: {exc.message}{hint}") from exc

    def read(self) -> list[Measurement]:
        frame = self._port.transact(self._request, codec.extract, self._s.timeout_s)
        live = self._decode(frame)
        flags: set[str] = set()
        if live.status:
            flags.add(SENSOR_FAULT)
        status_flags = frozenset(flags)
        if self._warmup.active(self._s.warmup_s):
            flags.add(WARMING_UP)
        ppm = to_ppm(live.reading, self._s.unit, self._s.lel_vol_percent)
        out = methane_measurements(ppm, self._s, frozenset(flags))
        out.append(Measurement("sensor_status", float(live.status), "bits", frozenset(flags)))
        if isinstance(live, codec.LiveData):
            # The gas warm-up window says nothing about the temperature; a status bit might, so it is kept.
            # The sensor head's own temperature (as INIR reports it), not the site's ambient temperature.
            out.append(Measurement("sensor_temperature", round(live.temperature_c, 4), "degC", status_flags))
        return out
