"""The local allowlist of job actions (the types every action uses are in base.py). ``registry``
is the whole allowlist: an action not in it is REJECTED."""

from __future__ import annotations

from agent.remote.jobs.actions import acknowledge, calibrate, config_update, diagnostics, lifecycle, rotate
from agent.remote.jobs.actions.base import (
    Action,
    ActionContext,
    ActionEnv,
    Failed,
    Params,
    Progress,
    Rejected,
    Result,
    details,
    parse,
)

__all__ = ["Action", "ActionContext", "ActionEnv", "Failed", "Params", "Progress", "Rejected", "Result", "details",
           "parse", "registry"]


def registry() -> dict[str, Action]:
    acts = [
        config_update.ACTION,
        lifecycle.RESTART,
        lifecycle.REBOOT,
        calibrate.ACTION,
        rotate.ACTION,
        diagnostics.ACTION,
        acknowledge.ACTION,
    ]
    return {a.name: a for a in acts}
