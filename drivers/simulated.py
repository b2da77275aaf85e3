"""A simulated gas-site sensor: ambient methane with noise, occasional random leak plumes, scripted
plumes, and the environment channels. Seeded, so a test or a demo sees the same stream every time.

Scripted plumes (``settings.plumes``) make a leak happen at a known time, so demos, tests and the
fleet simulator can exercise alarms: each rises and falls smoothly (a raised-cosine, sin^2, so no
step a real NDIR sensor with a 20-30 s T90 could not produce) from ``start_s`` to
``start_s + duration_s`` seconds after the sensor first opened, peaking at ``peak_ppm`` half-way.
Plumes that overlap add up. Their clock is the monotonic time since the first ``open`` (a reopen
does not restart the script)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.base import SENSOR_FAULT, SIMULATED, WARMING_UP, DriverSettings, Measurement

Channel = Literal["methane", "temperature", "humidity", "pressure"]

ALL_CHANNELS: tuple[Channel, ...] = ("methane", "temperature", "humidity", "pressure")
UNITS: dict[str, str] = {"methane": "ppm", "temperature": "degC", "humidity": "%RH", "pressure": "hPa"}


class Plume(BaseModel):
    """One scripted leak plume."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_s: float = Field(..., ge=0, le=10 * 365 * 86400, description="seconds after the sensor's start")
    duration_s: float = Field(..., gt=0, le=30 * 86400, description="from first rise to back at ambient")
    peak_ppm: float = Field(..., gt=0, le=1_000_000, description="added to the ambient level at mid-plume")

    def ppm_at(self, t: float) -> float:
        x = (t - self.start_s) / self.duration_s
        if not 0.0 < x < 1.0:
            return 0.0
        return self.peak_ppm * math.sin(math.pi * x) ** 2


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
    leaks_per_hour: float | None = Field(
        None, ge=0, le=3600, description="mean rate of random leak plumes; default 2, or 0 when plumes are scripted"
    )
    leak_decay_s: float = Field(180.0, gt=0, description="time constant of a plume's decay")
    resolution: float = Field(0.01, gt=0, description="values are rounded to this step, like a real ADC")
    daily_swing_ppm: float = Field(
        0.0, ge=0, le=100, description="amplitude of the methane background's daily cycle (night inversions)"
    )
    warmup_s: float = Field(0.0, ge=0, le=86_400, description="simulated seconds flagged warming_up after start")
    fault_rate: float = Field(
        0.0, ge=0, le=1, description="probability that a read is flagged sensor_fault (a failing head)"
    )
    plumes: list[Plume] = Field(
        default_factory=list, max_length=1000,
        description="scripted plumes: [{ start_s = 10, duration_s = 20, peak_ppm = 15000 }]",
    )
    lel_vol_percent: float = Field(
        5.0, gt=0, le=100, description="LEL basis (%vol) for alarms configured in %LEL on this sensor"
    )

    def random_leaks_per_hour(self) -> float:
        if self.leaks_per_hour is not None:
            return self.leaks_per_hour
        return 0.0 if self.plumes else 2.0


class SimulatedDriver:
    name: ClassVar[str] = "simulated"
    Settings: ClassVar[type[DriverSettings]] = SimulatedSettings
    blocking: ClassVar[bool] = False  # pure computation: read on the sampler's loop

    def __init__(self, settings: DriverSettings, clock: Callable[[], float] = time.monotonic) -> None:
        assert isinstance(settings, SimulatedSettings)
        self._s = settings
        self._rng = random.Random(settings.seed)
        self._t = 0.0
        self._plume_peak = 0.0
        self._plume_start = 0.0
        self._clock = clock
        self._opened_at: float | None = None

    def open(self) -> None:
        """No transport to open; the first open starts the scripted plumes' clock."""
        if self._opened_at is None:
            self._opened_at = self._clock()

    def scripted_ppm(self) -> float:
        """The scripted plumes' contribution now (0 before the first open)."""
        if self._opened_at is None:
            return 0.0
        t = self._clock() - self._opened_at
        return sum(p.ppm_at(t) for p in self._s.plumes)

    def close(self) -> None:
        """Nothing to close."""

    def _methane(self) -> float:
        s = self._s
        p_leak = 1.0 - math.exp(-s.random_leaks_per_hour() * s.step_s / 3600.0)
        if self._rng.random() < p_leak:
            # Plume peaks are log-uniform between 10 and 10,000 ppm: most leaks are small.
            self._plume_peak = 10.0 ** self._rng.uniform(1.0, 4.0)
            self._plume_start = self._t
        plume = self._plume_peak * math.exp(-(self._t - self._plume_start) / s.leak_decay_s)
        if plume < 0.01:
            self._plume_peak = plume = 0.0
        cycle = s.daily_swing_ppm * math.cos(2 * math.pi * self._t / 86400.0)
        return max(0.0, s.ambient_ppm + cycle + self._rng.gauss(0.0, s.noise_ppm) + plume + self.scripted_ppm())

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
