"""Live configuration through a named Device Shadow, with AWS's IotShadowClientV2 on the agent's
one MQTT5 client.

- ``desired.config`` (owned by the cloud; the agent never writes ``desired``) is the remote layer
  (agent/remote/managed.py says which keys); ``reported`` (owned by the device) carries
  ``config`` (the managed view of what is applied), ``config_errors`` ([{path, reason}]),
  ``desired_version`` (the shadow version last reconciled) and ``status``.
- On every connect, and whenever the delta subscription is (re-)established, a fresh get
  reconciles (deltas published while offline or before the subscription was back are lost with a
  clean session); then deltas are followed live.
- Versions: a delta at or below the version already reconciled is stale and ignored. A delta and
  the update/accepted of our own report may arrive in either order: only deltas and gets advance
  the reconciled version, so neither can hide the other.
- Reports: config results at once; routine status drift at most once per
  ``remote.reported_min_interval_s`` and only when it changed (shadow updates are billed).

awscrt calls the listeners on its own threads: they only hand the event to the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from awscrt import mqtt_request_response
from awscrt.exceptions import AwsCrtError
from awsiot import V2ServiceException, iotshadow

from agent.merge_patch import merge_patch
from agent.remote.layer import ConfigErrors, ConfigLayer
from agent.remote.service_client import call, client_options, describe_error, stream_options
from agent.remote.shadow.reported import ReportGate
from agent.supervise import Restarts, supervised

if TYPE_CHECKING:
    from agent.connection import Connection
    from agent.remote.shadow.status_source import StatusSource

log = logging.getLogger(__name__)

RETRY_MIN_S, RETRY_MAX_S = 1.0, 60.0
TICK_S = 1.0


def null_removed(old: Any, new: Any) -> Any:
    """``new`` plus explicit nulls for keys of ``old`` that ``new`` lacks: a shadow update merges,
    so a key reported once stays until it is sent as null."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    out = {k: null_removed(old.get(k), v) for k, v in new.items()}
    for k in old:
        if k not in new:
            out[k] = None
    return out


def errors_doc(errors: ConfigErrors) -> list[dict[str, str]]:
    return [{"path": p[:256], "reason": r[:256]} for p, r in errors[:20]]


class ShadowSync:
    def __init__(
        self,
        conn: Connection,
        thing: str,
        shadow_name: str,
        layer: ConfigLayer,
        status: StatusSource,
        *,
        min_interval_s: float = 60.0,
        request_timeout_s: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.conn = conn
        self.thing = thing
        self.name = shadow_name
        self.layer = layer
        self.status_source = status
        self.timeout_s = request_timeout_s
        self.gate = ReportGate(min_interval_s, clock)
        self.desired_version: int | None = None  # last version reconciled from a get or a delta
        self.last_reported_version: int | None = None
        self.last_sync_wall: float | None = None
        self.reports = 0
        self.deltas = 0
        self.stale_deltas = 0
        self.last_error: str | None = None
        self.restarts = Restarts()
        self._extra_errors: ConfigErrors = []
        self._sent_config: dict[str, Any] | None = None
        self._sent_errors: list[dict[str, str]] | None = None
        self._force_report = False
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._sync_queued = False
        self._retry_s = RETRY_MIN_S
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._stream: Any = None
        opts = client_options(request_timeout_s)
        self.client = iotshadow.IotShadowClientV2(conn.client, opts)

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._stream = self.client.create_named_shadow_delta_updated_stream(
            iotshadow.NamedShadowDeltaUpdatedSubscriptionRequest(thing_name=self.thing, shadow_name=self.name),
            stream_options(self._loop, self._on_delta, self._on_subscription, self._on_bad_event),
        )
        self._stream.open()
        self.conn.on_connect(lambda _present: self.request_sync())
        self._task = self._loop.create_task(supervised("shadow", self._run, self.restarts), name="shadow")

    async def stop(self) -> None:
        # Never cancel or await the caller's own task (an apply this loop started that rebuilds
        # the connection stops the features): it would wait for itself forever. That loop ends
        # by itself once the step that stopped it is done.
        self._stopped = True
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._stream = None  # a streaming operation closes when released

    @property
    def running(self) -> bool:
        """Whether the worker loop is alive: False once stopped (a rebuilt connection gets a new
        ShadowSync, and the old one must not go on ticking on the old connection)."""
        return self._task is not None and not self._task.done()

    # --- events (on the loop) -------------------------------------------------------------------
    def request_sync(self) -> None:
        self.gate.reset()
        if not self._sync_queued:
            self._sync_queued = True
            self._queue.put_nowait(("sync", None))

    def _on_subscription(self, ev: mqtt_request_response.SubscriptionStatusEvent) -> None:
        kind = ev.type
        if kind == mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_ESTABLISHED:
            self.request_sync()
        elif kind == mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_HALTED:
            self.last_error = f"delta subscription halted: {ev.error}"
            log.error("shadow delta subscription halted (check the IoT policy)", extra={"error": str(ev.error)})

    def _on_bad_event(self, ev: Any) -> None:
        log.warning("undecodable shadow delta ignored", extra={"error": str(getattr(ev, "cause", ev))[:200]})

    def _on_delta(self, ev: iotshadow.ShadowDeltaUpdatedEvent) -> None:
        version = ev.version if isinstance(ev.version, int) else None
        if version is not None and self.desired_version is not None and version <= self.desired_version:
            self.stale_deltas += 1
            log.debug("stale shadow delta ignored", extra={"version": version, "reconciled": self.desired_version})
            return
        self._queue.put_nowait(("delta", ev))

    # --- the worker -----------------------------------------------------------------------------
    async def _run(self) -> None:
        if self.conn.connected.is_set():
            self.request_sync()  # (re)started: the event that crashed the last run is gone
        while not self._stopped:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation (stop).
                async with asyncio.timeout(TICK_S):
                    kind, arg = await self._queue.get()
            except TimeoutError:
                kind, arg = "tick", None
            try:
                if kind == "sync":
                    self._sync_queued = False
                    await self._sync()
                elif kind == "delta":
                    await self._delta(arg)
                await self._maybe_report()
            except (V2ServiceException, AwsCrtError, TimeoutError, concurrent.futures.CancelledError) as exc:
                self.last_error = describe_error(exc)
                log.warning("shadow request failed", extra={"op": kind, "error": self.last_error})
                if kind in ("sync", "delta"):
                    self._retry_sync()

    def _retry_sync(self) -> None:
        delay, self._retry_s = self._retry_s, min(RETRY_MAX_S, self._retry_s * 2)
        self._loop.call_later(delay, self._retry_if_connected)

    def _retry_if_connected(self) -> None:
        if self.conn.connected.is_set():
            self.request_sync()

    async def _sync(self) -> None:
        if not self.conn.connected.is_set():
            return  # on_connect asks again
        req = iotshadow.GetNamedShadowRequest(thing_name=self.thing, shadow_name=self.name)
        try:
            resp = await call(self.client.get_named_shadow(req), self.timeout_s)
        except V2ServiceException as exc:
            err = exc.modeled_error
            if isinstance(err, iotshadow.V2ErrorResponse) and err.code == 404:
                desired: Any = {}
                version = None
            else:
                raise
        else:
            desired = (resp.state.desired if resp.state is not None else None) or {}
            version = resp.version
        self._retry_s = RETRY_MIN_S
        self.last_sync_wall = time.time()
        await self._reconcile(desired, version, full=True)

    async def _delta(self, ev: iotshadow.ShadowDeltaUpdatedEvent) -> None:
        version = ev.version if isinstance(ev.version, int) else None
        if version is not None and self.desired_version is not None and version <= self.desired_version:
            self.stale_deltas += 1  # a get reconciled past it while it waited
            return
        self.deltas += 1
        await self._reconcile(ev.state or {}, version, full=False)

    async def _reconcile(self, state: Any, version: int | None, *, full: bool) -> None:
        """``state``: the whole desired (get) or the delta's differing fields."""
        if version is not None:
            self.desired_version = version
        extra: ConfigErrors = []
        if not isinstance(state, dict):
            extra.append(("<desired>", "must be an object"))
            state = {}
        for key in state:
            if key != "config":
                extra.append((str(key)[:128], "unknown desired key; only 'config' is read by the agent"))
        doc = state.get("config", {} if full else None)
        errors: ConfigErrors = []
        if doc is not None:
            if full:
                errors = await self.layer.set_shadow(doc, version)
            elif isinstance(doc, dict):
                merged = merge_patch(self.layer.layers["shadow"], doc)
                errors = await self.layer.set_shadow(merged, version)
            else:
                errors = [("config", "must be an object")]
        elif not full:
            errors = self.layer.errors
        self._extra_errors = extra
        if errors or extra:
            log.warning("shadow desired rejected (nothing changed)", extra={"errors": errors + extra})
        self._force_report = True

    async def _maybe_report(self) -> None:
        if not self.conn.connected.is_set():
            return
        config = self.layer.reported()
        errors = errors_doc(self.layer.errors + self._extra_errors)
        config_changed = config != self._sent_config or errors != self._sent_errors
        if not (self._force_report or config_changed or self.gate.elapsed()):
            return  # nothing can be due: skip building the status (1,000 agents did so every second)
        status = self.status_source.build()
        if not (self._force_report or config_changed or self.gate.due(status)):
            return
        reported: dict[str, Any] = {"status": status}
        if self._force_report or config_changed:
            reported["config"] = null_removed(self._sent_config, config)
            reported["config_errors"] = errors
            reported["desired_version"] = self.desired_version
        req = iotshadow.UpdateNamedShadowRequest(
            thing_name=self.thing, shadow_name=self.name, state=iotshadow.ShadowState(reported=reported)
        )
        resp = await call(self.client.update_named_shadow(req), self.timeout_s)
        self.last_reported_version = resp.version
        self.reports += 1
        self.gate.sent(status)
        if "config" in reported:
            self._sent_config, self._sent_errors, self._force_report = config, errors, False

    def status(self) -> dict[str, Any]:
        return {
            "shadow_name": self.name,
            "desired_version": self.desired_version,
            "reported_version": self.last_reported_version,
            "last_sync_ts": self.last_sync_wall,
            "reports": self.reports,
            "deltas": self.deltas,
            "stale_deltas": self.stale_deltas,
            "config_errors": errors_doc(self.layer.errors + self._extra_errors),
            "last_error": self.last_error,
            "restarts": self.restarts.count,
        }
