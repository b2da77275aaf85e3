"""``config-update``: an RFC 7386 merge patch of the managed config (same keys as the shadow's
``desired.config``), through the same validation and apply path. An invalid patch is REJECTED
and changes nothing."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from agent.remote.jobs.actions.base import Action, ActionContext, Params, Progress, Rejected, Result


class ConfigUpdateParams(Params):
    patch: dict[str, Any] = Field(..., description="merge patch in desired.config shape")


async def run(ctx: ActionContext, params: ConfigUpdateParams, progress: Progress) -> Result:
    errors = await ctx.layer.patch_job(params.patch)
    if errors:
        raise Rejected("; ".join(f"{p}: {r}" for p, r in errors))
    return Result({"config_hash": ctx.ports.config().digest()})


ACTION = Action("config-update", ConfigUpdateParams, run)
