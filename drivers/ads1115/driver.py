"""Metal-oxide methane sensor (Figaro TGS2611, Hanwei MQ-4) read through a TI ADS1115 ADC.

The sensor's load resistor voltage V_RL is read single-shot on one channel (optionally through a
divider, ``input_divider`` = V_RL / V_ADC), turned into Rs = (Vc/V_RL - 1)*RL and then into ppm with
ppm = a*(Rs/R0)^b. R0 and the curve constants differ per sensor unit and per datasheet (reference
§3.3-3.4, §9.5: unconfirmed), so R0 is required and the model presets are only starting points:
fit them against calibration gas. Raw volts and Rs are reported alongside ppm so a fit can be redone
offline. MOX sensors do not measure the ~2 ppm background; readings outside the curve's validity
range are flagged ``out_of_range``.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from drivers.ads1115 import codec
from drivers.base import OUT_OF_RANGE, SENSOR_FAULT, WARMING_UP, DriverError, DriverSettings, Measurement
from drivers.codec_error import CodecError
from drivers.methane import MethaneSettings, methane_measurements
from drivers.transport.i2c import I2CBus, I2CDevice, I2CSettings
from drivers.warmup import WarmupTimer

# (a, b, valid_min_ppm, valid_max_ppm): TGS2611 from beta=0.6 with R0 at 5000 ppm; MQ-4 from MQSensorsLib.
PRESETS: dict[str, tuple[float, float, float, float]] = {
    "tgs2611": (5000.0, -2.15, 500.0, 12_500.0),
    "mq4": (1012.7, -2.786, 300.0, 10_000.0),
}


class Ads1115MosSettings(I2CSettings, MethaneSettings):
    address: int = Field(0x48, description="ADDR pin: GND 0x48, VDD 0x49, SDA 0x4A, SCL 0x4B")
    channel: int = Field(0, ge=0, le=3, description="single-ended input AINx vs GND")
    fsr_v: float = Field(4.096, description="PGA full-scale range, V: 6.144, 4.096, 2.048, 1.024, 0.512 or 0.256")
    data_rate: Literal[8, 16, 32, 64, 128, 250, 475, 860] = Field(128, description="samples per second")
    model: Literal["tgs2611", "mq4", "custom"] = Field("tgs2611", description="curve preset [U]")
    vc_v: float = Field(5.0, gt=0, le=24, description="circuit voltage across sensor + load resistor")
    rl_ohm: float = Field(10_000.0, gt=0, description="load resistor")
    input_divider: float = Field(1.0, ge=1, description="V_RL / V_ADC when a divider protects a 3.3 V ADC")
    r0_ohm: float = Field(..., gt=0, description="sensor resistance at the curve's reference gas (calibrate!)")
    curve_a: float | None = Field(None, gt=0, description="ppm = a*(Rs/R0)^b; default from the model preset")
    curve_b: float | None = Field(None, lt=0, description="curve exponent; default from the model preset")
    valid_min_ppm: float | None = Field(None, ge=0, description="below this the curve is not valid")
    valid_max_ppm: float | None = Field(None, gt=0, description="above this the curve is not valid")
    warmup_s: float = Field(180.0, ge=0, le=172_800, description="heater warm-up after (re)open [U]")

    @field_validator("fsr_v")
    @classmethod
    def _fsr(cls, v: float) -> float:
        if v not in codec.PGA:
            raise ValueError(f"fsr_v must be one of {sorted(codec.PGA)}")
        return v

    @model_validator(mode="after")
    def _curve(self) -> Ads1115MosSettings:
        if self.model == "custom" and (self.curve_a is None or self.curve_b is None):
            raise ValueError("model 'custom' needs curve_a and curve_b")
        return self

    def curve(self) -> tuple[float, float, float, float]:
        a, b, lo, hi = PRESETS.get(self.model, (0.0, 0.0, 0.0, float("inf")))
        return (
            self.curve_a if self.curve_a is not None else a,
            self.curve_b if self.curve_b is not None else b,
            self.valid_min_ppm if self.valid_min_ppm is not None else lo,
            self.valid_max_ppm if self.valid_max_ppm is not None else hi,
        )


class Ads1115MosDriver:
    name: ClassVar[str] = "ads1115-mos"
    Settings: ClassVar[type[DriverSettings]] = Ads1115MosSettings

    def __init__(self, settings: DriverSettings, bus: I2CBus | None = None) -> None:
        if not isinstance(settings, Ads1115MosSettings):
            raise TypeError("Ads1115MosDriver needs Ads1115MosSettings")
        self._s = settings
        self._dev = I2CDevice(settings, settings.address, bus)
        self._warmup = WarmupTimer()
        self._config = codec.single_shot_config(settings.channel, settings.fsr_v, settings.data_rate)

    def open(self) -> None:
        self._warmup.restart()

    def close(self) -> None:
        self._dev.close()

    def _convert(self) -> tuple[int, float]:
        self._dev.write(codec.REG_CONFIG, self._config.to_bytes(2, "big"))
        # One conversion takes 1/DR; allow at least twice that on top of the I2C timeout.
        deadline = time.monotonic() + self._s.timeout_s + 2.0 / self._s.data_rate
        while not int.from_bytes(self._dev.read(codec.REG_CONFIG, 2), "big") & codec.OS_BIT:
            if time.monotonic() > deadline:
                raise DriverError("timeout", "ADS1115 conversion did not finish (OS bit stayed 0)")
            time.sleep(0.001)
        return codec.conversion_volts(self._dev.read(codec.REG_CONVERSION, 2), self._s.fsr_v)

    def read(self) -> list[Measurement]:
        s = self._s
        code, volts = self._convert()
        v_rl = volts * s.input_divider
        flags: set[str] = {WARMING_UP} if self._warmup.active(s.warmup_s) else set()
        if code >= codec.FULL_SCALE_CODE:
            flags.add(OUT_OF_RANGE)  # ADC saturated: the true voltage is higher than we can see
        try:
            rs = codec.sensor_resistance(v_rl, s.vc_v, s.rl_ohm)
        except CodecError:
            # No Rs (open or shorted sensor): report the voltage we did measure, flagged, and no ppm.
            return [Measurement("mos_voltage", round(v_rl, 6), "V", frozenset(flags | {SENSOR_FAULT}))]
        a, b, lo, hi = s.curve()
        ppm = codec.ppm_from_ratio(rs / s.r0_ohm, a, b)
        if not lo <= ppm <= hi:
            flags.add(OUT_OF_RANGE)
        fl = frozenset(flags)
        return [
            *methane_measurements(ppm, s, fl),
            Measurement("mos_voltage", round(v_rl, 6), "V", fl),
            Measurement("mos_resistance", round(rs, 3), "ohm", fl),
        ]
