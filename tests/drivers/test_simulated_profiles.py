"""The simulated driver's site-profile knobs used by the fleet simulator: a daily methane cycle,
a warm-up window flagged ``warming_up``, and a failing head flagged ``sensor_fault``."""

from __future__ import annotations

from drivers.base import SENSOR_FAULT, WARMING_UP
from drivers.simulated import SimulatedDriver, SimulatedSettings


def _methane(drv: SimulatedDriver):
    return next(m for m in drv.read() if m.quantity == "methane")


def test_daily_cycle_moves_the_background_by_its_swing():
    s = SimulatedSettings(seed=3, noise_ppm=0.0, leaks_per_hour=0.0, daily_swing_ppm=0.5, step_s=3600.0)
    drv = SimulatedDriver(s)
    values = [_methane(drv).value for _ in range(24)]  # hourly
    assert [values[i] for i in (5, 11, 17, 23)] == [2.0, 1.5, 2.0, 2.5]  # at 6 h, 12 h, 18 h, 24 h


def test_warmup_flags_then_clears_and_faults_follow_their_rate():
    drv = SimulatedDriver(SimulatedSettings(seed=1, warmup_s=3.0))
    flags = [_methane(drv).flags for _ in range(5)]
    assert [WARMING_UP in f for f in flags] == [True, True, True, False, False]
    faulty = SimulatedDriver(SimulatedSettings(seed=2, fault_rate=0.25, channels=["methane"]))
    n = sum(SENSOR_FAULT in _methane(faulty).flags for _ in range(2000))
    assert 400 <= n <= 600
    healthy = SimulatedDriver(SimulatedSettings(seed=2, channels=["methane"]))
    assert not any(SENSOR_FAULT in _methane(healthy).flags for _ in range(500))
