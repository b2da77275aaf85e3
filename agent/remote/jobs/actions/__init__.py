"""The local allowlist of job actions (the types every action uses are in base.py). ``registry``
is the whole allowlist: an action not in it is REJECTED.

An action's module (its parameter schema; for upload-diagnostics also http.client) is imported when
a job first names it, not when the daemon starts: most gateways never run most actions, and the
daemon carries only what it runs (docs/architecture.md, "Memory")."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

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

__all__ = ["ALLOWLIST", "Action", "ActionContext", "ActionEnv", "Failed", "Params", "Progress", "Rejected", "Result",
           "details", "parse", "registry"]

# Action name -> (module in this package, attribute): the whole allowlist.
ALLOWLIST: dict[str, tuple[str, str]] = {
    "config-update": ("config_update", "ACTION"),
    "restart-agent": ("lifecycle", "RESTART"),
    "reboot": ("lifecycle", "REBOOT"),
    "calibrate-sensor": ("calibrate", "ACTION"),
    "rotate-certificate": ("rotate", "ACTION"),
    "upload-diagnostics": ("diagnostics", "ACTION"),
    "acknowledge-alarm": ("acknowledge", "ACTION"),
}


class _Registry(Mapping[str, Action]):
    """The allowlist as a mapping that imports an action's module on first lookup."""

    def __init__(self) -> None:
        self._loaded: dict[str, Action] = {}

    def __getitem__(self, name: str) -> Action:
        action = self._loaded.get(name)
        if action is None:
            module, attr = ALLOWLIST[name]  # KeyError for a name not allowlisted: Mapping.get -> None
            action = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
            self._loaded[name] = action
        return action

    def __iter__(self) -> Iterator[str]:
        return iter(ALLOWLIST)

    def __len__(self) -> int:
        return len(ALLOWLIST)


def registry() -> Mapping[str, Action]:
    return _Registry()
