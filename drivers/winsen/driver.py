"""Winsen MH-440D / MH-441D NDIR methane sensor over UART (TTL, 9600 8N1).

The datasheet's scale factor is garbled and the public libraries disagree (reference §1.2, §9.1), so
``scale`` and ``unit`` are required settings: value = raw x scale, in ``unit``. Check them against
span gas before trusting the numbers. The device has no NAK; a bad command simply gets no reply.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from drivers.base import WARMING_UP, DriverError, DriverSettings, Measurement
from drivers.codec_error import CodecError
from drivers.methane import MethaneSettings, MethaneUnit, methane_measurements, to_ppm
from drivers.transport.serial_port import SerialDriver, SerialPort, SerialSettings
from drivers.warmup import WarmupTimer
from drivers.winsen import codec


class WinsenSettings(SerialSettings, MethaneSettings):
    baud: int = Field(9600, description="line speed; 9600 8N1")
    scale: float = Field(..., gt=0, description="concentration per raw count, in `unit` (unconfirmed, required) [U]")
    unit: MethaneUnit = Field(..., description="unit that raw x scale is in: ppm, %vol or %LEL [U]")
    warmup_s: float = Field(180.0, ge=0, le=3600, description="warm-up window after (re)open (one source: 3 min) [U]")


class WinsenMh440dDriver(SerialDriver):
    name: ClassVar[str] = "winsen-mh440d"
    Settings: ClassVar[type[DriverSettings]] = WinsenSettings

    def __init__(self, settings: DriverSettings) -> None:
        if not isinstance(settings, WinsenSettings):
            raise TypeError("WinsenMh440dDriver needs WinsenSettings")
        self._s = settings
        self._warmup = WarmupTimer()
        self._port = SerialPort.from_settings(settings, on_open=self._warmup.restart)
        self._request = codec.build_request(codec.CMD_READ)

    def read(self) -> list[Measurement]:
        frame = self._port.transact(self._request, codec.extract, self._s.timeout_s)
        try:
            raw = codec.parse_read_reply(frame)
        except CodecError as exc:
            raise DriverError(exc.kind, f"{self._s.port}: {exc.message}") from exc
        flags = frozenset({WARMING_UP}) if self._warmup.active(self._s.warmup_s) else frozenset()
        ppm = to_ppm(raw * self._s.scale, self._s.unit, self._s.lel_vol_percent)
        return [*methane_measurements(ppm, self._s, flags), Measurement("sensor_raw", float(raw), "counts", flags)]

    def calibrate(self, kind: str, value: float | None = None) -> None:
        """Zero (0x87, in zero air) or span (0x88, value in the configured unit). The sensor does not
        answer these commands, so success means "sent", not "accepted"."""
        if kind == "zero":
            self._port.write(codec.build_request(codec.CMD_ZERO))
            return
        if kind == "span":
            if value is None or value <= 0:
                raise DriverError("bad_request", "span calibration needs a positive gas value")
            raw = round(value / self._s.scale)
            if not 0 < raw <= 0xFFFF:
                raise DriverError("bad_request", f"span value {value} is outside the sensor's raw range")
            self._port.write(codec.build_request(codec.CMD_SPAN, raw.to_bytes(2, "big")))
            return
        raise DriverError("unsupported", f"winsen-mh440d cannot calibrate {kind!r}")
