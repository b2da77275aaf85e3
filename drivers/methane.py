"""Unit normalisation for methane: every methane driver reports ``methane`` in ppm and ``methane_lel``
in %LEL, whatever unit its device speaks, so alarms and dashboards never mix units.

The LEL is a setting because it depends on the standard: 5.0 %vol in the common US tables, 4.4 %vol
in IEC/EN 60079-20-1 (reference methane-sensors.md §6).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from drivers.base import OUT_OF_RANGE, DriverSettings, Measurement

MethaneUnit = Literal["ppm", "%vol", "%LEL"]
PPM_PER_VOL_PERCENT = 10_000.0


def to_ppm(value: float, unit: MethaneUnit, lel_vol_percent: float) -> float:
    if unit == "ppm":
        return value
    if unit == "%vol":
        return value * PPM_PER_VOL_PERCENT
    return value / 100.0 * lel_vol_percent * PPM_PER_VOL_PERCENT


def ppm_to_lel_percent(ppm: float, lel_vol_percent: float) -> float:
    return ppm / (lel_vol_percent * PPM_PER_VOL_PERCENT) * 100.0


class MethaneSettings(DriverSettings):
    """Settings every methane driver shares (unit conversion, range check, warm-up window)."""

    lel_vol_percent: float = Field(
        5.0, gt=0, le=100, description="lower explosive limit in %vol: 5.0 (US tables) or 4.4 (IEC 60079-20-1)"
    )
    range_ppm: float | None = Field(
        None, gt=0, description="full scale of the sensor in ppm; readings above it are flagged out_of_range"
    )
    negative_tolerance_ppm: float = Field(
        100.0, ge=0, description="readings below -this are flagged out_of_range (NDIR zero noise is normal)"
    )
    warmup_s: float = Field(
        60.0, ge=0, le=172_800, description="readings this long after (re)opening the port are flagged warming_up"
    )


def methane_measurements(ppm: float, settings: MethaneSettings, flags: frozenset[str]) -> list[Measurement]:
    """The ppm and %LEL pair for one reading; out-of-range is judged here so every driver agrees."""
    out = set(flags)
    if settings.range_ppm is not None and ppm > settings.range_ppm:
        out.add(OUT_OF_RANGE)
    if ppm < -settings.negative_tolerance_ppm:
        out.add(OUT_OF_RANGE)
    final = frozenset(out)
    return [
        Measurement("methane", round(ppm, 6), "ppm", final),
        Measurement("methane_lel", round(ppm_to_lel_percent(ppm, settings.lel_vol_percent), 6), "%LEL", final),
    ]
