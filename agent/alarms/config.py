"""The ``[[sensors.alarms]]`` model: two levels (``warn``, ``alarm``), a clear threshold or margin,
on/off delays, latching and fault detection, all in the rule's unit (ppm or %LEL).

Kept free of ``agent.config`` so the pure state machine and the config model share one definition.
The legacy ``high``/``low`` keys still work: each is read as a single non-latching ``alarm`` level
with no hysteresis (exactly the old per-reading bit), and a warning says how to write it now."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

LEVELS = ("normal", "warn", "alarm")
METHANE_QUANTITIES = ("methane", "methane_lel")
DEFAULT_MARGIN_FRACTION = 0.1  # hysteresis when neither clear nor clear_margin is given
_warned: set[str] = set()


def _migrate_legacy(data: dict[str, Any]) -> dict[str, Any]:
    high, low = data.get("high"), data.get("low")
    if high is None and low is None:
        data.pop("high", None)
        data.pop("low", None)
        return data
    if high is not None and low is not None:
        raise ValueError(
            "high and low in one alarm: write two [[sensors.alarms]] entries, "
            "{ alarm = <high> } and { alarm = <low>, direction = \"falling\" }"
        )
    for new in ("warn", "alarm", "clear", "clear_margin", "direction"):
        if new in data:
            raise ValueError(f"high/low cannot be combined with {new}; use warn/alarm/clear only")
    legacy = "high" if high is not None else "low"
    value = data.pop(legacy)
    data.pop("high" if legacy == "low" else "low", None)
    data.update(alarm=value, direction="rising" if legacy == "high" else "falling",
                clear_margin=0.0, latch=data.get("latch", False))
    msg = (f"alarm key {legacy} = {value} is deprecated and read as alarm = {value}, "
           f"direction = \"{data['direction']}\", clear_margin = 0, latch = false (the old behaviour); "
           "write warn/alarm/clear to get staged, latching alarms")
    if msg not in _warned:
        _warned.add(msg)
        log.warning(msg)
    return data


class AlarmConfig(BaseModel):
    """One alarm rule on one quantity of one sensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: str = Field("methane", description="which quantity of the sensor the alarm watches")
    unit: Literal["ppm", "%LEL"] | None = Field(
        None, description="unit of the thresholds; %LEL on `methane` uses the sensor's lel_vol_percent; "
        "default: the quantity's own unit"
    )
    direction: Literal["rising", "falling"] = Field("rising", description="rising: alarm above; falling: below")
    warn: float | None = Field(None, description="first level (e.g. 10 %LEL)")
    alarm: float | None = Field(None, description="upper level (e.g. 20 %LEL); latched until acknowledged")
    clear: float | None = Field(None, description="every level clears only beyond this (below it when rising)")
    clear_margin: float | None = Field(
        None, ge=0, description="each level clears this far back from its own threshold (default 10% of the lowest)"
    )
    on_delay_readings: int = Field(1, ge=1, le=3600, description="consecutive readings beyond a level to raise it")
    on_delay_s: float = Field(0.0, ge=0, le=3600, description="...and for at least this long")
    off_delay_readings: int = Field(1, ge=1, le=3600, description="consecutive readings back to clear a level")
    off_delay_s: float = Field(0.0, ge=0, le=3600, description="...and for at least this long")
    latch: bool = Field(True, description="the alarm level holds until acknowledged, even after the gas is gone")
    fault: bool | None = Field(
        None, description="report fault when the sensor fails, is stale or out of range (default: methane only)"
    )
    fault_after_errors: int = Field(3, ge=1, le=1000, description="consecutive failed/invalid reads before fault")
    stale_after_s: float | None = Field(
        None, gt=0, le=86_400, description="fault when no valid reading for this long (default max(30, 5 x interval))"
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("high" in data or "low" in data):
            return _migrate_legacy(dict(data))
        return data

    @model_validator(mode="after")
    def _ordered(self) -> AlarmConfig:
        if self.warn is None and self.alarm is None:
            raise ValueError("an alarm needs warn, alarm or both")
        if self.clear is not None and self.clear_margin is not None:
            raise ValueError("give clear or clear_margin, not both")
        above = self.direction == "rising"
        word = "below" if above else "above"
        if self.warn is not None and self.alarm is not None and (self.warn >= self.alarm if above
                                                                   else self.warn <= self.alarm):
            raise ValueError(f"warn ({self.warn}) must be {word} alarm ({self.alarm}) for a {self.direction} alarm")
        lowest = self.lowest
        if self.clear is not None and (self.clear >= lowest if above else self.clear <= lowest):
            raise ValueError(f"clear ({self.clear}) must be {word} the first level ({lowest})")
        if self.clear_margin is not None and above and self.clear_margin > abs(lowest) and lowest > 0:
            raise ValueError(f"clear_margin ({self.clear_margin}) is larger than the first level ({lowest})")
        return self

    @property
    def lowest(self) -> float:
        """The first level's threshold (warn if set, else alarm)."""
        value = self.warn if self.warn is not None else self.alarm
        assert value is not None
        return value

    @property
    def watches_fault(self) -> bool:
        return self.fault if self.fault is not None else self.quantity in METHANE_QUANTITIES

    @property
    def margin(self) -> float:
        if self.clear_margin is not None:
            return self.clear_margin
        return abs(self.lowest) * DEFAULT_MARGIN_FRACTION

    def thresholds(self) -> dict[str, float]:
        """Level -> threshold, lowest level first."""
        return {k: v for k, v in (("warn", self.warn), ("alarm", self.alarm)) if v is not None}

    def clear_point(self, level: str) -> float:
        """Where ``level`` is left: ``clear`` for every level, else its threshold minus the margin."""
        if self.clear is not None:
            return self.clear
        t = self.thresholds()[level]
        return t - self.margin if self.direction == "rising" else t + self.margin

    def needs_lel_basis(self) -> bool:
        return self.unit is not None and (self.unit, self.quantity) in (("%LEL", "methane"), ("ppm", "methane_lel"))


def check_rules(rules: list[AlarmConfig], lel_vol_percent: float | None) -> None:
    """Sensor-level checks: one rule per (quantity, direction), and a LEL basis where units differ."""
    seen: set[tuple[str, str]] = set()
    for i, r in enumerate(rules):
        key = (r.quantity, r.direction)
        if key in seen:
            raise ValueError(f"alarms[{i}]: a second {r.direction} alarm on {r.quantity}; use warn and alarm levels")
        seen.add(key)
        if r.needs_lel_basis() and lel_vol_percent is None:
            raise ValueError(f"alarms[{i}]: unit {r.unit} on {r.quantity} needs the driver's lel_vol_percent, "
                             "which this driver does not have")
        if r.unit is not None and r.quantity not in METHANE_QUANTITIES:
            raise ValueError(f"alarms[{i}]: unit {r.unit} is only for methane and methane_lel; leave unit out")
