"""Device Shadow and Jobs as one emulator component: the services over SQLite files in the state
dir (so state survives restarts of ``emulator serve``), the runner on the broker, and the admin
socket through which ``emulator shadow …`` / ``emulator job …`` reach them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator.registry import DB_FILE, Registry
from emulator.services.admin_socket import AdminRequestError, AdminServer
from emulator.services.jobs import JobsError, JobsService, JobsSettings
from emulator.services.outgoing import Outgoing
from emulator.services.runner import ServiceRunner
from emulator.services.shadow import ShadowRejected, ShadowService, ShadowSettings
from emulator.state import EmulatorInfo

SERVICES_DIR = "services"


class DeviceServices:
    def __init__(
        self,
        shadow_settings: ShadowSettings | None = None,
        jobs_settings: JobsSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.shadow_settings = shadow_settings
        self.jobs_settings = jobs_settings
        self.clock = clock
        self.shadow: ShadowService | None = None
        self.jobs: JobsService | None = None
        self.runner: ServiceRunner | None = None
        self.admin: AdminServer | None = None
        self.registry_dir: Path | None = None

    def start(self, info: EmulatorInfo) -> None:
        self.registry_dir = Path(info.state_dir) / "registry"
        folder = Path(info.state_dir) / SERVICES_DIR
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.shadow = ShadowService(folder / "shadow.sqlite", self.shadow_settings)
        self.jobs = JobsService(folder / "jobs.sqlite", self.jobs_settings)
        self.runner = ServiceRunner([self.shadow, self.jobs], clock=self.clock)
        self.runner.start(info)
        self.admin = AdminServer(info.state_dir, self._handlers())
        self.admin.start()

    def stop(self) -> None:
        if self.admin is not None:
            self.admin.stop()
            self.admin = None
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        for svc in (self.shadow, self.jobs):
            if svc is not None:
                svc.close()
        self.shadow = self.jobs = None

    # ---- admin operations, run on the runner's worker ------------------------------------

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "shadow.get": self._shadow_get,
            "shadow.set_desired": self._shadow_set_desired,
            "job.create": self._job_create,
            "job.list": lambda args: self._run(lambda now: (self._jobs().list_jobs(), [])),
            "job.describe": self._job_describe,
            "job.cancel": lambda args: self._job_end(args, "cancel"),
            "job.delete": lambda args: self._job_end(args, "delete"),
        }

    def _run(self, fn: Callable[[float], tuple[Any, list[Outgoing]]]) -> Any:
        if self.runner is None:
            raise AdminRequestError("NotRunning", "services are stopped")
        try:
            return self.runner.call(fn)
        except ShadowRejected as exc:
            raise AdminRequestError(str(exc.code), exc.message) from exc
        except JobsError as exc:
            raise AdminRequestError(exc.code, exc.message) from exc

    def _shadow(self) -> ShadowService:
        if self.shadow is None:
            raise AdminRequestError("NotRunning", "services are stopped")
        return self.shadow

    def _jobs(self) -> JobsService:
        if self.jobs is None:
            raise AdminRequestError("NotRunning", "services are stopped")
        return self.jobs

    def _shadow_get(self, args: dict[str, Any]) -> Any:
        thing, name = _str(args, "thing"), _str(args, "shadow", "")
        return self._run(lambda now: (self._shadow().get(thing, name, now), []))

    def _shadow_set_desired(self, args: dict[str, Any]) -> Any:
        thing, name = _str(args, "thing"), _str(args, "shadow", "")
        if "desired" not in args:
            raise AdminRequestError("InvalidRequest", "'desired' is required")
        desired = args["desired"]

        def op(now: float) -> tuple[Any, list[Outgoing]]:
            out = self._shadow().set_desired(thing, name, desired, now)
            return self._shadow().get(thing, name, now), out

        return self._run(op)

    def _job_create(self, args: dict[str, Any]) -> Any:
        things = args.get("things", [])
        groups = args.get("thing_groups", [])
        for key, value in (("things", things), ("thing_groups", groups)):
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise AdminRequestError("InvalidRequest", f"'{key}' must be a list of names")
        job_id = args.get("job_id")
        if job_id is not None and not isinstance(job_id, str):
            raise AdminRequestError("InvalidRequest", "'job_id' must be a string")
        timeout = args.get("timeout_minutes")
        # Snapshot targets (IoT Core's targetSelection SNAPSHOT): the groups' members now.
        targets = list(things) + [t for g in groups for t in self._group_members(g)]
        return self._run(lambda now: self._jobs().create_job(
            args.get("document"), targets, now, job_id, timeout, rollout_config=args.get("rollout"),
            abort_config=args.get("abort"), groups=groups))

    def _group_members(self, group: str) -> list[str]:
        if self.registry_dir is None or not (self.registry_dir / DB_FILE).exists():
            raise AdminRequestError("ResourceNotFound", "thing groups need the registry (fleet provisioning)")
        registry = Registry(self.registry_dir)
        try:
            members = registry.group_members(group)
        finally:
            registry.close()
        if not members:
            raise AdminRequestError("ResourceNotFound", f"thing group {group!r} does not exist or has no members")
        return members

    def _job_describe(self, args: dict[str, Any]) -> Any:
        job_id = _str(args, "job_id")
        thing = args.get("thing")
        if thing is not None and not isinstance(thing, str):
            raise AdminRequestError("InvalidRequest", "'thing' must be a string")
        return self._run(lambda now: (self._jobs().describe_job(job_id, thing), []))

    def _job_end(self, args: dict[str, Any], how: str) -> Any:
        job_id = _str(args, "job_id")
        force = args.get("force", False)
        if not isinstance(force, bool):
            raise AdminRequestError("InvalidRequest", "'force' must be a boolean")
        if how == "cancel":
            return self._run(lambda now: self._jobs().cancel_job(job_id, now, force))
        return self._run(lambda now: self._jobs().delete_job(job_id, now, force))


def _str(args: dict[str, Any], key: str, default: str | None = None) -> str:
    value = args.get(key, default)
    if not isinstance(value, str):
        raise AdminRequestError("InvalidRequest", f"'{key}' must be a string")
    return value
