"""Reads each configured sensor at its interval on the monotonic clock and hands the readings to
the spool. One asyncio task per sensor; the blocking driver call runs on that sensor's own thread,
so a hung serial port stalls only its own sensor, never the loop or the other sensors.

Ticks are scheduled as ``start + k * interval`` (no drift); a tick missed because a read was slow is
skipped and counted, never bunched. A failing sensor backs off exponentially up to a minute and is
retried forever: a technician may plug it back in at any time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.clock import ClockSync
from agent.config import SensorConfig
from agent.feature import SensorNotRunning
from agent.reading import Reading
from agent.status_model import SensorStatus
from agent.supervise import Restarts, supervised
from drivers import registry
from drivers.base import Calibratable, Driver, DriverError, Measurement

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
# (sensor id, "kind: message", wall ms): a failed read, for the alarm engine's fault detection.
FailureHook = Callable[[str, str, int], None]


@dataclass
class SensorHealth:
    sensor_id: str
    driver: str
    state: str = "starting"  # starting | ok | failing | stopped
    reads: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    skipped_ticks: int = 0
    last_error: str | None = None
    last_error_wall: float | None = None
    last_read_wall: float | None = None
    last_values: dict[str, dict[str, Any]] = field(default_factory=dict)
    loop: Restarts = field(default_factory=Restarts)  # the read loop's unexpected crashes

    def snapshot(self) -> SensorStatus:
        return SensorStatus(
            id=self.sensor_id,
            driver=self.driver,
            state=self.state,
            reads=self.reads,
            errors=self.errors,
            consecutive_errors=self.consecutive_errors,
            skipped_ticks=self.skipped_ticks,
            last_error=self.last_error,
            last_error_ts=self.last_error_wall,
            last_read_ts=self.last_read_wall,
            last={q: dict(v) for q, v in self.last_values.items()},
            restarts=self.loop.count,
        )


class SensorTask:
    """Owns one driver instance and its schedule."""

    def __init__(
        self,
        conf: SensorConfig,
        sink: Callable[[list[Reading]], None],
        clock: ClockSync,
        driver: Driver | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        self.conf = conf
        self.sink = sink
        self.clock = clock
        self.on_failure = on_failure
        self.health = SensorHealth(conf.id, conf.driver)
        self._driver = driver or registry.create(conf.driver, conf.driver_settings())
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sensor-{conf.id}")
        # A driver that does no I/O is read on the loop: a thread hop per read cost more than the
        # read itself (and a fleet simulation would need a thread per simulated sensor).
        self._inline = getattr(self._driver, "blocking", True) is False
        self._task: asyncio.Task[None] | None = None
        self._opened = False
        self.interval_override: float | None = None  # e.g. faster while a leak event lasts
        self._regrid = asyncio.Event()

    def start(self) -> None:
        name = f"sensor-{self.conf.id}"
        self._task = asyncio.get_running_loop().create_task(supervised(name, self._run, self.health.loop), name=name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        loop = asyncio.get_running_loop()
        if self._opened:
            try:
                await asyncio.wait_for(loop.run_in_executor(self._executor, self._driver.close), 2.0)
            except (TimeoutError, DriverError, OSError) as exc:
                log.warning("sensor close failed", extra={"sensor": self.conf.id, "error": str(exc)})
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.health.state = "stopped"

    async def calibrate(self, kind: str, value: float | None, timeout_s: float) -> None:
        """Zero/span on this sensor's own thread, so it never interleaves with a read on the same
        port (the executor has one worker). Raises DriverError("unsupported") when the driver has
        no calibration, TimeoutError after ``timeout_s``."""
        driver = self._driver
        if not isinstance(driver, Calibratable):
            raise DriverError("unsupported",
                              f"sensor {self.conf.id!r} (driver {self.conf.driver}) does not support calibration")

        def run() -> None:
            if not self._opened:
                driver.open()
                self._opened = True
            driver.calibrate(kind, value)

        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):  # not wait_for: it can lose a shutdown's cancel (3.11)
            await loop.run_in_executor(self._executor, run)

    def _read_blocking(self) -> list[Measurement]:
        if not self._opened:
            self._driver.open()
            self._opened = True
        return self._driver.read()

    def set_interval(self, seconds: float | None) -> None:
        """Read every ``seconds`` from now on (None: back to ``interval_s``), starting at once."""
        if seconds != self.interval_override:
            self.interval_override = seconds
            self._regrid.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.conf.interval_s
        start = time.monotonic()
        k = 0
        while True:
            wanted = self.interval_override or self.conf.interval_s
            if wanted != interval:  # a new grid from now on
                interval, start, k = wanted, time.monotonic(), 0
            ts_ms = time.time_ns() // 1_000_000
            synced = self.clock.synced()
            # A read may take at most most of an interval, and never less than 2 s (slow UART sensors).
            timeout = max(2.0, interval * 0.9)
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
                # arrives as the read completes, and stop() would then wait forever.
                if self._inline:
                    measurements = self._read_blocking()
                else:
                    async with asyncio.timeout(timeout):
                        measurements = await loop.run_in_executor(self._executor, self._read_blocking)
            except TimeoutError:
                self._failed("timeout", f"no answer within {timeout:.1f} s")
            except DriverError as exc:
                self._failed(exc.kind, exc.message)
            except OSError as exc:
                self._opened = False
                self._failed("io", str(exc))
            except Exception as exc:
                log.error("driver raised unexpectedly", exc_info=True, extra={"sensor": self.conf.id})
                self._failed("driver_bug", f"{type(exc).__name__}: {exc}")
            else:
                self._succeeded(measurements, ts_ms, synced)
            # Next tick on the fixed grid; back off on consecutive failures.
            delay = 0.0
            if self.health.consecutive_errors:
                delay = min(MAX_BACKOFF_S, interval * 2 ** min(self.health.consecutive_errors - 1, 16))
            now = time.monotonic()
            k_next = max(k + 1, math.ceil((now + delay - start) / interval))
            self.health.skipped_ticks += max(0, k_next - k - 1) if not delay else 0
            k = k_next
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, start + k * interval - time.monotonic())):
                    await self._regrid.wait()
            self._regrid.clear()

    def _failed(self, kind: str, message: str) -> None:
        h = self.health
        h.errors += 1
        h.consecutive_errors += 1
        h.state = "failing"
        h.last_error = f"{kind}: {message}"
        h.last_error_wall = time.time()
        log.warning("sensor read failed", extra={"sensor": self.conf.id, "kind": kind, "error": message})
        if self.on_failure is not None:
            self.on_failure(self.conf.id, f"{kind}: {message}", int(h.last_error_wall * 1000))

    def _succeeded(self, measurements: list[Measurement], ts_ms: int, synced: bool) -> None:
        h = self.health
        if h.consecutive_errors:
            log.info("sensor recovered", extra={"sensor": self.conf.id, "after_errors": h.consecutive_errors})
        h.reads += 1
        h.consecutive_errors = 0
        h.state = "ok"
        h.last_read_wall = ts_ms / 1000
        items = []
        sid = self.conf.id
        for m in measurements:
            flags = tuple(sorted(m.flags)) if m.flags else ()
            items.append(Reading.new(ts_ms, synced, sid, m.quantity, float(m.value), m.unit, flags))
            h.last_values[m.quantity] = {"value": m.value, "unit": m.unit, "flags": list(flags)}
        if items:
            self.sink(items)


class Sampler:
    """The set of running sensor tasks; ``apply`` reconfigures live (only changed sensors restart)."""

    def __init__(self, sink: Callable[[list[Reading]], None], clock: ClockSync,
                 on_failure: FailureHook | None = None) -> None:
        self.sink = sink
        self.clock = clock
        self.on_failure = on_failure
        self.tasks: dict[str, SensorTask] = {}
        self.failed_to_start: dict[str, str] = {}

    async def apply(self, sensors: list[SensorConfig]) -> None:
        wanted = {s.id: s for s in sensors if s.enabled}
        for sid in list(self.tasks):
            if sid not in wanted or wanted[sid] != self.tasks[sid].conf:
                await self.tasks.pop(sid).stop()
        self.failed_to_start.clear()
        for sid, conf in wanted.items():
            if sid in self.tasks:
                continue
            try:
                task = SensorTask(conf, self.sink, self.clock, on_failure=self.on_failure)
            except (registry.UnknownDriverError, DriverError, ValueError, OSError) as exc:
                self.failed_to_start[sid] = str(exc)
                log.error("sensor not started", extra={"sensor": sid, "error": str(exc)})
                continue
            self.tasks[sid] = task
            task.start()

    async def calibrate(self, sensor_id: str, kind: str, value: float | None, timeout_s: float) -> None:
        """Zero/span on a running sensor (see SensorTask.calibrate); SensorNotRunning otherwise."""
        task = self.tasks.get(sensor_id)
        if task is None:
            raise SensorNotRunning(sensor_id)
        await task.calibrate(kind, value, timeout_s)

    def set_interval(self, sensor_id: str, seconds: float | None) -> None:
        task = self.tasks.get(sensor_id)
        if task is not None:
            task.set_interval(seconds)

    async def stop(self) -> None:
        await asyncio.gather(*(t.stop() for t in self.tasks.values()))
        self.tasks.clear()

    def health(self) -> list[SensorStatus]:
        out = [t.health.snapshot() for t in self.tasks.values()]
        out += [SensorStatus(sid, "not_started", err) for sid, err in self.failed_to_start.items()]
        return out
