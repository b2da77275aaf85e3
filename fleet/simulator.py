"""The fleet simulator: N real agents hosted in a few agent worker processes (``fleet/workers.py``:
each its own asyncio loop and awscrt event-loop group, default one per CPU) against the emulator
this process runs (broker as its own mosquitto process), or against a real IoT Core account. This
process provisions, keeps the live view, runs the scenarios and writes the report. Scenarios run in
a fixed order on the same fleet:

cold-start -> steady -> broker-restart -> rollout -> completeness

and each leaves its figures in the report (see docs/fleet.md for what each one measures)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from agent import config as cfg
from agent.config import ConnectionConfig
from agent.identity_setup import IdentitySetupError
from cloud.seqranges import runs
from fleet.device import provision_identity
from fleet.procstat import Sample, cpu_percent, percentile, sample, threads_cpu_s
from fleet.profiles import (
    CURRENT_SENSORS,
    READINGS_PER_GATEWAY_S,
    DeviceProfile,
    Endpoint,
    fleet_profiles,
    write_config,
)
from fleet.workers import AgentWorker, DeviceState, WorkerDied, start_workers

log = logging.getLogger(__name__)

SCENARIOS = ("cold-start", "steady", "broker-restart", "rollout", "completeness")
EMULATOR_ONLY = ("broker-restart", "rollout")
FLEET_GROUP = "methane-fleet"
STOP_WAVE = 50  # agents asked to stop at once at the end of the run
EMULATOR_THREADS = "emulator-"  # the name prefix of every thread the in-process emulator starts
POLL_S = 0.5  # how often a wait asks the workers for their agents' state


def default_agent_workers() -> int:
    """One agent worker per CPU this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


class SimulationError(Exception):
    """The simulation could not run (bad options, emulator would not start); says why."""


@dataclass
class Options:
    devices: int
    duration_s: float
    scenarios: list[str]
    workdir: Path
    emulator_dir: Path | None = None
    aws: Endpoint | None = None
    provision_parallel: int = 4
    agent_workers: int = field(default_factory=default_agent_workers)
    batch_max_age_s: float = 60.0
    max_reconnect_delay_ms: int = 30_000
    min_reconnect_delay_ms: int | None = None  # None: the agent's default
    outage_s: float = 10.0
    rollout_per_minute: int = 600
    legacy_fraction: float = 0.2
    abort_threshold_percent: float = 10.0
    seed: int = 1
    progress_s: float = 5.0
    log_level: str = "ERROR"
    timeout_s: float = 600.0


@dataclass
class DeviceView:
    """The parent's view of one gateway: what it provisioned itself, plus the agent's state as its
    worker last reported it."""

    index: int
    profile: DeviceProfile
    config_path: Path
    worker: AgentWorker
    thing: str | None = None
    started: bool = False
    provision_s: float | None = None
    error: str | None = None
    committed: int = 0
    state: DeviceState | None = None

    @property
    def connected(self) -> bool:
        return self.state is not None and self.state.connected

    @property
    def acked(self) -> int:
        return self.state.acked if self.state is not None else 0

    @property
    def produced(self) -> int:
        return self.state.produced if self.state is not None else 0

    @property
    def errors(self) -> int:
        return self.state.errors if self.state is not None else int(self.error is not None)

    def last_connected_wall(self) -> float | None:
        return self.state.last_connected_wall if self.state is not None else None

    def spooled(self) -> int:
        return self.state.spooled if self.state is not None else 0


@dataclass
class Progress:
    """The live view's numbers, refreshed every ``progress_s``."""

    out: TextIO
    last_produced: int = 0
    last_t: float = field(default_factory=time.monotonic)

    def line(self, phase: str, devices: list[DeviceView], n: int) -> str:
        now = time.monotonic()
        produced = sum(d.produced for d in devices)
        rate = (produced - self.last_produced) / max(1e-6, now - self.last_t)
        self.last_produced, self.last_t = produced, now
        prov = sum(d.thing is not None for d in devices)
        conn = sum(d.connected for d in devices)
        pub = sum(d.acked > 0 for d in devices)
        errs = sum(d.errors for d in devices)
        return (f"[{phase:<14}] provisioned {prov}/{n}  connected {conn}  publishing {pub}  "
                f"readings/s {rate:,.0f}  acked {sum(d.acked for d in devices):,}  errors {errs}")


def raise_fd_limit(need: int) -> int:
    """Each gateway holds a socket, its spool (db, wal, shm), a status socket...; mosquitto inherits
    the limit too. Raise the soft limit to the hard one; refuse to start when that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and soft < need:
        raise SimulationError(f"open-file limit {soft} is below the {need} this fleet needs; raise it "
                              "(ulimit -n / LimitNOFILE=)")
    return int(soft)


class FleetSimulator:
    def __init__(self, opts: Options, out: TextIO = sys.stderr) -> None:
        bad = [s for s in opts.scenarios if s not in SCENARIOS]
        if bad:
            raise SimulationError(f"unknown scenario(s) {', '.join(bad)}; known: {', '.join(SCENARIOS)}")
        if (opts.emulator_dir is None) == (opts.aws is None):
            raise SimulationError("give either --emulator-dir or an AWS endpoint with its claim certificate")
        if opts.aws is not None and (wrong := [s for s in opts.scenarios if s in EMULATOR_ONLY]):
            raise SimulationError(f"scenario(s) {', '.join(wrong)} need the emulator (they restart the broker "
                                  "or create jobs through its admin API)")
        if opts.devices < 1:
            raise SimulationError("--devices must be at least 1")
        if opts.agent_workers < 1:
            raise SimulationError("--agent-workers must be at least 1")
        min_ms = opts.min_reconnect_delay_ms or ConnectionConfig.model_fields["min_reconnect_delay_ms"].default
        if min_ms > opts.max_reconnect_delay_ms:
            raise SimulationError(f"the first reconnect window ({min_ms} ms) exceeds --max-reconnect-delay-ms "
                                  f"({opts.max_reconnect_delay_ms}); give --min-reconnect-delay-ms")
        self.opts = opts
        self.out = out
        self.emu: Any = None
        self.recorder: Any = None
        self.devices: list[DeviceView] = []
        self.workers: list[AgentWorker] = []
        self.report: dict[str, Any] = {"devices": opts.devices, "scenarios": {}}
        self.progress = Progress(out)
        self.phase = "starting"

    # --- the run --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.report["fd_limit"] = raise_fd_limit(opts_fds(self.opts.devices))
        logging.getLogger().setLevel(self.opts.log_level)
        endpoint = self._start_emulator() if self.opts.emulator_dir is not None else self.opts.aws
        assert endpoint is not None
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the broker on SIGTERM too
        try:
            return asyncio.run(self._run(endpoint))
        finally:
            signal.signal(signal.SIGTERM, previous)
            if self.emu is not None:
                self.emu.stop()

    def _start_emulator(self) -> Endpoint:
        from emulator import Emulator
        from emulator.recorder import TelemetryRecorder
        from emulator.services.device_services import DeviceServices

        assert self.opts.emulator_dir is not None
        self.recorder = TelemetryRecorder()
        self.emu = Emulator(self.opts.emulator_dir, components=[DeviceServices(), self.recorder],
                            fleet_provisioning=True)
        try:
            info = self.emu.start()
        except Exception as exc:  # BrokerError, PkiError, OSError: all mean "no emulator"
            raise SimulationError(f"emulator did not start in {self.opts.emulator_dir}: {exc}") from exc
        assert info.claim_cert_file and info.claim_key_file and info.template_name
        return Endpoint(info.endpoint, info.port, info.ca_file, info.claim_cert_file, info.claim_key_file,
                        info.template_name)

    async def _run(self, endpoint: Endpoint) -> dict[str, Any]:
        o = self.opts
        profiles = fleet_profiles(o.devices, o.seed, o.legacy_fraction)
        self.workers = start_workers(min(o.agent_workers, o.devices), o.log_level)
        self.report["agent_workers"] = len(self.workers)
        for p in profiles:
            path = write_config(p, o.workdir / p.serial, endpoint, batch_max_age_s=o.batch_max_age_s,
                                max_reconnect_delay_ms=o.max_reconnect_delay_ms, log_level=o.log_level,
                                min_reconnect_delay_ms=o.min_reconnect_delay_ms)
            self.devices.append(DeviceView(p.index, p, path, self.workers[len(self.devices) % len(self.workers)]))
        ticker = asyncio.get_running_loop().create_task(self._ticker())
        base = sample()
        try:
            await self._cold_start()
            if "steady" in o.scenarios:
                await self._steady()
            if "broker-restart" in o.scenarios:
                await self._broker_restart()
            if "rollout" in o.scenarios:
                await self._rollout()
            await self._refresh()
            self.report["publishing"] = sum(d.acked > 0 for d in self.devices)
            await self._completeness()
        except WorkerDied as exc:
            raise SimulationError(str(exc)) from exc
        finally:
            self.phase = "stopping"
            ticker.cancel()
            try:
                await self._stop()
            finally:
                for w in self.workers:
                    w.close()
        self.report["baseline_rss_mb"] = round(base.rss_mb, 1)
        self.report["errors"] = [d.error for d in self.devices if d.error][:20]
        return self.report

    async def _stop(self) -> None:
        """Every worker stops its agents (in waves of ``STOP_WAVE``; an agent not stopped 120 s
        after being asked is reported with where it waits) and then exits."""
        replies = await asyncio.gather(*(w.call("stop", 120.0, STOP_WAVE) for w in self.workers),
                                       return_exceptions=True)
        by_index = {d.index: d for d in self.devices}
        stuck: list[dict[str, Any]] = []
        for w, reply in zip(self.workers, replies, strict=True):
            if isinstance(reply, BaseException):
                log.error("agent worker did not stop cleanly", extra={"worker": w.number, "error": str(reply)})
                continue
            for i, err in reply["errors"].items():
                by_index[i].error = by_index[i].error or err
            stuck.extend({"worker": w.number, **t} for t in reply["stuck_tasks"])
        if stuck:
            self.report["stuck_tasks"] = stuck

    async def _refresh(self) -> None:
        """Ask every worker for its agents' state (a round trip per worker)."""
        replies = await asyncio.gather(*(w.call("status") for w in self.workers))
        by_index = {d.index: d for d in self.devices}
        for states in replies:
            for i, st in states.items():
                by_index[i].state = st

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.opts.progress_s)
            await self._refresh()
            print(self.progress.line(self.phase, self.devices, self.opts.devices), file=self.out, flush=True)

    async def _wait(self, what: str, done: Any, timeout_s: float) -> float:
        """Refresh the view and poll ``done()`` every ``POLL_S``; the seconds it took, or
        SimulationError naming ``what``."""
        t0 = time.monotonic()
        await self._refresh()
        while not done():
            if time.monotonic() - t0 > timeout_s:
                raise SimulationError(f"{what} did not happen within {timeout_s:.0f}s")
            await asyncio.sleep(POLL_S)
            await self._refresh()
        return time.monotonic() - t0

    # --- 1. cold start ----------------------------------------------------------------------------
    async def _cold_start(self) -> None:
        self.phase = "cold-start"
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs awscrt threads
        with concurrent.futures.ProcessPoolExecutor(self.opts.provision_parallel, mp_context=ctx) as pool:
            await asyncio.gather(*(self._start(d, loop, pool) for d in self.devices))
        provisioned_s = time.monotonic() - t0
        ok = [d for d in self.devices if d.started]
        self.report["provisioned"] = len(ok)
        times = [d.provision_s for d in ok if d.provision_s is not None]
        connected_s = None
        if ok:
            try:
                connected_s = provisioned_s + await self._wait(
                    "every provisioned gateway connected", lambda: all(d.connected for d in ok), self.opts.timeout_s)
            except SimulationError as exc:
                self.report["scenarios"]["cold-start-error"] = str(exc)
        self.report["scenarios"]["cold-start"] = {
            "provisioned": len(ok), "failed": len(self.devices) - len(ok),
            "provisioning_per_s": round(len(ok) / provisioned_s, 2) if provisioned_s else None,
            "provision_p50_s": _r(percentile(times, 50)), "provision_p95_s": _r(percentile(times, 95)),
            "provision_max_s": _r(max(times) if times else None),
            "all_provisioned_s": round(provisioned_s, 2), "all_connected_s": _r(connected_s),
            "parallel": self.opts.provision_parallel,
        }

    async def _start(self, d: DeviceView, loop: asyncio.AbstractEventLoop,
                     pool: concurrent.futures.Executor) -> None:
        """Provision in ``pool`` (processes: key generation, TLS set-up and the claim exchange hold
        the GIL long enough to starve a loop), then have the gateway's worker start its agent."""
        try:
            d.provision_s = await loop.run_in_executor(pool, provision_identity, str(d.config_path))
        except (IdentitySetupError, cfg.ConfigError, OSError) as exc:
            d.error = f"provisioning: {exc}"
            log.error("gateway not provisioned", extra={"serial": d.profile.serial, "error": str(exc)})
            return
        reply = await d.worker.call("start", d.index, d.profile, str(d.config_path))
        d.thing, d.error = reply["thing"], reply["error"]
        d.started = d.error is None

    # --- 2. steady state ------------------------------------------------------------------------
    async def _steady(self) -> None:
        self.phase = "steady"
        live = [d for d in self.devices if d.started]
        publishing_s = await self._wait("every gateway publishing", lambda: all(d.acked > 0 for d in live),
                                        self.opts.batch_max_age_s * 2 + 60)
        broker_pid = self._broker_pid()
        await self._refresh()
        p0 = sum(d.produced for d in live)
        a0, w0, b0, e0 = self._costs(broker_pid)
        await asyncio.sleep(self.opts.duration_s)
        await self._refresh()
        p1 = sum(d.produced for d in live)
        a1, w1, b1, e1 = self._costs(broker_pid)
        n = max(1, len(live))
        wall = max(1e-9, a1.wall - a0.wall)
        # The agents are the workers, summed; this process holds the in-process emulator's
        # services and telemetry recorder (the cloud side, on its emulator-* threads) and the
        # simulator's own view and scenarios: reported apart, not charged to the gateways.
        worker_cpu = [cpu_percent(x, y) for x, y in zip(w0, w1, strict=True)]
        agent_cpu = sum(worker_cpu)
        agent_rss = sum(w.rss_mb for w in w1)
        process_cpu = cpu_percent(a0, a1)
        emulator_cpu = 100.0 * (e1 - e0) / wall
        self.report["cpu_percent_per_device"] = round(agent_cpu / n, 4)
        self.report["rss_mb_per_device"] = round(agent_rss / n, 3)
        steady: dict[str, Any] = {
            "window_s": round(wall, 1), "all_publishing_after_s": round(publishing_s, 1),
            "readings_per_s": round((p1 - p0) / wall, 1),
            "readings_per_s_expected": len(live) * READINGS_PER_GATEWAY_S,
            "agent_workers": len(self.workers), "agent_worker_cpu_percent": [round(c, 2) for c in worker_cpu],
            "agent_cpu_percent": round(agent_cpu, 2), "agent_process_rss_mb": round(agent_rss, 1),
            "simulator_process_cpu_percent": round(process_cpu, 2), "simulator_process_rss_mb": round(a1.rss_mb, 1),
            "emulator_threads_cpu_percent": round(emulator_cpu, 2),
            # CPU per reading is what a starved run (fewer readings than the fleet should make:
            # a loaded machine, or more gateways than the workers can drive) still measures right.
            "agent_cpu_us_per_reading": round(agent_cpu / 100 * 1e6 / max(1.0, (p1 - p0) / wall), 1),
        }
        if b0 is not None and b1 is not None:
            broker_cpu = cpu_percent(b0, b1)
            steady.update(broker_cpu_percent=round(broker_cpu, 2), broker_rss_mb=round(b1.rss_mb, 1))
            self.report["broker_cpu_percent_per_device"] = round(broker_cpu / n, 4)
            self.report["broker_rss_mb_per_device"] = round(b1.rss_mb / n, 3)
        self.report["scenarios"]["steady"] = steady

    def _costs(self, broker_pid: int | None) -> tuple[Sample, list[Sample], Sample | None, float]:
        """This process, each agent worker, mosquitto, and the emulator threads' CPU seconds."""
        return (sample(), [sample(w.pid) for w in self.workers], sample(broker_pid) if broker_pid else None,
                threads_cpu_s(EMULATOR_THREADS))

    def _broker_pid(self) -> int | None:
        broker = getattr(self.emu, "broker", None)
        proc = getattr(broker, "_proc", None)
        return int(proc.pid) if proc is not None else None

    # --- 3. broker restart ------------------------------------------------------------------------
    async def _broker_restart(self) -> None:
        self.phase = "broker-restart"
        live = [d for d in self.devices if d.started]
        before = {id(d): d.last_connected_wall() for d in live}
        # The emulator keeps devices out until its recorder and services are back: "back" is when
        # the broker admits devices again.
        await asyncio.to_thread(self.emu.restart_broker, self.opts.outage_s)
        back = time.time()

        def reconnected(d: DeviceView) -> bool:
            t = d.last_connected_wall()
            return d.connected and t is not None and t != before[id(d)]

        bound_s = self.opts.max_reconnect_delay_ms / 1000
        try:
            await self._wait("every gateway reconnected", lambda: all(reconnected(d) for d in live), bound_s * 3 + 60)
        except SimulationError as exc:
            self.report["scenarios"]["broker-restart-error"] = str(exc)
        delays = [max(0.0, (d.last_connected_wall() or back) - back) for d in live if reconnected(d)]
        first_second = sum(x < 1.0 for x in delays)
        self.report["reconnect_p50_s"] = _r(percentile(delays, 50))
        self.report["reconnect_p95_s"] = _r(percentile(delays, 95))
        self.report["scenarios"]["broker-restart"] = {
            "outage_s": self.opts.outage_s, "reconnected": len(delays), "of": len(live),
            "reconnect_p50_s": _r(percentile(delays, 50)), "reconnect_p95_s": _r(percentile(delays, 95)),
            "reconnect_max_s": _r(max(delays) if delays else None),
            "first_second_share": round(first_second / max(1, len(live)), 3),
            "backoff_bound_s": bound_s,
            "p95_within_bound": (percentile(delays, 95) or 0) <= bound_s,
        }

    # --- 4. rollout -------------------------------------------------------------------------------
    async def _rollout(self) -> None:
        from emulator.admin import Admin

        self.phase = "rollout"
        assert self.opts.emulator_dir is not None
        admin = Admin(self.opts.emulator_dir)
        n = sum(d.started for d in self.devices)
        min_executed = max(2, n // 20)
        document = {"action": "config-update",
                    "params": {"patch": {"sensors": {CURRENT_SENSORS[0]: {"enabled": True, "interval_s": 1.0}}}}}
        job = await asyncio.to_thread(
            admin.job_create, document, None, f"fleet-rollout-{int(time.time())}", None,
            thing_groups=[FLEET_GROUP], rollout={"maximumPerMinute": self.opts.rollout_per_minute},
            abort={"criteriaList": [{"failureType": "ALL", "action": "CANCEL",
                                     "thresholdPercentage": self.opts.abort_threshold_percent,
                                     "minNumberOfExecutedThings": min_executed}]})
        job_id = job["jobId"]
        t0 = time.monotonic()
        state: dict[str, Any] = {"doc": job}

        async def settled() -> bool:
            doc = await asyncio.to_thread(admin.job_describe, job_id)
            state["doc"] = doc
            counts = doc["executionCounts"]
            return doc["status"] != "IN_PROGRESS" and not counts.get("IN_PROGRESS") and not counts.get("QUEUED")

        limit = n / self.opts.rollout_per_minute * 60 + 120
        while not await settled():
            if time.monotonic() - t0 > limit:
                break
            await asyncio.sleep(0.5)
        doc = state["doc"]
        counts = doc["executionCounts"]
        legacy = sum(d.profile.legacy for d in self.devices if d.started)
        self.report["scenarios"]["rollout"] = {
            "job_id": job_id, "status": doc["status"], "reason_code": doc.get("reasonCode"),
            "targets": len(doc["targets"]), "notified": doc.get("notified"), "execution_counts": counts,
            "legacy_devices": legacy, "rate_per_minute": self.opts.rollout_per_minute,
            "abort_threshold_percent": self.opts.abort_threshold_percent, "abort_min_executed": min_executed,
            "aborted": doc.get("reasonCode") == "AbortThresholdReached",
            "good_devices_failed": counts.get("FAILED", 0),
            "seconds": round(time.monotonic() - t0, 1),
        }

    # --- 5. completeness --------------------------------------------------------------------------
    async def _completeness(self) -> None:
        self.phase = "completeness"
        live = [d for d in self.devices if d.started]
        by_index = {d.index: d for d in live}
        for committed_by_index in await asyncio.gather(*(w.call("drain", 0.1) for w in self.workers)):
            for i, seq in committed_by_index.items():
                by_index[i].committed = seq
        try:
            await self._wait("every spool empty", lambda: all(d.spooled() == 0 for d in live), 120 + len(live) * 0.3)
        except SimulationError as exc:
            self.report["scenarios"]["completeness-error"] = str(exc)
        committed = sum(d.committed for d in live)
        out: dict[str, Any] = {"source": "recorder" if self.recorder is not None else "puback"}
        # Lost = committed, not received, and no longer in the spool. A reading still spooled when
        # the drain timed out (a starved machine) is late, not lost: it is durable and goes out on
        # the gateway's next connection; it is counted in left_in_spools.
        lost = spooled = 0
        if self.recorder is not None:
            waiting_by_index: dict[int, list[int]] = {}
            for seqs in await asyncio.gather(*(w.call("spooled") for w in self.workers)):
                waiting_by_index.update(seqs)
            await asyncio.to_thread(self.recorder.flush, 30.0)
            received = duplicates = 0
            with_gaps: dict[str, Any] = {}
            for d in live:
                assert d.thing is not None
                got = {s for s in await asyncio.to_thread(self.recorder.received, d.thing) if 1 <= s <= d.committed}
                waiting = set(waiting_by_index.get(d.index, ())) - got
                missing = set(range(1, d.committed + 1)) - got - waiting
                received += len(got)
                spooled += len(waiting)
                lost += len(missing)
                duplicates += await asyncio.to_thread(self.recorder.duplicates, d.thing)
                if missing:
                    with_gaps[d.thing] = runs(sorted(missing))[:5]
            out.update(devices_with_gaps=len(with_gaps), gaps=dict(list(with_gaps.items())[:10]),
                       duplicates=duplicates)
        else:
            received = sum(min(d.acked, d.committed) for d in live)
            spooled = sum(d.spooled() for d in live)
            lost = max(0, committed - received - spooled)
        self.report["readings_committed"] = committed
        self.report["readings_received"] = received
        self.report["readings_lost"] = lost
        out.update(committed=committed, received=received, lost=lost, left_in_spools=spooled)
        self.report["scenarios"]["completeness"] = out


def opts_fds(devices: int) -> int:
    return 64 + devices * 12




def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def render_text(report: dict[str, Any]) -> str:
    """The final report for people: one line per scenario."""
    r = report
    left = r["scenarios"].get("completeness", {}).get("left_in_spools", 0)
    lines = [f"fleet: {r['devices']} gateways, provisioned {r.get('provisioned', 0)}, publishing "
             f"{r.get('publishing', 0)}",
             f"readings: committed {r.get('readings_committed', 0):,}, received {r.get('readings_received', 0):,}, "
             f"still spooled {left:,}, lost {r.get('readings_lost', 0):,}"]
    sc = r["scenarios"]
    if c := sc.get("cold-start"):
        lines.append(f"cold start: {c['provisioned']} provisioned at {c['provisioning_per_s']}/s, "
                     f"p50 {c['provision_p50_s']} s, p95 {c['provision_p95_s']} s; all connected after "
                     f"{c['all_connected_s']} s")
    if s := sc.get("steady"):
        lines.append(f"steady: {s['readings_per_s']:,} readings/s; agent {r['cpu_percent_per_device']} % core and "
                     f"{r['rss_mb_per_device']} MB per gateway; broker "
                     f"{r.get('broker_cpu_percent_per_device')} % core and {r.get('broker_rss_mb_per_device')} MB "
                     "per gateway")
    if b := sc.get("broker-restart"):
        lines.append(f"broker restart ({b['outage_s']} s down): {b['reconnected']}/{b['of']} back, p50 "
                     f"{b['reconnect_p50_s']} s, p95 {b['reconnect_p95_s']} s (bound {b['backoff_bound_s']} s), "
                     f"{b['first_second_share']:.0%} in the first second")
    if ro := sc.get("rollout"):
        lines.append(f"rollout: job {ro['status']}" + (f" ({ro['reason_code']})" if ro["reason_code"] else "")
                     + f", notified {ro['notified']}/{ro['targets']}, executions {ro['execution_counts']}")
    if cm := sc.get("completeness"):
        lines.append(f"completeness ({cm['source']}): {cm.get('devices_with_gaps', 0)} gateways with gaps, "
                     f"{cm['left_in_spools']} readings left in spools")
    for key in ("cold-start-error", "broker-restart-error", "completeness-error"):
        if key in sc:
            lines.append(f"{key}: {sc[key]}")
    return "\n".join(lines)
