"""IoT Jobs service over the MQTT reserved topics (reference §4): pending list, start-next,
describe, update with optimistic versions, step and in-progress timeouts, cancel and delete, and
the notify / notify-next events. Pure logic over ``JobsStore``; replies carry ``direct=True``
because IoT Core hands them to the requesting connection without a subscription."""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.services.jobs_store import TERMINAL, Execution, Job, JobsStore, Rollout
from emulator.services.jsonio import JsonInputError, is_int, parse_json
from emulator.services.outgoing import Outgoing, encode

TOPIC_RE = re.compile(r"^\$aws/things/([^/]+)/jobs/(.+)$")
THING_RE = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
JOB_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
DETAIL_KEY_RE = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
DEVICE_STATUSES = frozenset({"IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED"})
ALL_STATUSES = frozenset({"QUEUED", *DEVICE_STATUSES, *TERMINAL})
MAX_DOCUMENT_BYTES = 32768
MAX_CLIENT_TOKEN = 64
MAX_TIMEOUT_MINUTES = 10080
MAX_NOTIFY_ENTRIES = 10
MAX_ROLLOUT_PER_MINUTE = 1000  # IoT Core: maximumPerMinute 1-1000
FAILURE_TYPES = {"FAILED": ("FAILED",), "REJECTED": ("REJECTED",), "TIMED_OUT": ("TIMED_OUT",),
                 "ALL": ("FAILED", "REJECTED", "TIMED_OUT")}
ABORT_REASON = "AbortThresholdReached"

# `#` after `jobs/` reaches every API; the runner subscribes with no-local.
SUBSCRIPTIONS: tuple[str, ...] = ("$aws/things/+/jobs/#",)


@dataclass
class JobsSettings:
    max_status_detail_value: int = 1024  # botocore's limit; a 2020 doc said 128
    max_status_details: int = 10
    # IoT Core's docs contradict themselves on whether QUEUED -> IN_PROGRESS (membership unchanged)
    # publishes `notify`; their worked example says no, which is the default here.
    notify_on_status_change: bool = False
    # Length of a timeout "minute"; tests shrink it to see TIMED_OUT without waiting minutes.
    seconds_per_minute: float = 60.0


class JobsError(Exception):
    """A rejection with IoT Core's error code (``InvalidRequest``, ``ResourceNotFound`` …)."""

    def __init__(self, code: str, message: str, execution: Execution | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.execution = execution


class JobsService:
    subscriptions: tuple[str, ...] = SUBSCRIPTIONS

    def __init__(self, db_path: Path | str, settings: JobsSettings | None = None) -> None:
        self.settings = settings or JobsSettings()
        self._store = JobsStore(db_path)
        self._lock = threading.Lock()
        # Messages caused by a change to OTHER things than the one in hand (an abort cancels the
        # queued executions of the whole fleet); handle() and tick() send them with their own.
        self._side_effects: list[Outgoing] = []

    def close(self) -> None:
        self._store.close()

    # ---- MQTT entry point ------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, now: float) -> list[Outgoing]:
        m = TOPIC_RE.match(topic)
        if m is None:
            return []
        thing, rest = m.group(1), m.group(2)
        if rest.endswith(("/accepted", "/rejected")) or rest in ("notify", "notify-next"):
            return []  # response and event topics, ours or another subscriber's
        if not THING_RE.match(thing):
            return []  # refused by policy on IoT Core; no reply topic to speak of
        ts = int(now)
        token: str | None = None
        try:
            req = _parse_request(payload)
            token = _client_token(req)
            parts = rest.split("/")
            with self._lock, self._store.transaction():
                if rest == "get":
                    return [self._reply(topic, "accepted", self._get_pending(thing, ts), token)]
                if rest == "start-next":
                    doc, events = self._start_next(thing, req, now)
                    return [self._reply(topic, "accepted", doc, token), *events]
                if len(parts) == 2 and parts[1] == "get":
                    doc = self._describe(thing, parts[0], req, ts)
                    return [self._reply(topic, "accepted", doc, token)]
                if len(parts) == 2 and parts[1] == "update" and parts[0] != "$next":
                    doc, events = self._update(thing, parts[0], req, now)
                    return [self._reply(topic, "accepted", doc, token), *events, *self._take_side_effects()]
                raise JobsError("InvalidTopic", f"The topic {topic} does not match any Jobs API")
        except JobsError as err:
            return [self._reply(topic, "rejected", _error_doc(err, ts), token)]

    def _reply(self, topic: str, kind: str, doc: dict[str, Any], token: str | None) -> Outgoing:
        """The single place a request's answer is addressed (see runner.deliver for delivery)."""
        if token is not None:
            doc["clientToken"] = token
        return Outgoing(f"{topic}/{kind}", encode(doc), direct=True)

    # ---- timers ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        with self._lock:
            deadlines = [d for ex in self._store.running() if (d := ex.deadline()) is not None]
            deadlines += [self._next_release(r) for r in self._store.rolling_out()]
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> list[Outgoing]:
        """Time out IN_PROGRESS executions whose step or in-progress timer has run out, and notify
        the next targets of rate-limited rollouts."""
        out: list[Outgoing] = []
        with self._lock, self._store.transaction():
            for ex in self._store.running():
                deadline = ex.deadline()
                if deadline is None or deadline > now:
                    continue
                before = self._store.pending(ex.thing)
                self._set_status(ex, "TIMED_OUT", now)
                out += self._events(ex.thing, before, now)
            for rollout in self._store.rolling_out():
                out += self._release(rollout, now)
            out += self._take_side_effects()
        return out

    def _take_side_effects(self) -> list[Outgoing]:
        out, self._side_effects = self._side_effects, []
        return out

    # ---- rollouts (jobExecutionsRolloutConfig) and aborts (abortConfig) ---------------------

    def _next_release(self, r: Rollout) -> float:
        job = self._store.job(r.job_id)
        created = job.created_at if job is not None else 0.0
        if r.per_minute is None:
            return created
        return created + r.released * self.settings.seconds_per_minute / r.per_minute

    def _release(self, r: Rollout, now: float) -> list[Outgoing]:
        """Queue executions for every target whose turn has come: at most ``per_minute`` per
        (emulated) minute, spread evenly, the first at once."""
        job = self._store.job(r.job_id)
        if job is None or job.status != "IN_PROGRESS":
            return []
        if r.per_minute is None:
            due = len(r.targets)
        else:
            elapsed = max(0.0, now - job.created_at)
            due = min(len(r.targets), 1 + int(elapsed * r.per_minute / self.settings.seconds_per_minute))
        out: list[Outgoing] = []
        for thing in r.targets[r.released:due]:
            before = self._store.pending(thing)
            number = self._store.next_execution_number(thing)
            self._store.save_execution(Execution(job.job_id, thing, number, "QUEUED", now, now))
            out += self._events(thing, before, now)
        if due > r.released:
            r.released = due
            self._store.save_rollout(r)
        return out

    def _maybe_abort(self, job_id: str, now: float) -> None:
        """IoT Core's abortConfig: once at least ``minNumberOfExecutedThings`` targets were
        notified, a failure share (of the notified executions) at or above ``thresholdPercentage``
        cancels the job: QUEUED executions become CANCELED, targets not yet notified never are,
        IN_PROGRESS ones may finish."""
        r = self._store.rollout(job_id)
        job = self._store.job(job_id)
        if r is None or not r.abort_criteria or job is None or job.status != "IN_PROGRESS":
            return
        counts = self._store.status_counts(job_id)
        notified = sum(counts.values())
        for c in r.abort_criteria:
            failures = sum(counts.get(s, 0) for s in FAILURE_TYPES[c["failureType"]])
            if notified >= c["minNumberOfExecutedThings"] and failures * 100.0 >= c["thresholdPercentage"] * notified:
                r.reason_code = ABORT_REASON
                self._store.save_rollout(r)
                job.status, job.last_updated_at = "CANCELED", now
                self._store.save_job(job)
                for ex in self._store.executions_of_job(job_id):
                    if ex.status == "QUEUED":
                        before = self._store.pending(ex.thing)
                        self._set_status(ex, "CANCELED", now)
                        self._side_effects += self._events(ex.thing, before, now)
                return

    # ---- device operations -----------------------------------------------------------------

    def _get_pending(self, thing: str, ts: int) -> dict[str, Any]:
        pending = self._store.pending(thing)
        return {
            "inProgressJobs": [_summary(e) for e in pending if e.status == "IN_PROGRESS"],
            "queuedJobs": [_summary(e) for e in pending if e.status == "QUEUED"],
            "timestamp": ts,
        }

    def _start_next(self, thing: str, req: dict[str, Any], now: float) -> tuple[dict[str, Any], list[Outgoing]]:
        details = self._status_details(req)
        step = _timeout(req, "stepTimeoutInMinutes", allow_clear=False)
        before = self._store.pending(thing)
        doc: dict[str, Any] = {"timestamp": int(now)}
        if not before:
            return doc, []
        ex = before[0]
        if ex.status == "QUEUED":
            if details is not None:
                ex.status_details = details
            self._set_status(ex, "IN_PROGRESS", now, step_minutes=step)
        doc["execution"] = self._execution_doc(ex, include_document=True)
        return doc, self._events(thing, before, now)

    def _describe(self, thing: str, job_id: str, req: dict[str, Any], ts: int) -> dict[str, Any]:
        include = req.get("includeJobDocument", True)
        if not isinstance(include, bool):
            raise JobsError("InvalidRequest", "includeJobDocument must be a boolean")
        number = _optional_int(req, "executionNumber", minimum=0)
        if job_id == "$next":
            pending = self._store.pending(thing)
            doc: dict[str, Any] = {"timestamp": ts}
            if pending:
                doc["execution"] = self._execution_doc(pending[0], include_document=include)
            return doc
        ex = self._find(thing, job_id, number)
        if ex.terminal:
            raise JobsError(
                "TerminalStateReached", f"Job execution {job_id} for thing {thing} is in status {ex.status}"
            )
        return {"execution": self._execution_doc(ex, include_document=include), "timestamp": ts}

    def _update(
        self, thing: str, job_id: str, req: dict[str, Any], now: float
    ) -> tuple[dict[str, Any], list[Outgoing]]:
        status = req.get("status")
        if status is None:
            raise JobsError("InvalidRequest", "status is required")
        if not isinstance(status, str) or status not in ALL_STATUSES:
            raise JobsError("InvalidRequest", f"status must be one of {', '.join(sorted(DEVICE_STATUSES))}")
        details = self._status_details(req)
        step = _timeout(req, "stepTimeoutInMinutes", allow_clear=True)
        expected = _optional_int(req, "expectedVersion", minimum=0)
        number = _optional_int(req, "executionNumber", minimum=0)
        flags = {}
        for flag in ("includeJobExecutionState", "includeJobDocument"):
            value = req.get(flag, False)
            if not isinstance(value, bool):
                raise JobsError("InvalidRequest", f"{flag} must be a boolean")
            flags[flag] = value

        ex = self._find(thing, job_id, number)
        if ex.terminal:
            raise JobsError(
                "InvalidStateTransition",
                f"Cannot update job execution {job_id} from {ex.status} (terminal) to {status}",
                ex,
            )
        if expected is not None and expected != ex.version_number:
            raise JobsError(
                "VersionMismatch",
                f"expectedVersion {expected} does not match the current version {ex.version_number}",
                ex,
            )
        if status not in DEVICE_STATUSES:
            raise JobsError(
                "InvalidStateTransition", f"A device cannot move job execution {job_id} to {status}", ex
            )

        before = self._store.pending(thing)
        if details is not None:
            ex.status_details = details
        self._set_status(ex, status, now, step_minutes=step)
        doc: dict[str, Any] = {}
        if flags["includeJobExecutionState"]:
            doc["executionState"] = _state(ex)
        if flags["includeJobDocument"]:
            job = self._store.job(job_id)
            doc["jobDocument"] = job.document if job else {}
        doc["timestamp"] = int(now)
        return doc, self._events(thing, before, now)

    # ---- admin operations (return the messages to publish) ---------------------------------

    def create_job(
        self,
        document: Any,
        things: list[str],
        now: float,
        job_id: str | None = None,
        timeout_minutes: int | None = None,
        rollout_config: Any = None,
        abort_config: Any = None,
        groups: list[str] | None = None,
    ) -> tuple[dict[str, Any], list[Outgoing]]:
        """Queue ``document`` for ``things`` (a group's members resolved by the caller, named in
        ``groups``). ``rollout_config``/``abort_config`` take IoT Core's
        ``jobExecutionsRolloutConfig`` / ``abortConfig`` shapes."""
        per_minute = _rollout_rate(rollout_config)
        criteria = _abort_criteria(abort_config)
        job_id = job_id if job_id is not None else f"job-{uuid.uuid4().hex[:16]}"
        if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
            raise JobsError("InvalidRequest", f"job id {job_id!r} must be 1-64 characters of [a-zA-Z0-9_-]")
        if not isinstance(document, dict):
            raise JobsError("InvalidRequest", "the job document must be a JSON object")
        if len(encode(document)) > MAX_DOCUMENT_BYTES:
            raise JobsError("InvalidRequest", f"the job document exceeds {MAX_DOCUMENT_BYTES} bytes")
        if not things:
            where = f" (thing group(s) {', '.join(groups)} have no members)" if groups else ""
            raise JobsError("InvalidRequest", f"a job needs at least one target thing{where}")
        for thing in things:
            if not isinstance(thing, str) or not THING_RE.match(thing):
                raise JobsError("InvalidRequest", f"invalid thing name {thing!r}")
        if timeout_minutes is not None and (
            not is_int(timeout_minutes) or not 1 <= timeout_minutes <= MAX_TIMEOUT_MINUTES
        ):
            raise JobsError("InvalidRequest", f"timeout must be 1-{MAX_TIMEOUT_MINUTES} minutes")
        out: list[Outgoing] = []
        with self._lock, self._store.transaction():
            if self._store.job(job_id) is not None:
                raise JobsError("ResourceAlreadyExists", f"job {job_id} already exists")
            job = Job(job_id, document, "IN_PROGRESS", now, now, timeout_minutes)
            self._store.save_job(job)
            rollout = Rollout(job_id, list(dict.fromkeys(things)), 0, per_minute, criteria, list(groups or []))
            self._store.save_rollout(rollout)
            out += self._release(rollout, now)
            return self._job_doc(job), out

    def list_jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._job_doc(j, with_document=False) for j in self._store.jobs()]

    def describe_job(self, job_id: str, thing: str | None = None) -> dict[str, Any]:
        with self._lock:
            job = self._store.job(job_id)
            if job is None:
                raise JobsError("ResourceNotFound", f"job {job_id} does not exist")
            doc = self._job_doc(job)
            if thing is not None:
                ex = self._store.execution(job_id, thing)
                if ex is None:
                    raise JobsError("ResourceNotFound", f"job {job_id} has no execution for thing {thing}")
                doc["execution"] = self._execution_doc(ex, include_document=False)
            return doc

    def cancel_job(self, job_id: str, now: float, force: bool = False) -> tuple[dict[str, Any], list[Outgoing]]:
        """QUEUED executions become CANCELED; IN_PROGRESS ones only with ``force`` (as on IoT
        Core, a device may otherwise finish what it started)."""
        return self._end_job(job_id, now, force, "CANCELED")

    def delete_job(self, job_id: str, now: float, force: bool = False) -> tuple[dict[str, Any], list[Outgoing]]:
        """Executions still pending become REMOVED and the job's executions vanish for devices;
        refused while executions are IN_PROGRESS unless ``force``."""
        return self._end_job(job_id, now, force, "REMOVED")

    def _end_job(self, job_id: str, now: float, force: bool, target: str) -> tuple[dict[str, Any], list[Outgoing]]:
        out: list[Outgoing] = []
        with self._lock, self._store.transaction():
            job = self._store.job(job_id)
            if job is None or job.status == "DELETED":
                raise JobsError("ResourceNotFound", f"job {job_id} does not exist")
            executions = self._store.executions_of_job(job_id)
            running = [e for e in executions if e.status == "IN_PROGRESS"]
            if target == "CANCELED" and job.status in ("CANCELED", "COMPLETED") and not (force and running):
                raise JobsError("InvalidStateTransition", f"job {job_id} is already {job.status}")
            if target == "REMOVED" and running and not force:
                raise JobsError(
                    "InvalidStateTransition",
                    f"job {job_id} has {len(running)} IN_PROGRESS execution(s); delete it with force",
                )
            for ex in executions:
                if ex.status == "QUEUED" or (ex.status == "IN_PROGRESS" and force):
                    before = self._store.pending(ex.thing)
                    self._set_status(ex, target, now)
                    out += self._events(ex.thing, before, now)
            job.status = "CANCELED" if target == "CANCELED" else "DELETED"
            job.force_canceled = job.force_canceled or (force and target == "CANCELED")
            job.last_updated_at = now
            self._store.save_job(job)
            return self._job_doc(job), out

    # ---- shared rules ----------------------------------------------------------------------

    def _find(self, thing: str, job_id: str, number: int | None) -> Execution:
        if not JOB_ID_RE.match(job_id):
            raise JobsError("InvalidRequest", f"invalid job id {job_id!r}")
        ex = self._store.execution(job_id, thing)
        job = self._store.job(job_id)
        if ex is None or job is None or job.status == "DELETED" or ex.status == "REMOVED":
            raise JobsError("ResourceNotFound", f"Job execution {job_id} for thing {thing} not found")
        if number is not None and number != ex.execution_number:
            raise JobsError(
                "ResourceNotFound", f"Job execution {job_id} for thing {thing} has no execution number {number}"
            )
        return ex

    def _set_status(self, ex: Execution, status: str, now: float, step_minutes: int | None = None) -> None:
        if status == "IN_PROGRESS":
            if ex.started_at is None:
                ex.started_at = now
                job = self._store.job(ex.job_id)
                if job is not None and job.timeout_minutes:
                    ex.progress_deadline = now + job.timeout_minutes * self.settings.seconds_per_minute
            if step_minutes == -1:
                ex.step_deadline = None
            elif step_minutes is not None:
                ex.step_deadline = now + step_minutes * self.settings.seconds_per_minute
        if status in TERMINAL:
            ex.step_deadline = ex.progress_deadline = None
        ex.status = status
        ex.version_number += 1
        ex.last_updated_at = now
        self._store.save_execution(ex)
        if status in FAILURE_TYPES["ALL"]:
            self._maybe_abort(ex.job_id, now)
        self._maybe_complete(ex.job_id, now)

    def _maybe_complete(self, job_id: str, now: float) -> None:
        job = self._store.job(job_id)
        if job is None or job.status != "IN_PROGRESS":
            return
        rollout = self._store.rollout(job_id)
        if rollout is not None and rollout.unreleased:
            return
        if all(e.terminal for e in self._store.executions_of_job(job_id)):
            job.status, job.last_updated_at = "COMPLETED", now
            self._store.save_job(job)

    def _events(self, thing: str, before: list[Execution], now: float) -> list[Outgoing]:
        """notify when the pending set changes (or, if configured, any pending status does);
        notify-next when the first pending execution changes."""
        after = self._store.pending(thing)
        out: list[Outgoing] = []
        ts = int(now)
        changed = {e.job_id for e in before} != {e.job_id for e in after}
        if changed or (
            self.settings.notify_on_status_change
            and [(e.job_id, e.status) for e in before] != [(e.job_id, e.status) for e in after]
        ):
            jobs: dict[str, list[dict[str, Any]]] = {}
            for ex in after[:MAX_NOTIFY_ENTRIES]:
                jobs.setdefault(ex.status, []).append(_summary(ex))
            out.append(Outgoing(f"$aws/things/{thing}/jobs/notify", encode({"timestamp": ts, "jobs": jobs})))
        first_before = before[0].job_id if before else None
        first_after = after[0].job_id if after else None
        if first_before != first_after:
            doc: dict[str, Any] = {"timestamp": ts}
            if after:
                doc["execution"] = self._execution_doc(after[0], include_document=True)
            out.append(Outgoing(f"$aws/things/{thing}/jobs/notify-next", encode(doc)))
        return out

    def _execution_doc(self, ex: Execution, *, include_document: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {"jobId": ex.job_id, "thingName": ex.thing}
        if include_document:
            job = self._store.job(ex.job_id)
            doc["jobDocument"] = job.document if job else {}
        doc["status"] = ex.status
        if ex.status_details:
            doc["statusDetails"] = ex.status_details
        doc["queuedAt"] = int(ex.queued_at)
        if ex.started_at is not None:
            doc["startedAt"] = int(ex.started_at)
        doc.update(
            lastUpdatedAt=int(ex.last_updated_at),
            versionNumber=ex.version_number,
            executionNumber=ex.execution_number,
        )
        return doc

    def _job_doc(self, job: Job, with_document: bool = True) -> dict[str, Any]:
        executions = self._store.executions_of_job(job.job_id)
        counts: dict[str, int] = {}
        for ex in executions:
            counts[ex.status] = counts.get(ex.status, 0) + 1
        doc: dict[str, Any] = {
            "jobId": job.job_id,
            "status": job.status,
            "forceCanceled": job.force_canceled,
            "createdAt": int(job.created_at),
            "lastUpdatedAt": int(job.last_updated_at),
            "targets": [e.thing for e in executions],
            "executionCounts": counts,
        }
        if job.timeout_minutes is not None:
            doc["inProgressTimeoutInMinutes"] = job.timeout_minutes
        rollout = self._store.rollout(job.job_id)
        if rollout is not None:
            doc["targets"] = rollout.targets
            doc["targetGroups"] = rollout.groups
            doc["notified"] = rollout.released
            doc["waitingForRollout"] = rollout.unreleased if job.status == "IN_PROGRESS" else 0
            if rollout.per_minute is not None:
                doc["jobExecutionsRolloutConfig"] = {"maximumPerMinute": rollout.per_minute}
            if rollout.abort_criteria:
                doc["abortConfig"] = {"criteriaList": rollout.abort_criteria}
            if rollout.reason_code is not None:
                doc["reasonCode"] = rollout.reason_code
        if with_document:
            doc["document"] = job.document
            doc["executions"] = [
                {"thingName": e.thing, "status": e.status, "executionNumber": e.execution_number,
                 "versionNumber": e.version_number, "statusDetails": e.status_details}
                for e in executions
            ]
        return doc

    def _status_details(self, req: dict[str, Any]) -> dict[str, str] | None:
        if "statusDetails" not in req:
            return None
        details = req["statusDetails"]
        if not isinstance(details, dict):
            raise JobsError("InvalidRequest", "statusDetails must be an object of string values")
        if len(details) > self.settings.max_status_details:
            limit = self.settings.max_status_details
            raise JobsError("InvalidRequest", f"statusDetails holds more than {limit} entries")
        for key, value in details.items():
            if not DETAIL_KEY_RE.match(key):
                raise JobsError("InvalidRequest", f"statusDetails key {key!r} is invalid")
            if not isinstance(value, str) or not 1 <= len(value) <= self.settings.max_status_detail_value:
                raise JobsError(
                    "InvalidRequest",
                    f"statusDetails value for {key!r} must be a string of 1-{self.settings.max_status_detail_value}"
                    " characters",
                )
        return dict(details)


def _rollout_rate(config: Any) -> int | None:
    if config is None:
        return None
    if not isinstance(config, dict) or set(config) - {"maximumPerMinute", "exponentialRate"}:
        raise JobsError("InvalidRequest", "jobExecutionsRolloutConfig takes maximumPerMinute")
    if "exponentialRate" in config:
        raise JobsError("InvalidRequest", "jobExecutionsRolloutConfig.exponentialRate is not emulated; "
                        "use maximumPerMinute")
    rate: Any = config.get("maximumPerMinute")
    if not is_int(rate) or not 1 <= rate <= MAX_ROLLOUT_PER_MINUTE:
        raise JobsError("InvalidRequest", f"maximumPerMinute must be an integer 1-{MAX_ROLLOUT_PER_MINUTE}")
    return int(rate)


def _abort_criteria(config: Any) -> list[dict[str, Any]]:
    if config is None:
        return []
    if not isinstance(config, dict) or set(config) != {"criteriaList"} or not isinstance(config["criteriaList"], list) \
            or not config["criteriaList"]:
        raise JobsError("InvalidRequest", "abortConfig takes a non-empty criteriaList")
    out = []
    for i, c in enumerate(config["criteriaList"]):
        where = f"abortConfig.criteriaList[{i}]"
        keys = {"failureType", "action", "thresholdPercentage", "minNumberOfExecutedThings"}
        if not isinstance(c, dict) or set(c) != keys:
            raise JobsError("InvalidRequest", f"{where} needs exactly {', '.join(sorted(keys))}")
        if c["failureType"] not in FAILURE_TYPES:
            raise JobsError("InvalidRequest", f"{where}.failureType must be one of {', '.join(FAILURE_TYPES)}")
        if c["action"] != "CANCEL":
            raise JobsError("InvalidRequest", f"{where}.action must be CANCEL")
        pct = c["thresholdPercentage"]
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 < pct <= 100 \
                or round(pct, 2) != pct:
            raise JobsError("InvalidRequest", f"{where}.thresholdPercentage must be >0 and <=100, two decimals at most")
        n = c["minNumberOfExecutedThings"]
        if not is_int(n) or n < 1:
            raise JobsError("InvalidRequest", f"{where}.minNumberOfExecutedThings must be an integer >= 1")
        out.append(dict(c))
    return out


def _parse_request(payload: bytes) -> dict[str, Any]:
    if not payload.strip():
        return {}
    try:
        doc = parse_json(payload)
    except JsonInputError as exc:
        raise JobsError("InvalidJson", "The request payload is not valid UTF-8 JSON") from exc
    if not isinstance(doc, dict):
        raise JobsError("InvalidRequest", "The request payload must be a JSON object")
    return doc


def _client_token(req: dict[str, Any]) -> str | None:
    if "clientToken" not in req:
        return None
    token = req["clientToken"]
    if not isinstance(token, str) or not 1 <= len(token) <= MAX_CLIENT_TOKEN:
        raise JobsError("InvalidRequest", f"clientToken must be a string of 1-{MAX_CLIENT_TOKEN} characters")
    return token


def _optional_int(req: dict[str, Any], name: str, *, minimum: int) -> int | None:
    if name not in req:
        return None
    value = req[name]
    if not is_int(value) or value < minimum:
        raise JobsError("InvalidRequest", f"{name} must be an integer >= {minimum}")
    return int(value)


def _timeout(req: dict[str, Any], name: str, *, allow_clear: bool) -> int | None:
    if name not in req:
        return None
    value = req[name]
    if is_int(value) and (1 <= value <= MAX_TIMEOUT_MINUTES or (allow_clear and value == -1)):
        return int(value)
    clear = " or -1 to clear it" if allow_clear else ""
    raise JobsError("InvalidRequest", f"{name} must be an integer from 1 to {MAX_TIMEOUT_MINUTES}{clear}")


def _summary(ex: Execution) -> dict[str, Any]:
    doc: dict[str, Any] = {"jobId": ex.job_id, "queuedAt": int(ex.queued_at)}
    if ex.started_at is not None:
        doc["startedAt"] = int(ex.started_at)
    doc.update(lastUpdatedAt=int(ex.last_updated_at), versionNumber=ex.version_number,
               executionNumber=ex.execution_number)
    return doc


def _state(ex: Execution) -> dict[str, Any]:
    doc: dict[str, Any] = {"status": ex.status}
    if ex.status_details:
        doc["statusDetails"] = ex.status_details
    doc["versionNumber"] = ex.version_number
    return doc


def _error_doc(err: JobsError, ts: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"code": err.code, "message": err.message, "timestamp": ts}
    if err.execution is not None and err.code in ("InvalidStateTransition", "VersionMismatch"):
        doc["executionState"] = _state(err.execution)
    return doc

