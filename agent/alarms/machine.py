"""The alarm state machine of one rule on one sensor quantity. Pure: readings, read failures, clock
ticks and acknowledgements go in, transitions come out; no I/O, no wall clock of its own.

States: ``normal`` < ``warn`` < ``alarm`` (the underlying level) plus ``fault`` on top (a blind
detector is itself an alarm condition; the level under it is kept, so a latched alarm survives a
fault). Rules:

- A level is raised once its threshold is passed by ``on_delay_readings`` consecutive readings
  spanning at least ``on_delay_s`` seconds; the highest such level wins (normal can go straight to
  alarm in one ``raised``; warn to alarm is ``escalated``).
- A level is left once readings are back past its clear point (``clear``, or its threshold minus
  ``clear_margin``) for ``off_delay_readings`` readings and ``off_delay_s`` seconds; the new level
  is the highest whose clear point is still held (so alarm may step down to warn).
- With ``latch`` the alarm level holds until acknowledged, however low the gas goes; an
  acknowledgement of a latched alarm whose gas is gone clears it at once, else it clears normally.
- Readings flagged ``warming_up`` never raise or clear anything. Flagged-invalid readings
  (``sensor_fault``, ``out_of_range``, ``stale``, ``checksum_error``) and failed reads count towards
  ``fault_after_errors``; no reading at all for ``stale_after_s`` is a fault too. A valid reading
  ends the fault (``cleared``) and is then evaluated as usual.

Time ``t`` is monotonic seconds (delays must not jump with the wall clock); ``ts_ms`` is the wall
time stamped on events."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agent.alarms.config import LEVELS, AlarmConfig
from drivers.base import CHECKSUM_ERROR, OUT_OF_RANGE, SENSOR_FAULT, STALE, WARMING_UP
from drivers.methane import ppm_to_lel_percent, to_ppm

INVALID_FLAGS = (SENSOR_FAULT, OUT_OF_RANGE, STALE, CHECKSUM_ERROR)
TRANSITIONS = ("raised", "escalated", "cleared", "acknowledged", "fault")


class NotLatched(Exception):
    """An acknowledgement for an alarm that is not latched (or already acknowledged)."""


@dataclass(frozen=True)
class Transition:
    type: str  # one of TRANSITIONS
    level: str  # the reported level after the transition: normal | warn | alarm | fault
    previous_level: str
    value: float | None
    threshold: float | None
    ts_ms: int
    seq: int | None = None
    reason: str | None = None


@dataclass
class _Run:
    first_t: float
    count: int = 1


def _rank(level: str) -> int:
    return LEVELS.index(level)


class AlarmMachine:
    def __init__(self, sensor_id: str, rule: AlarmConfig, *, t0: float, lel_vol_percent: float | None = None,
                 stale_after_s: float = 30.0) -> None:
        self.sensor_id = sensor_id
        self.rule = rule
        self.lel = lel_vol_percent
        self.stale_after_s = rule.stale_after_s or stale_after_s
        self.level = "normal"
        self.fault_reason: str | None = None
        self.latched = False
        self.acknowledged = False
        self.since_ts_ms: int | None = None
        self.value: float | None = None
        self.value_ts_ms: int | None = None
        self.value_unit: str | None = rule.unit
        self._up: dict[str, _Run | None] = dict.fromkeys(rule.thresholds())
        self._down: _Run | None = None
        self._down_ready: str | None = None  # the level a satisfied off-delay would drop to
        self._bad = 0
        self._last_seen = t0

    # --- what others read ---------------------------------------------------------------------------
    @property
    def key(self) -> str:
        suffix = "" if self.rule.direction == "rising" else "/falling"
        return f"{self.sensor_id}/{self.rule.quantity}{suffix}"

    @property
    def reported(self) -> str:
        return "fault" if self.fault_reason else self.level

    def active(self) -> bool:
        return self.reported != "normal"

    def state(self) -> dict[str, Any]:
        thresholds = self.rule.thresholds()
        return {
            "sensor_id": self.sensor_id,
            "quantity": self.rule.quantity,
            "direction": self.rule.direction,
            "level": self.reported,
            "alarm_level": self.level,
            "latched": self.latched,
            "acknowledged": self.acknowledged,
            "since_ts_ms": self.since_ts_ms,
            "value": self.value,
            "value_ts_ms": self.value_ts_ms,
            "unit": self.value_unit,
            "threshold": thresholds.get(self.level),
            "fault_reason": self.fault_reason,
        }

    def restore(self, level: str, latched: bool, acknowledged: bool, since_ts_ms: int | None) -> None:
        """Resume a level from the event store after a restart, so a latch survives it."""
        if level in LEVELS and level in (*self.rule.thresholds(), "normal"):
            self.level = level
            self.latched = latched and level == "alarm" and self.rule.latch
            self.acknowledged = acknowledged and self.latched
            self.since_ts_ms = since_ts_ms

    # --- inputs -------------------------------------------------------------------------------------
    def convert(self, value: float, unit: str) -> float:
        """A measured value in the rule's unit (ppm <-> %LEL with the sensor's LEL basis)."""
        want = self.rule.unit
        if want is None or want == unit or self.lel is None:
            return value
        if want == "%LEL" and unit == "ppm":
            return ppm_to_lel_percent(value, self.lel)
        if want == "ppm" and unit == "%LEL":
            return to_ppm(value, "%LEL", self.lel)
        return value

    def reading(self, t: float, ts_ms: int, value: float, unit: str, flags: tuple[str, ...] | frozenset[str],
                seq: int | None = None) -> list[Transition]:
        self._last_seen = t
        if WARMING_UP in flags:
            return []
        bad = next((f for f in INVALID_FLAGS if f in flags), None)
        if bad is None and not math.isfinite(value):
            bad = "not_a_number"
        if bad is not None:
            return self._bad_read(ts_ms, f"reading flagged {bad}", seq)
        v = self.convert(value, unit)
        self.value, self.value_ts_ms, self.value_unit = v, ts_ms, self.rule.unit or unit
        self._bad = 0
        out: list[Transition] = []
        if self.fault_reason is not None:
            self.fault_reason = None
            out.append(Transition("cleared", self.level, "fault", v, None, ts_ms, seq, "sensor valid again"))
        out += self._evaluate(t, ts_ms, v, seq)
        return out

    def failure(self, t: float, ts_ms: int, reason: str) -> list[Transition]:
        """A read that failed outright (timeout, port gone, bad frame)."""
        del t  # a failed read is not a sign of life
        return self._bad_read(ts_ms, reason, None)

    def tick(self, t: float, ts_ms: int) -> list[Transition]:
        """Called periodically: no reading at all for ``stale_after_s`` is a fault."""
        if self.rule.watches_fault and self.fault_reason is None and t - self._last_seen > self.stale_after_s:
            return self._enter_fault(ts_ms, f"stale: no reading for {t - self._last_seen:.0f} s", None)
        return []

    def acknowledge(self, ts_ms: int) -> list[Transition]:
        if not self.latched:
            raise NotLatched(f"{self.key}: no latched alarm to acknowledge (level {self.reported})")
        if self.acknowledged:
            raise NotLatched(f"{self.key}: the latched alarm is already acknowledged")
        self.acknowledged = True
        th = self.rule.thresholds().get("alarm")
        out = [Transition("acknowledged", self.reported, self.reported, self.value, th, ts_ms)]
        if self._down_ready is not None and _rank(self._down_ready) < _rank(self.level):
            out += self._drop(self._down_ready, ts_ms, self.value, None)
        return out

    # --- the rules ------------------------------------------------------------------------------------
    def _beyond(self, v: float, threshold: float) -> bool:
        return v >= threshold if self.rule.direction == "rising" else v <= threshold

    def _held(self, v: float, level: str) -> bool:
        """Still inside ``level`` (not yet past its clear point)."""
        cp = self.rule.clear_point(level)
        return v >= cp if self.rule.direction == "rising" else v <= cp

    @staticmethod
    def _satisfied(run: _Run | None, n: int, secs: float, t: float) -> bool:
        return run is not None and run.count >= n and t - run.first_t >= secs

    def _evaluate(self, t: float, ts_ms: int, v: float, seq: int | None) -> list[Transition]:
        r = self.rule
        for lvl, th in r.thresholds().items():
            run = self._up[lvl]
            if self._beyond(v, th):
                if run is None:
                    self._up[lvl] = _Run(t)
                else:
                    run.count += 1
            else:
                self._up[lvl] = None
        raise_to = None
        for lvl in r.thresholds():
            if _rank(lvl) > _rank(self.level) and self._satisfied(self._up[lvl], r.on_delay_readings, r.on_delay_s, t):
                raise_to = lvl  # thresholds are lowest first: the last satisfied one is the highest
        if raise_to is not None:
            kind = "raised" if self.level == "normal" else "escalated"
            previous = self.reported
            self.level = raise_to
            self.since_ts_ms = ts_ms
            if raise_to == "alarm" and r.latch:
                self.latched, self.acknowledged = True, False
            self._down, self._down_ready = None, None
            return [Transition(kind, self.reported, previous, v, r.thresholds()[raise_to], ts_ms, seq)]
        if self.level == "normal":
            return []
        hold = "normal"
        for lvl in r.thresholds():
            if _rank(lvl) <= _rank(self.level) and self._held(v, lvl):
                hold = lvl
        if _rank(hold) >= _rank(self.level):
            self._down, self._down_ready = None, None
            return []
        if self._down is None:
            self._down = _Run(t)
        else:
            self._down.count += 1
        if not self._satisfied(self._down, r.off_delay_readings, r.off_delay_s, t):
            self._down_ready = None
            return []
        self._down_ready = hold
        if self.latched and not self.acknowledged:
            return []  # the latch holds the alarm level until acknowledged
        return self._drop(hold, ts_ms, v, seq)

    def _drop(self, to: str, ts_ms: int, v: float | None, seq: int | None) -> list[Transition]:
        previous_level, previous = self.level, self.reported
        self.level = to
        self.since_ts_ms = None if to == "normal" else ts_ms
        if to != "alarm":
            self.latched = self.acknowledged = False
        self._down, self._down_ready = None, None
        for lvl in self._up:
            if _rank(lvl) > _rank(to):
                self._up[lvl] = None
        return [Transition("cleared", self.reported, previous, v, self.rule.clear_point(previous_level), ts_ms, seq)]

    def _bad_read(self, ts_ms: int, reason: str, seq: int | None) -> list[Transition]:
        self._bad += 1
        for lvl in self._up:  # a run of readings beyond a level must be consecutive valid readings
            self._up[lvl] = None
        self._down, self._down_ready = None, None
        if self.rule.watches_fault and self.fault_reason is None and self._bad >= self.rule.fault_after_errors:
            return self._enter_fault(ts_ms, reason, seq)
        return []

    def _enter_fault(self, ts_ms: int, reason: str, seq: int | None) -> list[Transition]:
        previous = self.reported
        self.fault_reason = reason
        return [Transition("fault", "fault", previous, self.value, None, ts_ms, seq, reason)]
