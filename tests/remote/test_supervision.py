"""The shadow and jobs loops survive what nobody expected (issue 10 item 6): logged with the
traceback, counted in status, restarted with backoff; a crashing action ends its job FAILED."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from agent.remote.jobs.actions import Action, ActionContext, Params, Progress, Result
from agent.remote.jobs.journal import Journal
from agent.runtime import Agent
from tests.remote.conftest import eventually, eventually_async, jobs_of, jobs_or_none, running, shadow_of


class _OnceBroken:
    """Wraps a collaborator so that its first call of ``method`` raises a bug-like error."""

    def __init__(self, real: Any, method: str) -> None:
        self.real, self.method, self.broken = real, method, False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.real, name)
        if name != self.method or self.broken:
            return attr

        def boom(*_a: Any, **_k: Any) -> Any:
            self.broken = True
            raise KeyError("a bug")
        return boom


def _crashes(caplog, loop: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.getMessage() == "loop crashed; restarting it" and getattr(r, "loop", "") == loop and r.exc_info]


def test_shadow_loop_crash_is_logged_counted_and_restarted(gateway, admin, caplog):
    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            shadow = await eventually(lambda: (s := shadow_of(agent)) is not None and s.reports > 0 and s)
            reports = shadow.reports
            shadow.status_source = _OnceBroken(shadow.status_source, "build")  # type: ignore[assignment]
            await asyncio.to_thread(admin.shadow_set_desired, gateway.thing,
                                    {"config": {"uplink": {"batch_max_age_s": 7}}}, "methane-agent")
            await eventually(lambda: agent.status().features["remote"]["shadow"]["restarts"] == 1)
            # Restarted: the change still reaches reported.
            await eventually(lambda: shadow.reports > reports and agent.conf.uplink.batch_max_age_s == 7)
        assert _crashes(caplog, "shadow")

    asyncio.run(scenario())


class _NoParams(Params):
    pass


async def _buggy(ctx: ActionContext, params: _NoParams, progress: Progress) -> Result:
    raise ZeroDivisionError("bug in an action")


def test_jobs_loop_and_action_crashes(gateway, admin, caplog):
    def final(job_id: str) -> dict[str, Any] | None:
        ex = admin.job_describe(job_id)["executions"][0]
        return ex if ex["status"] not in ("QUEUED", "IN_PROGRESS") else None

    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            jobs = await eventually(lambda: jobs_or_none(agent))
            await eventually(lambda: agent.conn is not None and agent.conn.connected.is_set())
            jobs.actions = {**jobs.actions, "buggy": Action("buggy", _NoParams, _buggy)}  # the allowlist is read-only
            job_id = f"job-{uuid.uuid4().hex[:8]}"
            await asyncio.to_thread(admin.job_create, {"action": "buggy"}, [gateway.thing], job_id)
            ex = await eventually_async(lambda: asyncio.to_thread(final, job_id))
            assert ex["status"] == "FAILED" and "unexpectedly" in ex["statusDetails"]["reason"], ex
            assert any(r.getMessage() == "job action crashed" and r.exc_info for r in caplog.records)
            # The loop itself: its journal read raises once. The start-next that followed the
            # failed job may still be in flight and take the next job before the broken read, so
            # the crash comes before or after that job; either way the loop restarts once and the
            # job after the crash still runs.
            jobs.journal = _OnceBroken(Journal(gateway.state_dir), "read")  # type: ignore[assignment]
            for _ in range(2):
                job_id = f"job-{uuid.uuid4().hex[:8]}"
                await asyncio.to_thread(admin.job_create, {"action": "config-update", "params": {"patch": {}}},
                                        [gateway.thing], job_id)
                ex = await eventually_async(lambda: asyncio.to_thread(final, job_id), 30)
                assert ex["status"] == "SUCCEEDED", ex
                await eventually_async(lambda: jobs_of(agent).status()["restarts"] == 1)
            assert jobs_of(agent).status()["restarts"] == 1
        assert _crashes(caplog, "jobs")

    asyncio.run(scenario())
