"""The unit of data that flows sensor -> spool -> uplink."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reading:
    """A measurement once it has a place in the device's history.

    ``seq`` is per device, gapless and monotonic across restarts: the cloud proves completeness
    and drops duplicates with it. ``ts_ms`` is wall time (UTC ms) and ``clock_synced`` says whether
    that wall time could be trusted when it was taken (a Pi has no RTC).
    """

    seq: int
    ts_ms: int
    clock_synced: bool
    sensor_id: str
    quantity: str
    value: float
    unit: str
    flags: tuple[str, ...] = ()
    alarm: bool = False
