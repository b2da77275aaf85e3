"""Every configured alarm rule of every sensor, fed from the data path.

``evaluate`` runs before the readings are spooled: it sets each reading's ``alarm`` bit (the reading
is kept with the alarm table's priority and sent at once) and returns the transitions it caused,
each tied to the index of its reading so the caller can stamp the spooled sequence number on the
event. Pure apart from the machines' state; the feature (``feature.py``) does the I/O."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.alarms.machine import AlarmMachine, NotLatched, Transition
from agent.reading import Reading


@dataclass(frozen=True)
class Fired:
    """A transition of machine ``key``; ``index`` is its reading's position in the evaluated batch."""

    key: str
    machine: AlarmMachine
    transition: Transition
    index: int | None = None


class AckError(Exception):
    """An acknowledgement that matched no latched, unacknowledged alarm; nothing was changed."""


def _sensor_fields(sensor: Any) -> tuple[str, list[Any], float | None, float]:
    lel: float | None = None
    try:
        lel = getattr(sensor.driver_settings(), "lel_vol_percent", None)
    except ValueError:
        lel = None
    return sensor.id, list(sensor.alarms), lel, float(sensor.interval_s)


class AlarmEngine:
    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self.machines: dict[str, AlarmMachine] = {}
        self._by_sensor: dict[str, list[AlarmMachine]] = {}

    def apply(self, sensors: Iterable[Any]) -> list[str]:
        """(Re)build machines from sensor configs (enabled ones). An unchanged rule keeps its machine and
        state; a new or changed one starts at normal. Returns the keys of new machines."""
        old = self.machines
        self.machines, self._by_sensor, created = {}, {}, []
        now = self._clock()
        for sensor in sensors:
            if not getattr(sensor, "enabled", True):
                continue
            sid, rules, lel, interval = _sensor_fields(sensor)
            for rule in rules:
                m = AlarmMachine(sid, rule, t0=now, lel_vol_percent=lel, stale_after_s=max(30.0, 5 * interval))
                prev = old.get(m.key)
                if prev is not None and prev.rule == rule and prev.lel == lel:
                    m = prev
                else:
                    created.append(m.key)
                self.machines[m.key] = m
                self._by_sensor.setdefault(sid, []).append(m)
        return created

    def machines_for(self, sensor_id: str, quantity: str) -> list[AlarmMachine]:
        return [m for m in self._by_sensor.get(sensor_id, ()) if m.rule.quantity == quantity]

    def evaluate(self, items: list[Reading]) -> tuple[list[Reading], list[Fired]]:
        t = self._clock()
        out: list[Reading] = []
        fired: list[Fired] = []
        for i, item in enumerate(items):
            alarm = item.alarm
            for m in self._by_sensor.get(item.sensor_id, ()):
                if m.rule.quantity != item.quantity:
                    continue
                trs = m.reading(t, item.ts_ms, item.value, item.unit, item.flags)
                fired += [Fired(m.key, m, tr, i) for tr in trs]
                alarm = alarm or bool(trs) or m.level != "normal"
            out.append(item if alarm == item.alarm else dataclasses.replace(item, alarm=alarm))
        return out, fired

    def failure(self, sensor_id: str, reason: str, ts_ms: int) -> list[Fired]:
        t = self._clock()
        return [Fired(m.key, m, tr) for m in self._by_sensor.get(sensor_id, ()) for tr in m.failure(t, ts_ms, reason)]

    def tick(self, ts_ms: int) -> list[Fired]:
        t = self._clock()
        return [Fired(m.key, m, tr) for m in self.machines.values() for tr in m.tick(t, ts_ms)]

    def acknowledge(self, sensor_id: str, quantity: str | None, ts_ms: int) -> list[Fired]:
        """Acknowledge the latched alarms of a sensor (one quantity, or all). All-or-nothing: when none
        matches, AckError says why and nothing changes."""
        machines = [m for m in self._by_sensor.get(sensor_id, ()) if quantity is None or m.rule.quantity == quantity]
        if not machines:
            what = f"{sensor_id}/{quantity}" if quantity else sensor_id
            known = ", ".join(sorted(self.machines)) or "none"
            raise AckError(f"no alarm configured for {what}; configured: {known}")
        latched = [m for m in machines if m.latched and not m.acknowledged]
        if not latched:
            states = ", ".join(f"{m.key}={m.reported}{' (acknowledged)' if m.acknowledged else ''}" for m in machines)
            raise AckError(f"nothing to acknowledge: no latched alarm on {states}")
        out: list[Fired] = []
        for m in latched:
            try:
                out += [Fired(m.key, m, tr) for tr in m.acknowledge(ts_ms)]
            except NotLatched as exc:  # checked just above; kept so a race cannot crash the caller
                raise AckError(str(exc)) from None
        return out

    def states(self) -> list[dict[str, Any]]:
        """Every machine's state, active ones first (fault and alarm before warn before normal)."""
        order = {"fault": 0, "alarm": 1, "warn": 2, "normal": 3}
        return sorted((m.state() for m in self.machines.values()), key=lambda s: (order[s["level"]], s["sensor_id"]))

    def active(self) -> list[dict[str, Any]]:
        return [s for s in self.states() if s["level"] != "normal"]
