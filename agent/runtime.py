"""The daemon: wires sampler -> spool -> uplink on one asyncio loop, serves status, talks to
systemd, owns the one apply path for configuration changes (file at start, SIGHUP, shadow deltas
and config-update jobs), and is the one place that decides which features (agent/feature.py) run.

Start-up never waits for the network: READY=1 is sent once sensors are sampling into the spool, so
a gateway that boots with no 5G signal runs, spools, and drains when the link comes up."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import agent
from agent import config as cfg
from agent import heap, logs
from agent.alarms.control import ControlServer
from agent.alarms.engine import AckError
from agent.alarms.feature import AlarmFeature
from agent.clock import ClockSync
from agent.config import ConfigRejected
from agent.connection import Connection
from agent.feature import Feature, Ports
from agent.identity_setup import IdentitySetupError, prepare_identity
from agent.notify import Notifier, WatchdogGate
from agent.remote.jobs import JobsFeature
from agent.remote.jobs.actions import ActionEnv
from agent.remote.layer import ConfigLayer
from agent.remote.shadow import ShadowFeature
from agent.sampler import Sampler
from agent.spool import Reading, Spool, SpoolError
from agent.status import StatusServer, summary_line
from agent.status_model import AgentInfo, AgentStatus, LinkStatus, SpoolStatus, UplinkStatus
from agent.uplink import Uplink

log = logging.getLogger(__name__)

# Changing these needs a restart: they decide which files and identity the process holds open.
RESTART_ONLY = ("state_dir", "spool.path", "device.thing_name", "alarms.outputs", "alarms.keep_sent_events")
STOP_BUDGET_S = 4.0  # SIGTERM must finish within 5 s
# The C heap's freed pages go back (agent/heap.py) once start-up is over, this long after each
# connect (the TLS handshake and the features' first round-trips, shadow get and jobs subscriptions,
# are done by then), and after an acknowledged batch (its encoding's working memory, about 1.3 MB
# for 60 s of 8 channels) at most every HEAP_TRIM_EVERY_S (a drain acknowledges up to 100 batches/s).
TRIM_AFTER_CONNECT_S = 3.0
HEAP_TRIM_EVERY_S = 30.0

__all__ = ["STOP_BUDGET_S", "Agent", "ConfigRejected", "load_config", "run"]


def _get(conf: cfg.AgentConfig, dotted: str) -> Any:
    node: Any = conf
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


class Agent:
    def __init__(
        self, conf: cfg.AgentConfig, config_path: Path | None = None, *, action_env: ActionEnv | None = None
    ) -> None:
        self.conf = conf
        self.config_path = config_path
        self.started_monotonic = time.monotonic()
        self.thing = conf.device.thing_name or ""
        self.spool = Spool(
            conf.spool_path,
            max_bytes=conf.spool.max_bytes,
            min_free_disk_bytes=conf.spool.min_free_disk_bytes,
            commit_interval_s=conf.spool.commit_interval_s,
            synchronous=conf.spool.synchronous,
        )
        self.clock = ClockSync(conf.clock.sync_source)
        self.alarms = AlarmFeature(
            conf.sensors, conf.events_path, site=conf.device.site_id, device=self.thing,
            clock_synced=lambda: self.clock.synced(), keep_sent=conf.alarms.keep_sent_events,
            outputs=conf.alarms.outputs, set_fast=self._set_fast,
        )
        self.control_server = ControlServer(conf.control_socket, self.alarms.acknowledge, AckError)
        self.sampler = Sampler(self._sink, self.clock, on_failure=self._sensor_failed)
        self.conn: Connection | None = None
        self.uplink: Uplink | None = None
        # The remote config layers over the file (shadow and config-update jobs share them).
        self.layer = ConfigLayer(conf, running=lambda: self.conf, apply=self.apply,
                                 spool_bytes=lambda: self.spool.stats().bytes)
        self.features: list[Feature] = self._features(action_env)
        self.notifier = Notifier.from_env()
        self.watchdog = WatchdogGate(self.notifier)
        self.status_server = StatusServer(conf.status_socket, lambda: self.status().as_dict())
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.reloads = 0
        self.last_reload_error: str | None = None
        self.running = asyncio.Event()  # set once READY=1 went out
        self.owns_process = True  # run(signals=False): one of many agents in the process
        self._heap_trimmed = float("-inf")  # monotonic time of the last heap.trim()

    # --- features --------------------------------------------------------------------------------
    def _features(self, action_env: ActionEnv | None) -> list[Feature]:
        """THE wiring: which features run on this device, from the config. ``[remote]`` is read
        once (changing it needs a restart). Add a feature here (docs/architecture.md)."""
        remote = self.conf.remote
        features: list[Feature] = [self.alarms]  # publishes alarm/leak events once a connection exists
        if remote.shadow_enabled:
            features.append(ShadowFeature(self.layer, remote))
        if remote.jobs_enabled:
            features.append(JobsFeature(self.layer, remote, action_env))
        return features

    def feature(self, name: str) -> Feature | None:
        return next((f for f in self.features if f.name == name), None)

    @property
    def loops(self) -> list[str]:
        """Names of the runtime's own loops now running beside the sensors and features (uplink,
        committer, and status only when systemd listens): what the idle-cost review checks."""
        return [t.get_name() for t in self._tasks if not t.done()]

    def _ports(self) -> Ports:
        return Ports(
            thing_name=self.thing,
            config=lambda: self.conf,
            apply=self.apply,
            status=self.status,
            connection=self.conn,
            calibrate=self.sampler.calibrate,
            request_stop=self.request_stop,
            acknowledge_alarm=self.alarms.acknowledge,
        )

    async def _start_features(self) -> None:
        ports = self._ports()
        for f in self.features:
            await f.start(ports)

    async def _stop_features(self) -> None:
        for f in reversed(self.features):
            await f.stop()

    # --- data path -------------------------------------------------------------------------------
    def _sink(self, items: list[Reading]) -> None:
        readings = self.alarms.process(items, self.spool.append)
        if any(r.alarm for r in readings):
            # An alarm is committed and offered to the uplink at once, not at the next group commit.
            self.spool.commit()
            if self.uplink:
                self.uplink.notify()

    def _set_fast(self, sensor_id: str, on: bool) -> None:
        """A leak event started (or ended): read that sensor at its leak.fast_interval_s meanwhile."""
        conf = next((s for s in self.conf.sensors if s.id == sensor_id), None)
        fast = conf.leak.fast_interval_s if conf is not None and conf.leak is not None else None
        self.sampler.set_interval(sensor_id, fast if on else None)

    def _sensor_failed(self, sensor_id: str, reason: str, ts_ms: int) -> None:
        self.alarms.failure(sensor_id, reason, ts_ms)

    async def _committer(self) -> None:
        # Wakes at most once a second (an idle agent should cost ~0 CPU, and the watchdog needs a
        # beat well within WatchdogSec/2). A batch is committed when it would otherwise be overdue
        # by the next tick, so no reading waits in RAM longer than commit_interval_s.
        while True:
            tick = min(1.0, self.conf.spool.commit_interval_s)
            if self.spool.commit_due(time.monotonic() + tick) and self.spool.commit() and self.uplink:
                self.uplink.notify()
            self.alarms.tick()
            self.watchdog.beat()
            await asyncio.sleep(tick)

    async def _status_loop(self) -> None:
        last = ""
        while True:
            line = summary_line(self.status())
            if line != last:
                self.notifier.status(line)
                last = line
            await asyncio.sleep(5)

    def _make_uplink(self) -> None:
        c = self.conf
        if not c.connection.endpoint:
            log.warning("connection.endpoint is empty: running offline, readings stay in the spool")
            return
        if not self.thing:
            raise ConfigRejected("device.thing_name is required when connection.endpoint is set")
        loop = asyncio.get_running_loop()
        self.conn = Connection(
            c.connection, c.connection.client_id or self.thing, loop, ack_timeout_s=c.uplink.ack_timeout_s
        )
        self.uplink = Uplink(self.spool, self.conn, c.uplink, self.thing, c.device.site_id,
                             on_acked=lambda: self._trim_heap(at_most_every_s=HEAP_TRIM_EVERY_S))
        self.conn.on_connect(self._trim_after_connect)
        self.conn.start()
        self._tasks.append(loop.create_task(self.uplink.run(), name="uplink"))

    def _trim_after_connect(self, _session_present: bool) -> None:
        asyncio.get_running_loop().call_later(TRIM_AFTER_CONNECT_S, self._trim_heap)

    def _trim_heap(self, *, at_most_every_s: float = 0.0) -> None:
        now = time.monotonic()
        if self.owns_process and now - self._heap_trimmed >= at_most_every_s:
            heap.trim()
            self._heap_trimmed = now

    # --- lifecycle -----------------------------------------------------------------------------
    async def run(self, *, signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or ``request_stop``). ``signals=False`` is for hosts that run
        many agents in one loop (the fleet simulator): the agent then leaves what belongs to the
        whole process alone, its signal handlers and its heap (a trim costs ~13 ms on a 500 MB heap,
        and such a host starts hundreds of agents)."""
        self.owns_process = signals
        loop = asyncio.get_running_loop()
        self.spool.open()
        self.alarms.open()
        for server, what in ((self.status_server, "status"), (self.control_server, "control")):
            try:
                await server.start()
            except OSError as exc:  # e.g. a state_dir path too long for a Unix socket: degrade, don't die
                log.error(f"{what} socket unavailable; the agent keeps sampling",
                          extra={"path": str(server.path), "error": str(exc)})
        await self.sampler.apply(self.conf.sensors)
        self._make_uplink()
        await self.layer.load_persisted()  # the persisted remote layers, offline too
        await self._start_features()
        self._tasks.append(loop.create_task(self._committer(), name="committer"))
        if self.notifier.enabled:  # STATUS= lines for systemd; nobody to read them otherwise
            self._tasks.append(loop.create_task(self._status_loop(), name="status"))
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        self.watchdog.beat()
        self.watchdog.start()
        self.notifier.ready(summary_line(self.status()))
        self.running.set()
        self._trim_heap()  # start-up's one-off allocations (config, validators, databases) are garbage now
        log.info(
            "agent running",
            extra={"version": agent.__version__, "thing": self.thing or "-", "sensors": len(self.sampler.tasks)},
        )
        await self._stop.wait()
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        """Commit everything and exit well within systemd's stop timeout."""
        self.notifier.stopping()
        log.info("stopping")
        deadline = time.monotonic() + STOP_BUDGET_S
        await self.sampler.stop()
        await self._stop_features()  # before the connection stops
        self.spool.commit()
        if self.uplink is not None:
            await self.uplink.stop(grace_s=max(0.1, min(1.5, deadline - time.monotonic() - 2)))
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            # Bounded: a task that ignores its cancellation must not hold the stop past systemd's
            # timeout (everything that matters is already committed).
            _, stuck = await asyncio.wait(self._tasks, timeout=max(0.5, deadline - time.monotonic()))
            for t in stuck:
                log.error("task did not stop when cancelled", extra={"task": t.get_name()})
        if self.conn is not None:
            await self.conn.stop()
        await self.status_server.stop()
        await self.control_server.stop()
        self.watchdog.stop()
        self.spool.close()
        self.alarms.close()
        log.info("stopped", extra={"spool_readings": self.spool.stats().readings})

    def request_stop(self) -> None:
        self._stop.set()

    # --- the one apply path ------------------------------------------------------------------------
    async def apply(self, new: cfg.AgentConfig) -> list[str]:
        """Apply a validated config live. Raises ConfigRejected (changing nothing) when a part that
        needs a restart differs. Returns what changed."""
        old = self.conf
        blocked = [k for k in RESTART_ONLY if _get(old, k) != _get(new, k)]
        if blocked:
            raise ConfigRejected(f"changing {', '.join(blocked)} requires a restart")
        changed: list[str] = []
        if new.logging != old.logging:
            logs.setup(new.logging.level, new.logging.format)
            changed.append("logging")
        if new.spool != old.spool:
            self.spool.reconfigure(
                max_bytes=new.spool.max_bytes,
                min_free_disk_bytes=new.spool.min_free_disk_bytes,
                commit_interval_s=new.spool.commit_interval_s,
            )
            changed.append("spool")
        if new.clock != old.clock:
            self.clock = ClockSync(new.clock.sync_source)
            self.sampler.clock = self.clock
            changed.append("clock")
        if new.sensors != old.sensors:
            await self.sampler.apply(new.sensors)
            self.alarms.apply(new.sensors)
            changed.append("sensors")
        self.conf = new
        if new.connection != old.connection or new.device != old.device or new.alarms != old.alarms:
            await self._restart_uplink()
            changed.append("connection")
        elif new.uplink != old.uplink and self.uplink is not None:
            self.uplink.reconfigure(new.uplink)
            changed.append("uplink")
        log.info("config applied", extra={"changed": ",".join(changed) or "nothing", "hash": new.digest()})
        return changed

    async def _restart_uplink(self) -> None:
        """A new connection: the features stop, the connection and uplink are rebuilt, and the
        features start again with ports naming the new connection."""
        await self._stop_features()
        if self.uplink is not None:
            await self.uplink.stop(grace_s=1.0)
        if self.conn is not None:
            await self.conn.stop()
        self._tasks = [t for t in self._tasks if t.get_name() != "uplink" or not t.cancel()]
        self.conn, self.uplink = None, None
        self._make_uplink()
        await self._start_features()

    async def reload(self) -> bool:
        """SIGHUP: re-read the file through the same validation; an invalid file changes nothing.
        Whatever happens, systemd hears READY=1 again: a unit left "reloading" blocks the next
        systemctl reload and hides the agent's state."""
        if self.config_path is None:
            return False
        self.notifier.reloading()
        ok = False
        try:
            new = load_config(self.config_path)
            new = self.layer.layer(new)  # the remote layers stay on top of the file
            await self.apply(new)
        except (cfg.ConfigError, ConfigRejected, IdentitySetupError) as exc:
            self.last_reload_error = str(exc)
            log.error("reload refused; the running configuration is unchanged", extra={"error": str(exc)})
        else:
            self.reloads += 1
            self.last_reload_error = None
            ok = True
        finally:
            self.notifier.ready(summary_line(self.status()))
        return ok

    # --- status ---------------------------------------------------------------------------------------
    def status(self) -> AgentStatus:
        now = time.time()
        st = self.spool.stats()
        link = None
        if self.conn is not None and self.uplink is not None:
            cs, us = self.conn.stats, self.uplink.stats
            link = LinkStatus(
                endpoint=self.conf.connection.endpoint,
                topic=self.uplink.topic,
                encoding=self.conf.uplink.encoding,
                connected=cs.connected,
                connects=cs.connects,
                reconnects=max(0, cs.connects - 1),
                connect_failures=cs.connect_failures,
                certificate_refused=cs.refused,
                # While the link is down its own reason (ping timeout, TLS error, ...) says more
                # than the uplink's "no PUBACK" that followed from it.
                last_error=(us.last_error or cs.last_error) if cs.connected else (cs.last_error or us.last_error),
                link=self.conn.link_status(),
                last_ack_ts=us.last_ack_wall,
                batches_acked=us.batches_acked,
                readings_acked=us.readings_acked,
                bytes_acked=us.bytes_acked,
                failures=us.failures,
                splits=us.splits,
                inflight=us.inflight,
                publishes_per_s=round(self.conn.publish_rate(), 2),
            )
        features: dict[str, Any] = {"remote": {**self.layer.status(), "shadow": None, "jobs": None}}
        for f in self.features:
            *parents, leaf = f.status_key.split(".")
            node = features
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = f.status()
        return AgentStatus(
            agent=AgentInfo(
                version=agent.__version__,
                pid=os.getpid(),
                thing_name=self.thing or None,
                uptime_s=round(time.monotonic() - self.started_monotonic, 1),
                config_hash=self.conf.digest(),
                reloads=self.reloads,
                last_reload_error=self.last_reload_error,
            ),
            clock_synced=self.clock.synced(),
            spool=SpoolStatus(
                path=str(self.conf.spool_path),
                readings=st.readings,
                bytes=st.bytes,
                oldest_seq=st.oldest_seq,
                oldest_ts_ms=st.oldest_ts_ms,
                oldest_age_s=None if st.oldest_ts_ms is None else round(now - st.oldest_ts_ms / 1000, 1),
                next_seq=st.next_seq,
                uncommitted=st.pending_uncommitted,
                evicted_routine=st.evicted_routine,
                evicted_alarm=st.evicted_alarm,
                quarantined=st.quarantined,
                epoch=self.spool.epoch,
                seq_skipped=st.seq_skipped,
            ),
            uplink=UplinkStatus(enabled=self.uplink is not None, link=link),
            sensors=self.sampler.health(),
            features=features,
        )


def load_config(config_path: Path, *, heartbeat: Any = None, stop: threading.Event | None = None) -> cfg.AgentConfig:
    """The file (plus environment), validated, then completed from the device identity: provisioning
    first when the gateway has none yet. Used at start and by every reload."""
    conf = cfg.load(config_path)
    return prepare_identity(conf, heartbeat=heartbeat, stop=stop)


def run(config_path: Path) -> int:
    conf = cfg.load(config_path)
    logs.setup(conf.logging.level, conf.logging.format)
    notifier = Notifier.from_env()
    stop = threading.Event()

    def heartbeat(status: str) -> None:
        # Provisioning may wait for the network for a long time: keep systemd informed and patient.
        notifier.status(status)
        notifier.extend_timeout(120)
        notifier.watchdog()

    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        conf = prepare_identity(conf, heartbeat=heartbeat, stop=stop)
    except IdentitySetupError as exc:
        log.error("cannot start: identity", extra={"error": str(exc)})
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop.is_set():
        return 0
    daemon = Agent(conf, config_path)
    try:
        return asyncio.run(daemon.run())
    except ConfigRejected as exc:
        log.error("cannot start", extra={"error": str(exc)})
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    except SpoolError as exc:
        log.error("cannot start: spool", extra={"error": str(exc)})
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
