"""``restart-agent`` and ``reboot``. Both journal their phase before the irreversible step, so the
next agent process reports the final status exactly once (agent/remote/jobs/runner.py). The reboot runs
a fixed argv from the LOCAL config (default ``systemctl reboot``), never a shell, and is refused
unless ``remote.allow_reboot`` is true."""

from __future__ import annotations

import asyncio

from agent.config import RemoteConfig
from agent.remote.jobs.actions.base import Action, ActionContext, Failed, Params, Progress, Result


class NoParams(Params):
    pass


async def restart_agent(ctx: ActionContext, params: NoParams, progress: Progress) -> Result:
    ctx.set_phase("restarting")
    ctx.ports.request_stop()
    await asyncio.Event().wait()  # shutdown cancels this; the next process finishes the job
    return Result(awaits="restart")


async def reboot(ctx: ActionContext, params: NoParams, progress: Progress) -> Result:
    ctx.set_phase("rebooting")
    code, output = await ctx.env.run_argv(list(ctx.remote.reboot_command))
    if code != 0:
        raise Failed(f"reboot command exited {code}: {output.strip()[-100:]}")
    await asyncio.Event().wait()  # the system stops us; the action timeout catches a no-op
    return Result(awaits="reboot")


def _reboot_refused(conf: RemoteConfig) -> str | None:
    return None if conf.allow_reboot else "reboot is disabled on this device (remote.allow_reboot = false)"


RESTART = Action("restart-agent", NoParams, restart_agent)
REBOOT = Action("reboot", NoParams, reboot, refuse=_reboot_refused)
