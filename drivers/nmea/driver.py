"""NMEA 0183 GPS receiver over UART: the site position and a time-quality signal.

Each read takes the next GGA (and RMC, when the receiver sends one within the timeout). Position is
reported only with a fix. ``gps_clock_offset_s`` = receiver UTC - host clock, from a valid RMC: the
agent uses it to judge whether its wall clock can be trusted. If the receiver repeats the same UTC
time as the previous read, every value is flagged ``stale``. Sentences with a bad checksum are
skipped; if only bad ones arrive, the read fails with ``checksum_error``.
"""

from __future__ import annotations

import time
from typing import ClassVar

from pydantic import Field

from drivers.base import STALE, DriverError, DriverSettings, Measurement
from drivers.codec_error import CodecError
from drivers.nmea import codec
from drivers.transport.serial_port import SerialDriver, SerialPort, SerialSettings


class NmeaSettings(SerialSettings):
    baud: int = Field(9600, description="line speed; NMEA says 4800, most modules ship at 9600 [U]")
    timeout_s: float = Field(2.5, gt=0, le=30, description="receivers send once a second")


class NmeaGpsDriver(SerialDriver):
    name: ClassVar[str] = "nmea-gps"
    Settings: ClassVar[type[DriverSettings]] = NmeaSettings

    def __init__(self, settings: DriverSettings) -> None:
        if not isinstance(settings, NmeaSettings):
            raise TypeError("NmeaGpsDriver needs NmeaSettings")
        self._s = settings
        self._port = SerialPort.from_settings(settings)
        self._last_utc: str | None = None

    def _collect(self) -> tuple[codec.Gga, codec.Rmc | None, float]:
        self._port.discard_input()
        deadline = time.monotonic() + self._s.timeout_s
        gga: codec.Gga | None = None
        rmc: codec.Rmc | None = None
        rmc_at = 0.0
        last_error: CodecError | None = None
        while gga is None or rmc is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                line = self._port.read_frame(codec.extract, remaining)
            except DriverError as exc:
                if exc.kind in ("timeout", "garbage") and (gga is not None or last_error is not None):
                    break
                raise
            try:
                s = codec.parse_sentence(line)
                if s.kind == "GGA":
                    gga = codec.parse_gga(s)
                elif s.kind == "RMC":
                    rmc, rmc_at = codec.parse_rmc(s), time.time()
            except CodecError as exc:
                last_error = exc
        if gga is None:
            if last_error is not None:
                raise DriverError(last_error.kind, f"{self._s.port}: no valid GGA; last error: {last_error}")
            raise DriverError("timeout", f"{self._s.port}: no GGA sentence within {self._s.timeout_s}s")
        return gga, rmc, rmc_at

    def read(self) -> list[Measurement]:
        gga, rmc, rmc_at = self._collect()
        flags = frozenset({STALE}) if gga.utc and gga.utc == self._last_utc else frozenset()
        self._last_utc = gga.utc
        out = [Measurement("gps_fix_quality", float(gga.quality), "code", flags)]
        if gga.satellites is not None:
            out.append(Measurement("gps_satellites", float(gga.satellites), "count", flags))
        if gga.quality > 0 and gga.latitude is not None and gga.longitude is not None:
            out.append(Measurement("latitude", round(gga.latitude, 7), "deg", flags))
            out.append(Measurement("longitude", round(gga.longitude, 7), "deg", flags))
            if gga.altitude_m is not None:
                out.append(Measurement("altitude", gga.altitude_m, "m", flags))
            if gga.hdop is not None:
                out.append(Measurement("gps_hdop", gga.hdop, "1", flags))
        if rmc is not None and rmc.valid and rmc.when is not None:
            out.append(Measurement("gps_clock_offset_s", round(rmc.when.timestamp() - rmc_at, 3), "s", flags))
        return out
