"""Leak capture on the data path: runs each sensor's leak detector, decides which readings are
stored, and keeps the pre-trigger ring.

With ``quiet_store_s`` set, a quiet sensor stores one reading per ``quiet_store_s`` and keeps the
others in a ring of the last ``pretrigger_s``; when a leak starts, the ring is committed ahead of
the current readings and every reading is stored until it ends, so the cloud sees the onset at the
full read rate. Readings with the alarm bit are always stored. Without ``quiet_store_s`` every
reading is stored anyway and the ring stays empty. ``set_fast(sensor_id, on)`` asks the sampler
to read at ``fast_interval_s`` for the duration of an event."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from agent.alarms.leak import LeakConfig, LeakDetector
from agent.reading import Reading

Planned = tuple[int | None, Reading]  # (index in the evaluated batch, or None for a ring reading)


class _Sensor:
    def __init__(self, sensor_id: str, conf: LeakConfig) -> None:
        self.conf = conf
        self.detector = LeakDetector(sensor_id, conf)
        self.ring: deque[tuple[float, Reading]] = deque()
        self.last_stored: float | None = None


class LeakCapture:
    def __init__(self, set_fast: Callable[[str, bool], None] | None = None, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self.set_fast = set_fast
        self.sensors: dict[str, _Sensor] = {}

    def apply(self, sensors: list[Any]) -> None:
        old = self.sensors
        self.sensors = {}
        for s in sensors:
            leak = getattr(s, "leak", None)
            if leak is None or not getattr(s, "enabled", True):
                continue
            prev = old.get(s.id)
            self.sensors[s.id] = prev if prev is not None and prev.conf == leak else _Sensor(s.id, leak)

    def states(self) -> list[dict[str, Any]]:
        return [s.detector.state() for s in self.sensors.values()]

    def filter(self, items: list[Reading]) -> tuple[list[Planned], list[tuple[int, dict[str, Any]]]]:
        """What to spool, in order, and the leak event documents with the index of their reading."""
        t = self._clock()
        plan: list[Planned] = []
        docs: list[tuple[int, dict[str, Any]]] = []
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.sensor_id, []).append(i)
        for sid, idxs in groups.items():
            sensor = self.sensors.get(sid)
            if sensor is None:
                plan += [(i, items[i]) for i in idxs]
                continue
            started = False
            for i in idxs:
                it = items[i]
                if it.quantity != sensor.conf.quantity:
                    continue
                for doc in sensor.detector.reading(t, it.ts_ms, it.value, it.flags):
                    docs.append((i, doc))
                    started = started or doc["type"] == "started"
                    if self.set_fast is not None and sensor.conf.fast_interval_s is not None:
                        self.set_fast(sid, doc["type"] == "started")
            plan += self._store(sensor, t, [(i, items[i]) for i in idxs], started, bool(docs))
        return plan, docs

    def _store(self, s: _Sensor, t: float, batch: list[Planned], started: bool, event: bool) -> list[Planned]:
        c = s.conf
        while s.ring and t - s.ring[0][0] > c.pretrigger_s:
            s.ring.popleft()
        out: list[Planned] = []
        if started:
            out += [(None, r) for _, r in s.ring]  # the onset, at the full read rate
            s.ring.clear()
        quiet_due = c.quiet_store_s is None or s.last_stored is None or t - s.last_stored >= c.quiet_store_s
        if quiet_due or s.detector.active or event or any(r.alarm for _, r in batch):
            if quiet_due:
                s.last_stored = t
            return out + batch
        if c.quiet_store_s is not None:
            s.ring.extend((t, r) for _, r in batch)
        return out
