"""The alarm feature: the engine on the data path, events into the durable store and out on the
alarm topic, acknowledgements (job action, local CLI), and the states for status and the shadow.

Everything here works with no network: transitions are evaluated, stored and drive the local
outputs whether or not a connection exists; the publisher only empties the store when it can."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.alarms.capture import LeakCapture
from agent.alarms.engine import AckError, AlarmEngine, Fired
from agent.alarms.outputs.config import OutputConfig
from agent.alarms.outputs.manager import OutputManager
from agent.alarms.publisher import EventPublisher
from agent.alarms.store import EventStore, EventStoreError
from agent.feature import Ports
from agent.reading import Reading

log = logging.getLogger(__name__)

__all__ = ["AckError", "AlarmFeature"]


def event_doc(f: Fired, seq: int | None, *, site: str, device: str, synced: bool,
              by: str | None = None) -> dict[str, Any]:
    """The JSON event (pinned fields first: type, level, sensor_id, quantity, value, threshold, ts_ms, seq)."""
    m, tr = f.machine, f.transition
    return {
        "type": tr.type,
        "level": tr.level,
        "sensor_id": m.sensor_id,
        "quantity": m.rule.quantity,
        "value": None if tr.value is None else round(tr.value, 6),
        "threshold": tr.threshold,
        "ts_ms": tr.ts_ms,
        "seq": seq,
        "previous_level": tr.previous_level,
        "unit": m.value_unit,
        "direction": m.rule.direction,
        "latched": m.latched,
        "acknowledged": m.acknowledged,
        "since_ts_ms": m.since_ts_ms,
        "reason": tr.reason,
        "by": by,
        "site": site,
        "device": device,
        "clock_synced": synced,
    }


class AlarmFeature:
    """The data-path half (``process``, ``failure``, ``tick``, outputs) is called by the runtime on
    every reading, with or without a network; the ``Feature`` half (``start``/``stop``) only
    publishes the stored events over the connection the runtime hands it."""

    name = "alarms"
    status_key = "alarms"

    def __init__(self, sensors: list[Any], events_path: Path, *, site: str, device: str,
                 clock_synced: Callable[[], bool], keep_sent: int = 10_000,
                 outputs: list[OutputConfig] | None = None, pin_factory: Any = None,
                 set_fast: Callable[[str, bool], None] | None = None,
                 leak_clock: Callable[[], float] = time.monotonic) -> None:
        """``leak_clock``: the monotonic seconds the leak detectors time events by (a test's own)."""
        self.engine = AlarmEngine()
        self.site, self.device = site, device
        self.clock_synced = clock_synced
        self.store = EventStore(events_path, keep_sent=keep_sent)
        self.publisher: EventPublisher | None = None
        self.listeners: list[Callable[[list[dict[str, Any]]], None]] = []  # outputs, leak capture
        self._last_seq: dict[str, int] = {}
        self._sensors = sensors
        self.store_errors = 0
        self.leaks = LeakCapture(set_fast, clock=leak_clock)
        self.outputs = OutputManager(outputs or [], self._output_problem_threadsafe, pin_factory)
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the store, resume states, and set the outputs (they work with no network at all)."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.store.open()
        self.engine.apply(self._sensors)
        self.leaks.apply(self._sensors)
        self._restore(self.engine.machines)
        self.outputs.start(self.engine.states())

    def close(self) -> None:
        self.outputs.stop()
        self.store.close()

    def _restore(self, keys: Any) -> None:
        """Resume levels and latches from the newest stored event of each rule: a latched alarm holds
        across a restart (it is cleared only by an acknowledgement or the gas going away)."""
        try:
            latest = self.store.latest_by_key("alarm")
        except EventStoreError:
            return
        for key in keys:
            doc, m = latest.get(key), self.engine.machines.get(key)
            if doc is None or m is None:
                continue
            level = doc.get("level")
            if level == "fault":  # the level under a fault is not in the event; a latch is
                level = "alarm" if doc.get("latched") else "normal"
            m.restore(str(level), bool(doc.get("latched")), bool(doc.get("acknowledged")), doc.get("since_ts_ms"))
            if isinstance(doc.get("seq"), int):
                self._last_seq[key] = doc["seq"]

    async def start(self, ports: Ports) -> None:
        """Feature lifecycle: publish stored events over the connection (none: they wait in the store)."""
        await self.stop()
        if ports.connection is None:
            return
        conf = ports.config()
        site = conf.device.site_id
        topics = {kind: t.format(site=site, thing=ports.thing_name)
                  for kind, t in (("alarm", conf.alarms.topic), ("leak", conf.alarms.leak_topic))}
        self.publisher = EventPublisher(self.store, ports.connection, topics, conf.uplink.ack_timeout_s)
        self.publisher.start()

    async def stop(self) -> None:
        if self.publisher is not None:
            await self.publisher.stop()
            self.publisher = None

    def apply(self, sensors: list[Any]) -> None:
        self._sensors = sensors
        self.leaks.apply(sensors)
        self._restore(self.engine.apply(sensors))

    # --- data path --------------------------------------------------------------------------------------
    def process(self, items: list[Reading], append: Callable[[list[Reading]], list[Reading]]) -> list[Reading]:
        """Evaluate alarms, pick what to spool (leak capture), spool it (``append``), then store the
        alarm and leak events with their readings' seqs."""
        items, fired = self.engine.evaluate(items)
        plan, leak_docs = self.leaks.filter(items)
        readings = append([item for _, item in plan])
        seq_of: dict[int | None, int] = {}
        for (index, _), r in zip(plan, readings, strict=True):
            if index is not None:
                seq_of[index] = r.seq
            for m in self.engine.machines_for(r.sensor_id, r.quantity):
                self._last_seq[m.key] = r.seq
        if fired:
            self._record(fired, seq_of)
        if leak_docs:
            pretrigger = sum(index is None for index, _ in plan)
            self._record_leaks([(doc, seq_of.get(i), pretrigger) for i, doc in leak_docs])
        return readings

    def _record_leaks(self, items: list[tuple[dict[str, Any], int | None, int]]) -> None:
        synced = self.clock_synced()
        docs = []
        for doc, seq, pretrigger in items:
            full = {**doc, "seq": seq, "site": self.site, "device": self.device, "clock_synced": synced}
            if doc["type"] == "started":
                full["pretrigger_readings"] = pretrigger
            docs.append((doc["sensor_id"], full))
            log.warning("leak " + doc["type"], extra={"sensor": doc["sensor_id"], "peak_ppm": doc["peak_ppm"]})
        try:
            self.store.add("leak", docs)
        except EventStoreError as exc:
            self.store_errors += 1
            log.error("leak event not stored", extra={"error": str(exc)})
        if self.publisher is not None:
            self.publisher.notify()

    def failure(self, sensor_id: str, reason: str, ts_ms: int) -> None:
        self._record(self.engine.failure(sensor_id, reason, ts_ms), {})

    def tick(self) -> None:
        self._record(self.engine.tick(time.time_ns() // 1_000_000), {})

    def acknowledge(self, sensor_id: str, quantity: str | None, by: str | None) -> list[dict[str, Any]]:
        """Raises AckError (nothing changed) when no latched, unacknowledged alarm matches."""
        fired = self.engine.acknowledge(sensor_id, quantity, time.time_ns() // 1_000_000)
        log.warning("alarm acknowledged", extra={"sensor": sensor_id, "quantity": quantity or "*", "by": by or "-"})
        return self._record(fired, {}, by=by)

    def _record(self, fired: list[Fired], seqs: dict[int | None, int], by: str | None = None) -> list[dict[str, Any]]:
        if not fired:
            return []
        synced = self.clock_synced()
        items = []
        for f in fired:
            seq = seqs.get(f.index) if f.index is not None else None
            seq = seq if seq is not None else self._last_seq.get(f.key)
            if seq is not None:
                self._last_seq[f.key] = seq
            items.append((f.key, event_doc(f, seq, site=self.site, device=self.device, synced=synced, by=by)))
            log.warning("alarm " + f.transition.type, extra={"alarm": f.key, "alarm_level": f.transition.level,
                                                             "value": f.transition.value})
        try:
            docs = self.store.add("alarm", items)
        except EventStoreError as exc:
            # The transition still happened (the machine moved, outputs follow); only its record failed.
            self.store_errors += 1
            log.error("alarm event not stored", extra={"error": str(exc)})
            docs = [doc for _, doc in items]
        self.outputs.update(self.engine.states())
        for listener in self.listeners:
            listener(docs)
        if self.publisher is not None:
            self.publisher.notify()
        return docs

    # --- outputs -------------------------------------------------------------------------------------------
    def _output_problem_threadsafe(self, name: str, reason: str | None) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._output_problem, name, reason)
        else:
            self._output_problem(name, reason)

    def _output_problem(self, name: str, reason: str | None) -> None:
        """An output that failed (or works again) is itself an event: the site's siren may be dead."""
        doc = {
            "type": "fault" if reason else "cleared", "level": "fault" if reason else "normal",
            "sensor_id": name, "quantity": "output", "value": None, "threshold": None,
            "ts_ms": time.time_ns() // 1_000_000, "seq": None, "previous_level": "normal" if reason else "fault",
            "reason": reason or "output works again", "site": self.site, "device": self.device,
            "clock_synced": self.clock_synced(),
        }
        try:
            self.store.add("alarm", [(f"output/{name}", doc)])
        except EventStoreError as exc:
            self.store_errors += 1
            log.error("output event not stored", extra={"error": str(exc)})
        if self.publisher is not None:
            self.publisher.notify()

    # --- status -------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        p = self.publisher
        try:
            pending: int | None = self.store.pending()
        except EventStoreError:
            pending = None
        return {
            "active": self.engine.active(),
            "states": self.engine.states(),
            "outputs": self.outputs.status(),
            "leaks": self.leaks.states(),
            "events": {
                "pending": pending,
                "published": p.stats.published if p else 0,
                "failures": p.stats.failures if p else 0,
                "last_error": p.stats.last_error if p else None,
                "last_publish_ts": p.stats.last_publish_wall if p else None,
                "store_errors": self.store_errors,
                "quarantined": self.store.quarantined,
            },
        }
