"""Sensirion SHT31 temperature / humidity over I2C, single shot without clock stretching.

The chip NACKs a read while it is still measuring; the driver waits ``measure_delay_s`` (datasheet
max about 15 ms for high repeatability [U]) and then retries the read until ``timeout_s``. A word whose
CRC-8 does not match is never reported: the read fails with ``checksum_error``.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import DriverError, DriverSettings, Measurement
from drivers.codec_error import CodecError
from drivers.sht31 import codec
from drivers.transport.i2c import I2CBus, I2CDevice, I2CSettings


class Sht31Settings(I2CSettings):
    address: int = Field(0x44, description="0x44 (ADDR low) or 0x45 (ADDR high)")
    repeatability: Literal["high", "medium", "low"] = Field("high", description="measurement repeatability")
    measure_delay_s: float = Field(0.016, ge=0, le=1, description="wait before the first read attempt [U]")


class Sht31Driver:
    name: ClassVar[str] = "sht31"
    Settings: ClassVar[type[DriverSettings]] = Sht31Settings

    def __init__(self, settings: DriverSettings, bus: I2CBus | None = None) -> None:
        if not isinstance(settings, Sht31Settings):
            raise TypeError("Sht31Driver needs Sht31Settings")
        self._s = settings
        self._dev = I2CDevice(settings, settings.address, bus)

    def open(self) -> None:
        """Nothing to set up: every read is a self-contained single-shot measurement."""

    def close(self) -> None:
        self._dev.close()

    def read(self) -> list[Measurement]:
        self._dev.raw_write(codec.COMMANDS[self._s.repeatability])
        if self._s.measure_delay_s:
            time.sleep(self._s.measure_delay_s)
        deadline = time.monotonic() + self._s.timeout_s
        while True:
            try:
                reply = self._dev.raw_read(6)
                break
            except DriverError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.002)
        try:
            t, rh = codec.parse_measurement(reply)
        except CodecError as exc:
            raise DriverError(exc.kind, f"SHT31 0x{self._s.address:02x}: {exc.message}") from exc
        return [Measurement("temperature", t, "degC"), Measurement("humidity", rh, "%RH")]
