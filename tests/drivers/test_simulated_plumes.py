"""Scripted plumes in the simulated driver: the pinned ``settings.plumes`` shape, a smooth rise and fall
at the scripted time, and clear errors for bad plume settings."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import config as cfg
from drivers.simulated import Plume, SimulatedDriver, SimulatedSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def methane_at(drv: SimulatedDriver, clock: FakeClock, t: float) -> float:
    clock.now = 1000.0 + t
    return next(m.value for m in drv.read() if m.quantity == "methane")


def test_pinned_toml_shape_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(
        '[[sensors]]\nid = "sim"\ndriver = "simulated"\n'
        "settings.plumes = [{ start_s = 10, duration_s = 20, peak_ppm = 15000 }]\n"
    )
    conf = cfg.load(p, environ={})
    s = conf.sensors[0].driver_settings()
    assert s.plumes == [Plume(start_s=10, duration_s=20, peak_ppm=15000)]
    assert s.random_leaks_per_hour() == 0.0  # a scripted sensor has no random leaks unless asked


def test_plume_rises_peaks_and_falls_at_the_scripted_time() -> None:
    clock = FakeClock()
    drv = SimulatedDriver(
        SimulatedSettings(noise_ppm=0, plumes=[Plume(start_s=10, duration_s=20, peak_ppm=15000)]), clock=clock
    )
    drv.open()
    series = [methane_at(drv, clock, t) for t in range(0, 41)]
    assert series[:11] == [2.0] * 11  # ambient until start_s (the plume is 0 at its edges)
    assert series[20] == pytest.approx(15002.0)  # peak at mid-plume, on top of the 2 ppm ambient
    assert series[30:] == [2.0] * 11  # back to ambient after start_s + duration_s
    rising, falling = series[10:21], series[20:31]
    assert rising == sorted(rising) and falling == sorted(falling, reverse=True)
    # Smooth: no step larger than the raised cosine's steepest slope (pi * peak / duration per second).
    steps = [abs(b - a) for a, b in itertools.pairwise(series)]
    assert max(steps) <= math.pi * 15000 / 20 + 0.01


def test_plume_clock_starts_at_first_open_not_construction_or_reopen() -> None:
    clock = FakeClock()
    drv = SimulatedDriver(SimulatedSettings(noise_ppm=0, plumes=[Plume(start_s=5, duration_s=10, peak_ppm=100)]),
                          clock=clock)
    clock.now = 2000.0
    drv.open()
    clock.now = 2010.0
    assert drv.scripted_ppm() == pytest.approx(100.0)
    drv.close()
    drv.open()  # a reopen keeps the script's clock
    assert drv.scripted_ppm() == pytest.approx(100.0)


def test_overlapping_plumes_add_up() -> None:
    clock = FakeClock()
    drv = SimulatedDriver(SimulatedSettings(noise_ppm=0, plumes=[
        Plume(start_s=0, duration_s=10, peak_ppm=100), Plume(start_s=0, duration_s=10, peak_ppm=50)]), clock=clock)
    drv.open()
    assert methane_at(drv, clock, 5) == pytest.approx(152.0)


@given(
    start=st.floats(0, 1000), duration=st.floats(0.01, 1000), peak=st.floats(0.01, 1e6), t=st.floats(-10, 3000)
)
def test_plume_is_bounded_and_zero_outside_its_window(start: float, duration: float, peak: float, t: float) -> None:
    p = Plume(start_s=start, duration_s=duration, peak_ppm=peak)
    v = p.ppm_at(t)
    assert 0.0 <= v <= peak
    if t <= start or t >= start + duration:
        assert v == 0.0


@pytest.mark.parametrize(
    ("plume", "key"),
    [
        ("{ start_s = -1, duration_s = 20, peak_ppm = 100 }", "start_s"),
        ("{ start_s = 1, duration_s = 0, peak_ppm = 100 }", "duration_s"),
        ("{ start_s = 1, duration_s = 5, peak_ppm = -3 }", "peak_ppm"),
        ("{ start_s = 1, duration_s = 5 }", "peak_ppm"),
        ("{ start_s = 1, duration_s = 5, peak_ppm = 3, colour = 'red' }", "colour"),
    ],
)
def test_bad_plume_is_a_clear_config_error(tmp_path: Path, plume: str, key: str) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(f'[[sensors]]\nid = "sim"\ndriver = "simulated"\nsettings.plumes = [{plume}]\n')
    with pytest.raises(cfg.ConfigError) as ei:
        cfg.load(p, environ={})
    paths = [path for path, _ in ei.value.errors]
    assert any(path.startswith("sensors[0].settings.plumes") and path.endswith(key) for path in paths), paths


def test_without_plumes_the_random_stream_is_unchanged() -> None:
    # The default still has random leaks (2/h), so existing seeded streams stay as they were.
    assert SimulatedSettings().random_leaks_per_hour() == 2.0
    assert SimulatedSettings(leaks_per_hour=0.5, plumes=[Plume(start_s=0, duration_s=1, peak_ppm=1)]
                             ).random_leaks_per_hour() == 0.5
