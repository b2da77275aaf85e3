"""A simulated gas-site sensor: ambient methane with noise, occasional leak plumes, and the
environment channels. Seeded, so a test or a demo sees the same stream every time."""

from __future__ import annotations

import math
import random
from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import SENSOR_FAULT, SIMULATED, WARMING_UP, DriverSettings, Measurement

Channel = Literal["methane", "temperature", "humidity", "pressure"]

ALL_CHANNELS: tuple[Channel, ...] = ("methane", "temperature", "humidity", "pressure")
UNITS: dict[str, str] = {"methane": "ppm", "temperature": "degC", "humidity": "%RH", "pressure": "hPa"}


class SimulatedSettings(DriverSettings):
    seed: int = Field(0, description="random seed; the same seed gives the same stream")
    channels: list[Channel] = Field(
        default_factory=lambda: list(ALL_CHANNELS),
        min_length=1,
        description="quantities this simulated sensor reports",
    )
    step_s: float = Field(1.0, gt=0, le=3600, description="simulated seconds per read (plume decay)")
    ambient_ppm: float = Field(2.0, ge=0, le=100, description="ambient methane level")
    noise_ppm: float = Field(0.03, ge=0, le=10, description="standard deviation of the ambient noise")
    leaks_per_hour: float = Field(2.0, ge=0, le=3600, description="mean rate of leak plumes")
    leak_decay_s: float = Field(180.0, gt=0, description="time constant of a plume's decay")
    resolution: float = Field(0.01, gt=0, description="values are rounded to this step, like a real ADC")
    daily_swing_ppm: float = Field(
        0.0, ge=0, le=100, description="amplitude of the methane background's daily cycle (night inversions)"
    )
    warmup_s: float = Field(0.0, ge=0, le=86_400, description="simulated seconds flagged warming_up after start")
    fault_rate: float = Field(
        0.0, ge=0, le=1, description="probability that a read is flagged sensor_fault (a failing head)"
    )


class SimulatedDriver:
    name: ClassVar[str] = "simulated"
    Settings: ClassVar[type[DriverSettings]] = SimulatedSettings
    blocking: ClassVar[bool] = False  # pure computation: read on the sampler's loop

    def __init__(self, settings: DriverSettings) -> None:
        assert isinstance(settings, SimulatedSettings)
        self._s = settings
        self._rng = random.Random(settings.seed)
        self._t = 0.0
        self._plume_peak = 0.0
        self._plume_start = 0.0

    def open(self) -> None:
        """Nothing to open: the simulation has no transport."""

    def close(self) -> None:
        """Nothing to close."""

    def _methane(self) -> float:
        s = self._s
        p_leak = 1.0 - math.exp(-s.leaks_per_hour * s.step_s / 3600.0)
        if self._rng.random() < p_leak:
            # Plume peaks are log-uniform between 10 and 10,000 ppm: most leaks are small.
            self._plume_peak = 10.0 ** self._rng.uniform(1.0, 4.0)
            self._plume_start = self._t
        plume = self._plume_peak * math.exp(-(self._t - self._plume_start) / s.leak_decay_s)
        if plume < 0.01:
            self._plume_peak = plume = 0.0
        cycle = s.daily_swing_ppm * math.cos(2 * math.pi * self._t / 86400.0)
        return max(0.0, s.ambient_ppm + cycle + self._rng.gauss(0.0, s.noise_ppm) + plume)

    def read(self) -> list[Measurement]:
        s = self._s
        self._t += s.step_s
        day = 2 * math.pi * self._t / 86400.0
        values = {
            "methane": self._methane(),
            "temperature": 15.0 + 8.0 * math.sin(day) + self._rng.gauss(0.0, 0.05),
            "humidity": min(100.0, max(0.0, 60.0 - 15.0 * math.sin(day) + self._rng.gauss(0.0, 0.3))),
            "pressure": 1013.25 + 3.0 * math.sin(day / 3.0) + self._rng.gauss(0.0, 0.05),
        }
        flags = {SIMULATED}
        if self._t <= s.warmup_s:
            flags.add(WARMING_UP)
        if s.fault_rate and self._rng.random() < s.fault_rate:
            flags.add(SENSOR_FAULT)
        return [
            Measurement(ch, round(round(values[ch] / s.resolution) * s.resolution, 6), UNITS[ch], frozenset(flags))
            for ch in s.channels
        ]
