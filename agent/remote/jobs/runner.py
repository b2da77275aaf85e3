"""IoT Jobs with AWS's IotJobsClientV2 on the agent's one MQTT5 client: one job at a time, only
allowlisted actions (agent/remote/jobs/actions), each with a timeout, cancellation honoured.

Flow on every connect: finish what the journal says (a job that restarted the agent or the
device), then start-next; the notify-next stream wakes the runner for new jobs. While a job runs,
a notify-next that no longer names it means it was canceled or removed in the cloud: the runner
checks with describe and cancels the action (no final status: the execution is already
terminal). A progress update refused as an invalid transition means the same.

Statuses: an unparseable document, an unknown action, invalid params, or an action refused here
(reboot disabled, sensor without calibration) → REJECTED with the reason; an action that ran and
failed or timed out → FAILED; otherwise SUCCEEDED. statusDetails stay within IoT Core's limits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from awscrt import mqtt_request_response
from awscrt.exceptions import AwsCrtError
from awsiot import V2ServiceException, iotjobs

from agent.config import RemoteConfig
from agent.remote.jobs.actions import Action, ActionContext, Failed, Rejected, Result, details, parse
from agent.remote.jobs.journal import Entry, Journal
from agent.remote.service_client import call, client_options, describe_error, stream_options
from agent.supervise import Restarts, supervised

if TYPE_CHECKING:
    from agent.connection import Connection

log = logging.getLogger(__name__)

S = iotjobs.JobStatus
TERMINAL = {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.REJECTED, S.REMOVED, S.CANCELED}
GONE_CODES = {"TerminalStateReached", "ResourceNotFound", "InvalidStateTransition"}
RETRY_MIN_S, RETRY_MAX_S = 1.0, 60.0


class JobGone(Exception):
    """The execution is terminal or gone in the cloud (canceled, removed, timed out)."""


class JobRunner:
    def __init__(
        self,
        conn: Connection,
        thing: str,
        actions: Mapping[str, Action],
        ctx: ActionContext,
        journal: Journal,
        remote: RemoteConfig,
    ) -> None:
        self.conn = conn
        self.thing = thing
        self.actions = actions
        self.ctx = ctx
        self.journal = journal
        self.remote = remote
        self.timeout_s = remote.request_timeout_s
        opts = client_options(remote.request_timeout_s)
        self.client = iotjobs.IotJobsClientV2(conn.client, opts)
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._next_queued = False
        self._task: asyncio.Task[None] | None = None
        self._current: str | None = None
        self._current_task: asyncio.Task[None] | None = None
        self._cancel_reason: str | None = None
        self._retry_s = RETRY_MIN_S
        self._stream: Any = None
        self.history: list[dict[str, str]] = []  # last outcomes, for status
        self.last_error: str | None = None
        self.restarts = Restarts()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._stream = self.client.create_next_job_execution_changed_stream(
            iotjobs.NextJobExecutionChangedSubscriptionRequest(thing_name=self.thing),
            stream_options(self._loop, self._on_notify_next, self._on_subscription, self._on_bad_event),
        )
        self._stream.open()
        self.conn.on_connect(lambda _present: self.request_next())
        self._task = self._loop.create_task(supervised("jobs", self._run, self.restarts), name="jobs")

    async def stop(self) -> None:
        """Shutdown: the running action is cancelled; its journal entry stays, so the next process
        reports it (SUCCEEDED for a requested restart, FAILED for an interrupted action)."""
        # Not the caller's own task (a config-update whose apply rebuilds the connection stops
        # the features from inside its job): awaiting itself would never end.
        me = asyncio.current_task()
        tasks = [t for t in (self._current_task, self._task) if t is not None and t is not me]
        self._cancel_reason = "shutdown"
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._stream = None

    @property
    def running(self) -> bool:
        """Whether the worker loop is alive: False once stopped (a job that outlives the stop, the
        one whose apply rebuilt the connection, still finishes and reports)."""
        return self._task is not None and not self._task.done()

    # --- events ----------------------------------------------------------------------------------
    def request_next(self) -> None:
        if not self._next_queued:
            self._next_queued = True
            self._queue.put_nowait(("next", None))

    def _on_subscription(self, ev: mqtt_request_response.SubscriptionStatusEvent) -> None:
        if ev.type == mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_ESTABLISHED:
            self.request_next()
        elif ev.type == mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_HALTED:
            self.last_error = f"notify-next subscription halted: {ev.error}"
            log.error("jobs notify-next subscription halted (check the IoT policy)", extra={"error": str(ev.error)})

    def _on_bad_event(self, ev: Any) -> None:
        log.warning("undecodable jobs notification ignored", extra={"error": str(getattr(ev, "cause", ev))[:200]})

    def _on_notify_next(self, ev: iotjobs.NextJobExecutionChangedEvent) -> None:
        nxt = ev.execution.job_id if ev.execution is not None else None
        if self._current is not None and nxt != self._current:
            self._queue.put_nowait(("check", self._current))
        elif self._current is None:
            self.request_next()

    # --- worker --------------------------------------------------------------------------------------
    async def _run(self) -> None:
        if self.conn.connected.is_set():
            self.request_next()  # (re)started: the request that crashed the last run is gone
        while True:
            kind, arg = await self._queue.get()
            try:
                if kind == "next":
                    self._next_queued = False
                    await self._next()
                elif kind == "check":
                    await self._check(arg)
            except (V2ServiceException, AwsCrtError, TimeoutError, concurrent.futures.CancelledError) as exc:
                self.last_error = describe_error(exc)
                log.warning("jobs request failed", extra={"op": kind, "error": self.last_error})
                if kind == "next":
                    delay, self._retry_s = self._retry_s, min(RETRY_MAX_S, self._retry_s * 2)
                    self._loop.call_later(delay, self._retry)

    def _retry(self) -> None:
        if self.conn.connected.is_set() and self._current is None:
            self.request_next()

    async def _next(self) -> None:
        if self._current is not None or not self.conn.connected.is_set():
            return
        if not await self._finish_journal():
            return
        resp = await call(self.client.start_next_pending_job_execution(
            iotjobs.StartNextPendingJobExecutionRequest(thing_name=self.thing)), self.timeout_s)
        self._retry_s = RETRY_MIN_S
        ex = resp.execution
        if ex is None or not ex.job_id:
            return
        self._current = ex.job_id
        self._cancel_reason = None
        self._current_task = self._loop.create_task(self._execute(ex), name=f"job-{ex.job_id}")

    async def _check(self, job_id: str) -> None:
        """notify-next moved past our job: is it still ours to finish?"""
        if self._current != job_id:
            return
        try:
            resp = await call(self.client.describe_job_execution(
                iotjobs.DescribeJobExecutionRequest(thing_name=self.thing, job_id=job_id, include_job_document=False)),
                self.timeout_s)
        except V2ServiceException as exc:
            if _code(exc) not in GONE_CODES:
                raise
            status = "gone"
        else:
            ex = resp.execution
            status = ex.status if ex is not None else "gone"
            if status not in TERMINAL and status != "gone":
                return
        self._cancel(job_id, f"execution is {status} in the cloud")

    def _cancel(self, job_id: str, why: str) -> None:
        if self._current == job_id and self._current_task is not None and not self._current_task.done():
            log.warning("job canceled in the cloud; stopping its action", extra={"job_id": job_id, "why": why})
            self._cancel_reason = why
            self._current_task.cancel()

    # --- one job --------------------------------------------------------------------------------------
    async def update_execution(self, job_id: str, status: str, info: dict[str, Any]) -> None:
        """Send one execution status to IoT Jobs; raises JobGone when the cloud has ended the
        execution, and the client's errors when the update did not get through."""
        try:
            await call(self.client.update_job_execution(iotjobs.UpdateJobExecutionRequest(
                thing_name=self.thing, job_id=job_id, status=status, status_details=details(info))), self.timeout_s)
        except V2ServiceException as exc:
            if _code(exc) in GONE_CODES:
                raise JobGone(describe_error(exc)) from None
            raise

    async def _execute(self, ex: iotjobs.JobExecutionData) -> None:
        job_id = ex.job_id
        outcome = "?"
        try:
            outcome = await self._execute_inner(job_id, ex.job_document)
        except asyncio.CancelledError:
            if self._cancel_reason == "shutdown":
                raise
            outcome = "CANCELED"  # by the cloud: the execution is terminal already
            self.journal.clear()
        except JobGone as exc:
            outcome = "CANCELED"
            self.journal.clear()
            log.warning("job ended in the cloud while running", extra={"job_id": job_id, "error": str(exc)})
        except (V2ServiceException, AwsCrtError, TimeoutError, concurrent.futures.CancelledError) as exc:
            # The final status could not be sent; the journal (if any) lets the next connect retry.
            outcome = "UNREPORTED"
            self.last_error = describe_error(exc)
            log.warning("job status update failed", extra={"job_id": job_id, "error": self.last_error})
        finally:
            if self._cancel_reason != "shutdown":
                self.history = [*self.history[-9:], {"job_id": job_id, "outcome": outcome}]
                self._current, self._current_task = None, None
                self.request_next()

    async def _execute_inner(self, job_id: str, document: Any) -> str:
        try:
            action, params = parse(document, self.actions, self.remote)
        except Rejected as exc:
            log.warning("job rejected", extra={"job_id": job_id, "reason": str(exc)})
            await self.update_execution(job_id, S.REJECTED, {"reason": str(exc)})
            return S.REJECTED
        name = action.name
        self.journal.write(Entry(job_id, name, "running", _safe_boot_id(self.ctx), time.time()))
        await self.update_execution(job_id, S.IN_PROGRESS, {"action": name, "step": "started"})

        def set_phase(phase: str) -> None:
            self.journal.write(Entry(job_id, name, phase, _safe_boot_id(self.ctx), time.time()))

        async def progress(info: dict[str, str]) -> None:
            await self.update_execution(job_id, S.IN_PROGRESS, {"action": name, **info})

        ctx = dataclasses.replace(self.ctx, set_phase=set_phase)
        timeout = self.remote.timeout_for(name)
        status, info = S.SUCCEEDED, {"action": name}
        result: Result | None = None
        try:
            async with asyncio.timeout(timeout):  # not wait_for: it can lose a shutdown's cancel (3.11)
                result = await action.run(ctx, params, progress)
            info.update(result.details)
        except TimeoutError:
            status, info = S.FAILED, {"action": name, "reason": f"timed out after {timeout:g} s"}
        except Rejected as exc:
            status, info = S.REJECTED, {"action": name, "reason": str(exc)}
        except Failed as exc:
            status, info = S.FAILED, {"action": name, "reason": str(exc)}
        except Exception:  # a bug in an action: logged with traceback, the job FAILED
            log.error("job action crashed", exc_info=True, extra={"job_id": job_id, "action": name})
            status, info = S.FAILED, {"action": name, "reason": "the action failed unexpectedly (see the device log)"}
        log.info("job finished", extra={"job_id": job_id, "action": name, "status": status,
                                        "reason": info.get("reason", "")})
        # Journal the outcome first: if the final status cannot be sent now, the next connect or
        # start sends this outcome, not "interrupted".
        self.journal.write(Entry(job_id, name, f"done:{status}", _safe_boot_id(self.ctx), time.time(),
                                 str(info.get("reason", ""))))
        await self.update_execution(job_id, status, info)
        self.journal.clear()
        if result is not None and result.restart_after:
            self.ctx.ports.request_stop()
        return str(status)

    async def _finish_journal(self) -> bool:
        """The job a previous process left in hand gets its final status; True when done."""
        entry = self.journal.read()
        if entry is None:
            return True
        if entry.phase.startswith("done:"):
            status, why = entry.phase.removeprefix("done:"), entry.reason or "finished before the last restart"
        elif entry.phase == "restarting":
            status, why = S.SUCCEEDED, "agent restarted"
        elif entry.phase == "rebooting":
            now_boot = _safe_boot_id(self.ctx)
            if now_boot != entry.boot_id:
                status, why = S.SUCCEEDED, "device rebooted"
            else:
                status, why = S.FAILED, "the device did not reboot (same boot id)"
        else:
            status, why = S.FAILED, "interrupted: the agent stopped while the action ran"
        try:
            await self.update_execution(entry.job_id, status, {"action": entry.action, "reason": why})
        except JobGone as exc:
            log.info("journaled job already ended in the cloud", extra={"job_id": entry.job_id, "error": str(exc)})
        else:
            log.info("journaled job finished", extra={"job_id": entry.job_id, "status": status, "reason": why})
            self.history = [*self.history[-9:], {"job_id": entry.job_id, "outcome": str(status)}]
        self.journal.clear()
        return True

    def status(self) -> dict[str, Any]:
        return {"current_job": self._current, "recent": list(self.history), "last_error": self.last_error,
                "restarts": self.restarts.count}


def _safe_boot_id(ctx: ActionContext) -> str:
    try:
        return ctx.env.boot_id()
    except OSError:
        return "unknown"


def _code(exc: V2ServiceException) -> str | None:
    err = exc.modeled_error
    code = getattr(err, "code", None)
    return str(code) if code is not None else None
