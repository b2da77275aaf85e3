"""Bosch BME280 temperature / pressure / humidity over I2C, forced mode, x1 oversampling.

Why forced mode: one conversion per ``read`` means the values belong to the read's moment and the
chip sleeps in between (no self-heating). Chip ID 0x60 is checked at open (0x58 is a BMP280 without
humidity: refused with a clear error rather than reporting a humidity it cannot measure).
"""

from __future__ import annotations

import time
from typing import ClassVar

from pydantic import Field

from drivers.base import DriverError, DriverSettings, Measurement
from drivers.bme280 import codec
from drivers.codec_error import CodecError
from drivers.transport.i2c import I2CBus, I2CDevice, I2CSettings

OSRS_X1 = 1
MODE_FORCED = 0b01


class Bme280Settings(I2CSettings):
    address: int = Field(0x76, description="0x76 (SDO low) or 0x77 (SDO high)")


class Bme280Driver:
    name: ClassVar[str] = "bme280"
    Settings: ClassVar[type[DriverSettings]] = Bme280Settings

    def __init__(self, settings: DriverSettings, bus: I2CBus | None = None) -> None:
        if not isinstance(settings, Bme280Settings):
            raise TypeError("Bme280Driver needs Bme280Settings")
        if settings.address not in (0x76, 0x77):
            raise ValueError(f"BME280 address must be 0x76 or 0x77, not 0x{settings.address:02x}")
        self._s = settings
        self._dev = I2CDevice(settings, settings.address, bus)
        self._cal: codec.Calibration | None = None

    def open(self) -> None:
        self._calibration()

    def close(self) -> None:
        self._cal = None
        self._dev.close()

    def _calibration(self) -> codec.Calibration:
        if self._cal is None:
            chip = self._dev.read(codec.REG_CHIP_ID, 1)[0]
            if chip != codec.CHIP_ID_BME280:
                raise DriverError("wrong_chip", f"chip id 0x{chip:02x} at 0x{self._s.address:02x}, BME280 is 0x60")
            try:
                self._cal = codec.parse_calibration(
                    self._dev.read(codec.REG_CALIB_TP, 26), self._dev.read(codec.REG_CALIB_H, 7)
                )
            except CodecError as exc:
                raise DriverError("sensor_fault", exc.message) from exc
        return self._cal

    def read(self) -> list[Measurement]:
        cal = self._calibration()
        # ctrl_hum only takes effect after a ctrl_meas write, so it goes first.
        self._dev.write(codec.REG_CTRL_HUM, bytes((OSRS_X1,)))
        self._dev.write(codec.REG_CTRL_MEAS, bytes(((OSRS_X1 << 5) | (OSRS_X1 << 2) | MODE_FORCED,)))
        deadline = time.monotonic() + self._s.timeout_s
        while self._dev.read(codec.REG_STATUS, 1)[0] & codec.STATUS_MEASURING:
            if time.monotonic() > deadline:
                raise DriverError("timeout", f"BME280 still measuring after {self._s.timeout_s}s")
            time.sleep(0.002)
        adc_p, adc_t, adc_h = codec.split_data(self._dev.read(codec.REG_DATA, 8))
        if adc_t == codec.SKIPPED_TP or adc_p == codec.SKIPPED_TP or adc_h == codec.SKIPPED_H:
            raise DriverError("sensor_fault", "BME280 returned the 'skipped' pattern: measurement did not run")
        tf = codec.t_fine(cal, adc_t)
        pressure = codec.pressure_q24_8(cal, tf, adc_p)
        if pressure == 0:
            raise DriverError("sensor_fault", "BME280 pressure compensation divided by zero (bad calibration)")
        return [
            Measurement("temperature", codec.temperature_centi(tf) / 100.0, "degC"),
            Measurement("pressure", round(pressure / 256.0 / 100.0, 4), "hPa"),
            Measurement("humidity", round(codec.humidity_q22_10(cal, tf, adc_h) / 1024.0, 3), "%RH"),
        ]
