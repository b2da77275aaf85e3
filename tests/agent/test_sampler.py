"""The sampler: a fixed monotonic grid, faults reported and retried, one hung sensor never stalls
another, failures reported to the alarm engine."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time

from agent.clock import ClockSync
from agent.config import SensorConfig
from agent.sampler import SensorTask
from drivers.base import DriverError, Measurement
from tests.eventually import eventually_async


class ScriptedDriver:
    name = "scripted"
    Settings = None

    def __init__(self, script=None, value=2.0, block: threading.Event | None = None):
        self.script = list(script or [])
        self.value = value
        self.block = block
        self.reads = 0
        self.opened = 0

    def open(self):
        self.opened += 1

    def close(self):
        pass

    def read(self):
        self.reads += 1
        if self.block is not None:
            self.block.wait(10)
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, BaseException):
                raise step
        return [Measurement("methane", self.value, "ppm")]


def conf(sid="s1", interval=0.05, alarms=()):
    return SensorConfig(id=sid, driver="simulated", interval_s=interval, alarms=list(alarms))


async def run_for(tasks, seconds):
    for t in tasks:
        t.start()
    await asyncio.sleep(seconds)
    for t in tasks:
        await t.stop()


def test_fixed_grid_without_drift():
    got = []
    task = SensorTask(conf(interval=0.05), got.extend, ClockSync("assume_synced"), driver=ScriptedDriver())
    t0 = time.time()
    asyncio.run(run_for([task], 1.0))
    elapsed = time.time() - t0
    stamps = [r.ts_ms / 1000 - t0 for r in got]
    # Each reading's tick on the grid: a tick the sampler skipped (by design, when a loaded machine
    # made it late past the next one) leaves a gap of two intervals. The count of skips must be
    # exactly the sampler's own.
    ks = [0]
    for a, b in itertools.pairwise(stamps):
        ks.append(ks[-1] + max(1, round((b - a) / 0.05)))
    assert ks[-1] == len(stamps) - 1 + task.health.skipped_ticks, (ks, task.health.skipped_ticks)
    # About 20 ticks in the second it ran (read or skipped; more if the loop overslept its stop).
    assert 17 <= ks[-1] + 1 <= elapsed / 0.05 + 2, (ks[-1], elapsed)
    # Tick k happens near k * interval (loose per tick: a shared machine jitters), and the error
    # does not accumulate: the last ticks are as close to the grid as the first ones (medians: one
    # late tick is jitter, not drift).
    err = [s - k * 0.05 for k, s in zip(ks, stamps, strict=True)]
    assert all(abs(e) < 0.1 for e in err), err
    assert abs(statistics.median(err[-5:]) - statistics.median(err[:5])) < 0.03, err
    assert all(r.clock_synced for r in got)
    assert task.health.state == "stopped" and task.health.reads == len(got)


def test_faults_are_counted_backed_off_and_recovered():
    drv = ScriptedDriver(script=[DriverError("timeout", "no reply")] * 3)
    got = []
    task = SensorTask(conf(interval=0.02), got.extend, ClockSync("assume_synced"), driver=drv)

    async def scenario():
        task.start()
        await eventually_async(lambda: got, 5, 0.01)
        h = task.health
        assert h.errors == 3 and h.consecutive_errors == 0 and h.state == "ok"
        assert h.last_error == "timeout: no reply"
        await task.stop()

    t0 = time.monotonic()
    asyncio.run(scenario())
    # Backoff 0.02 + 0.04 + 0.08 s before the first good read: faults are not retried in a busy loop.
    assert time.monotonic() - t0 >= 0.12


def test_driver_bug_is_reported_not_fatal():
    drv = ScriptedDriver(script=[ZeroDivisionError("oops")])
    got = []
    task = SensorTask(conf(interval=0.02), got.extend, ClockSync("assume_synced"), driver=drv)
    asyncio.run(run_for([task], 0.5))
    assert task.health.errors == 1
    assert task.health.last_error == "driver_bug: ZeroDivisionError: oops"
    assert got, "sampling continued after the bug"


def test_hung_sensor_does_not_stall_the_others():
    release = threading.Event()
    hung = SensorTask(conf("hung", 0.05), lambda items: None, ClockSync("assume_synced"),
                      driver=ScriptedDriver(block=release))
    got = []
    healthy = SensorTask(conf("ok", 0.05), got.extend, ClockSync("assume_synced"), driver=ScriptedDriver())

    async def scenario():
        hung.start()
        healthy.start()
        await asyncio.sleep(2.6)
        assert hung.health.errors >= 1 and "timeout" in (hung.health.last_error or "")
        release.set()
        await hung.stop()
        await healthy.stop()

    asyncio.run(scenario())
    assert len(got) >= 40  # ~52 ticks in 2.6 s


def test_a_crash_outside_the_driver_restarts_the_loop_and_is_counted(caplog):
    """The sink (the spool) raising something nobody expected used to end the sensor's task
    silently: now it is logged with its traceback, counted and the loop restarted."""
    got = []
    calls = 0

    def sink(items):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("spool surprise")
        got.extend(items)

    async def scenario() -> None:
        task = SensorTask(conf(interval=0.05), sink, ClockSync("assume_synced"), driver=ScriptedDriver())
        task.start()
        await eventually_async(lambda: got, 10)
        await task.stop()
        assert got and task.health.snapshot().restarts == 1
        assert task.health.loop.last_error == "RuntimeError: spool surprise"

    asyncio.run(scenario())
    crash = [r for r in caplog.records if r.getMessage() == "loop crashed; restarting it"]
    assert crash and crash[0].exc_info is not None and getattr(crash[0], "loop", "") == "sensor-s1"


class ThreadRecordingDriver(ScriptedDriver):
    def __init__(self, blocking: bool | None):
        super().__init__()
        if blocking is not None:
            self.blocking = blocking
        self.threads: set[str] = set()

    def read(self):
        self.threads.add(threading.current_thread().name)
        return super().read()


def test_non_blocking_driver_is_read_on_the_loop_and_others_on_their_thread():
    inline, default, blocking = ThreadRecordingDriver(False), ThreadRecordingDriver(None), ThreadRecordingDriver(True)
    got: list = []
    tasks = [SensorTask(conf(sid=f"s{i}"), got.extend, ClockSync("assume_synced"), driver=d)
             for i, d in enumerate((inline, default, blocking))]
    asyncio.run(run_for(tasks, 0.3))
    assert inline.threads == {threading.main_thread().name} and inline.reads >= 3
    assert default.threads == {"sensor-s1_0"} and blocking.threads == {"sensor-s2_0"}
    assert len(got) == inline.reads + default.reads + blocking.reads


def test_failed_reads_reach_the_failure_hook():
    failures = []

    class Broken(ScriptedDriver):
        def read(self):
            raise DriverError("timeout", "no answer")

    task = SensorTask(conf(interval=0.05), [].extend, ClockSync("assume_synced"), driver=Broken(value=1.0),
                      on_failure=lambda sid, reason, ts: failures.append((sid, reason)))
    asyncio.run(run_for([task], 0.2))
    assert failures and failures[0] == ("s1", "timeout: no answer")


def test_set_interval_reads_faster_at_once_and_back():
    got = []
    task = SensorTask(conf(interval=5.0), got.extend, ClockSync("assume_synced"), driver=ScriptedDriver(value=2.0))

    async def scenario():
        task.start()
        await asyncio.sleep(0.3)
        assert len(got) == 1  # one read at start, the next only after 5 s
        task.set_interval(0.05)  # a leak event: read fast, starting now (not after the 5 s sleep)
        await asyncio.sleep(0.6)
        fast = len(got)
        task.set_interval(None)
        await asyncio.sleep(0.5)
        await task.stop()
        return fast

    fast = asyncio.run(scenario())
    assert fast >= 6
    assert len(got) <= fast + 1  # back to 5 s: at most the one read at the switch
