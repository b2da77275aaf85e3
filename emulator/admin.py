"""Python API over the running emulator's admin socket (what the ``emulator shadow`` and
``emulator job`` commands use, and what tests call). Every method raises
``AdminRequestError(code, message)`` when the emulator refuses or is not running."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emulator.services.admin_socket import AdminRequestError, request

__all__ = ["Admin", "AdminRequestError"]


class Admin:
    def __init__(self, state_dir: Path | str, timeout_s: float = 15.0) -> None:
        self.state_dir = Path(state_dir)
        self.timeout_s = timeout_s

    def _req(self, op: str, **args: Any) -> Any:
        return request(self.state_dir, op, {k: v for k, v in args.items() if v is not None}, self.timeout_s)

    def shadow_get(self, thing: str, shadow: str | None = None) -> dict[str, Any]:
        return dict(self._req("shadow.get", thing=thing, shadow=shadow))

    def shadow_set_desired(self, thing: str, desired: Any, shadow: str | None = None) -> dict[str, Any]:
        """Merge ``desired`` into the shadow (publishing delta/documents); returns the new document."""
        return dict(self._req("shadow.set_desired", thing=thing, shadow=shadow, desired=desired))

    def job_create(
        self,
        document: Any,
        things: list[str] | None = None,
        job_id: str | None = None,
        timeout_minutes: int | None = None,
        *,
        thing_groups: list[str] | None = None,
        rollout: dict[str, Any] | None = None,
        abort: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``rollout``/``abort`` in IoT Core's jobExecutionsRolloutConfig / abortConfig shapes."""
        return dict(self._req("job.create", document=document, things=things, job_id=job_id,
                              timeout_minutes=timeout_minutes, thing_groups=thing_groups, rollout=rollout,
                              abort=abort))

    def job_list(self) -> list[dict[str, Any]]:
        return list(self._req("job.list"))

    def job_describe(self, job_id: str, thing: str | None = None) -> dict[str, Any]:
        return dict(self._req("job.describe", job_id=job_id, thing=thing))

    def job_cancel(self, job_id: str, force: bool = False) -> dict[str, Any]:
        return dict(self._req("job.cancel", job_id=job_id, force=force))

    def job_delete(self, job_id: str, force: bool = False) -> dict[str, Any]:
        return dict(self._req("job.delete", job_id=job_id, force=force))
