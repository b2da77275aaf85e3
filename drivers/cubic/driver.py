"""Cubic SJH-5 / SJH-100 NDIR methane sensor over UART (TTL 3.3 V; level-shift from 5 V hosts).

Status bits map to flags: warming up → ``warming_up`` (the sensor forces 0 meanwhile; the 0 is passed
on flagged, never replaced), out of range → ``out_of_range``, malfunction / not calibrated / high
humidity / channel over limit → ``sensor_fault``. Warm-up length is unconfirmed (10 s or 30 s); the
sensor's own bit is authoritative and ``warmup_s`` adds a host-side window.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import OUT_OF_RANGE, SENSOR_FAULT, WARMING_UP, DriverError, DriverSettings, Measurement
from drivers.codec_error import CodecError
from drivers.cubic import codec
from drivers.methane import MethaneSettings, methane_measurements, to_ppm
from drivers.transport.serial_port import SerialDriver, SerialPort, SerialSettings
from drivers.warmup import WarmupTimer


class CubicSettings(SerialSettings, MethaneSettings):
    baud: int = Field(9600, description="line speed; SJH default 9600 8N1")
    unit: Literal["%vol", "ppm"] = Field("%vol", description="unit of the reading (SJH series: %vol)")
    range_ppm: float | None = Field(50_000.0, gt=0, description="full scale in ppm (SJH-5: 50000, SJH-100: 1e6)")
    warmup_s: float = Field(30.0, ge=0, le=3600, description="host-side warm-up window after (re)open [U]")


class CubicSjh5Driver(SerialDriver):
    name: ClassVar[str] = "cubic-sjh5"
    Settings: ClassVar[type[DriverSettings]] = CubicSettings

    def __init__(self, settings: DriverSettings) -> None:
        if not isinstance(settings, CubicSettings):
            raise TypeError("CubicSjh5Driver needs CubicSettings")
        self._s = settings
        self._warmup = WarmupTimer()
        self._port = SerialPort.from_settings(settings, on_open=self._warmup.restart)

    def _command(self, cmd: int, data: bytes = b"") -> bytes:
        frame = self._port.transact(codec.build_request(cmd, data), codec.extract, self._s.timeout_s)
        try:
            return codec.parse_reply(frame, cmd)
        except CodecError as exc:
            raise DriverError(exc.kind, f"{self._s.port}: {exc.message}") from exc

    def read(self) -> list[Measurement]:
        try:
            m = codec.decode_measurement(self._command(codec.CMD_READ))
        except CodecError as exc:
            raise DriverError(exc.kind, f"{self._s.port}: {exc.message}") from exc
        flags: set[str] = set()
        if m.st1 & codec.ST1_WARMING_UP or self._warmup.active(self._s.warmup_s):
            flags.add(WARMING_UP)
        if m.st1 & codec.ST1_OUT_OF_RANGE:
            flags.add(OUT_OF_RANGE)
        if m.st1 & codec.ST1_FAULT_BITS:
            flags.add(SENSOR_FAULT)
        ppm = to_ppm(m.value, self._s.unit, self._s.lel_vol_percent)
        out = methane_measurements(ppm, self._s, frozenset(flags))
        out.append(Measurement("sensor_status", float(m.st1), "bits", frozenset(flags)))
        return out

    def calibrate(self, kind: str, value: float | None = None) -> None:
        """Zero adjustment in zero air (command 0x03). Span needs a gas number the datasheet leaves
        unclear, so it is refused rather than guessed."""
        if kind != "zero":
            raise DriverError("unsupported", f"cubic-sjh5 supports zero calibration only, not {kind!r}")
        self._command(codec.CMD_ZERO)
