"""Leak events: a rolling site background per methane sensor and an event while the concentration
stays above it.

Background: a robust low percentile (``background_percentile``, default the 10th) of the valid
readings of the last ``background_window_s``, kept as at most ``BUCKETS`` bucket means so the cost
per reading is constant; readings during an event are left out, so a long leak does not raise its
own baseline. An event starts when readings stay above background + ``margin_ppm`` for
``min_duration_s`` (its start is the first such reading) and ends when they stay at or below it
for ``end_after_s`` (its end is the first such reading). It carries start, peak, end, duration
and the integrated excess over the background (ppm·s, rectangle rule over the read intervals).

Pure: readings in, event documents out. The feature does the spooling, fast sampling and the
pre-trigger ring."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.base import CHECKSUM_ERROR, OUT_OF_RANGE, SENSOR_FAULT, STALE, WARMING_UP

BUCKETS = 240
MIN_BUCKETS = 10
_SKIP = (WARMING_UP, SENSOR_FAULT, OUT_OF_RANGE, STALE, CHECKSUM_ERROR)


class LeakConfig(BaseModel):
    """``[sensors.leak]``: leak events on a methane sensor (ppm)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: str = Field("methane", description="the ppm quantity watched")
    margin_ppm: float = Field(10.0, gt=0, le=1_000_000, description="an event is background + this")
    min_duration_s: float = Field(10.0, ge=0, le=3600, description="above the margin this long to start")
    end_after_s: float = Field(30.0, ge=0, le=3600, description="back below this long to end")
    background_window_s: float = Field(3600.0, ge=10, le=7 * 86400, description="rolling background window")
    background_percentile: float = Field(10.0, ge=0, le=50, description="low percentile used as background")
    fast_interval_s: float | None = Field(
        None, ge=0.05, le=3600, description="read interval during an event (faster than interval_s)"
    )
    quiet_store_s: float | None = Field(
        None, gt=0, le=86_400, description="while quiet, store one reading per this long (the rest wait in the ring)"
    )
    pretrigger_s: float = Field(60.0, ge=0, le=3600, description="readings this long before a start are committed")

    @model_validator(mode="after")
    def _order(self) -> LeakConfig:
        if self.quiet_store_s is not None and self.pretrigger_s > self.background_window_s:
            raise ValueError("pretrigger_s must not exceed background_window_s")
        return self


@dataclass
class _Active:
    start_t: float
    start_ts_ms: int
    peak_ppm: float
    peak_ts_ms: int
    excess_ppm_s: float = 0.0
    below_since: tuple[float, int] | None = None  # (t, ts_ms) of the first reading back below
    announced: bool = False


class LeakDetector:
    def __init__(self, sensor_id: str, conf: LeakConfig) -> None:
        self.sensor_id = sensor_id
        self.conf = conf
        self._bucket_s = conf.background_window_s / BUCKETS
        self._buckets: deque[tuple[float, float, int]] = deque()  # (bucket start t, sum, n)
        self._active: _Active | None = None
        self._last_t: float | None = None
        self.background: float | None = None

    @property
    def active(self) -> bool:
        return self._active is not None and self._active.announced

    def _learn(self, t: float, v: float) -> None:
        if self._buckets and t - self._buckets[-1][0] < self._bucket_s:
            start, total, n = self._buckets[-1]
            self._buckets[-1] = (start, total + v, n + 1)
        else:
            self._buckets.append((t, v, 1))
        while self._buckets and t - self._buckets[0][0] > self.conf.background_window_s:
            self._buckets.popleft()
        if len(self._buckets) >= MIN_BUCKETS:
            means = sorted(total / n for _, total, n in self._buckets)
            k = (len(means) - 1) * self.conf.background_percentile / 100.0
            lo, hi = math.floor(k), math.ceil(k)
            self.background = means[lo] + (means[hi] - means[lo]) * (k - lo)

    def state(self) -> dict[str, Any]:
        a = self._active if self.active else None
        return {"sensor_id": self.sensor_id, "background_ppm": self.background, "active": a is not None,
                "start_ts_ms": a.start_ts_ms if a else None, "peak_ppm": a.peak_ppm if a else None}

    def reading(self, t: float, ts_ms: int, ppm: float,
                flags: tuple[str, ...] | frozenset[str]) -> list[dict[str, Any]]:
        if any(f in flags for f in _SKIP) or not math.isfinite(ppm):
            return []
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        bg = self.background
        if bg is None:
            self._learn(t, ppm)
            return []
        limit = bg + self.conf.margin_ppm
        a = self._active
        if a is None:
            if ppm <= limit:
                self._learn(t, ppm)
                return []
            # A run above the limit begins: it becomes an event once it lasts min_duration_s.
            a = self._active = _Active(t, ts_ms, ppm, ts_ms)
        elif a.below_since is None:
            a.excess_ppm_s += max(0.0, ppm - bg) * dt  # up to the event's end (its first reading back below)
        if ppm > a.peak_ppm:
            a.peak_ppm, a.peak_ts_ms = ppm, ts_ms
        if ppm > limit:
            a.below_since = None
            if not a.announced and t - a.start_t >= self.conf.min_duration_s:
                a.announced = True
                return [self._doc("started", a, ts_ms, bg)]
            return []
        # Back at or below the limit.
        if not a.announced:
            self._active = None  # a blip shorter than min_duration_s: no event
            self._learn(t, ppm)
            return []
        if a.below_since is None:
            a.below_since = (t, ts_ms)
        if t - a.below_since[0] < self.conf.end_after_s:
            return []
        doc = self._doc("ended", a, ts_ms, bg)
        self._active = None
        self._learn(t, ppm)
        return [doc]

    def _doc(self, kind: str, a: _Active, ts_ms: int, bg: float) -> dict[str, Any]:
        end_ms = a.below_since[1] if (kind == "ended" and a.below_since) else None
        return {
            "type": kind,
            "sensor_id": self.sensor_id,
            "quantity": self.conf.quantity,
            "ts_ms": ts_ms,
            "start_ts_ms": a.start_ts_ms,
            "end_ts_ms": end_ms,
            "duration_s": None if end_ms is None else round((end_ms - a.start_ts_ms) / 1000, 3),
            "peak_ppm": round(a.peak_ppm, 3),
            "peak_ts_ms": a.peak_ts_ms,
            "excess_ppm_s": round(a.excess_ppm_s, 3),
            "background_ppm": round(bg, 3),
            "margin_ppm": self.conf.margin_ppm,
        }
