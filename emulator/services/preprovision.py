"""The project's pre-provisioning hook (``cloud/preprovision``) wired to the emulator: the same pure
function the Lambda runs, with the emulator's registry as its thing directory. ``Emulator`` and
``emulator serve`` use it unless a test passes a hook of its own."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from cloud.preprovision.hook import HookConfig, respond
from cloud.preprovision.ports import Allowlist, LookupFailed, ThingView
from emulator.registry import Registry
from emulator.services.provisioning import Hook


class RegistryDirectory:
    """``ThingDirectory`` over the emulator's SQLite registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def describe(self, thing_name: str) -> ThingView | None:
        try:
            thing = self.registry.thing(thing_name)
        except sqlite3.Error as exc:
            raise LookupFailed(f"emulator registry: {exc}") from None
        if thing is None:
            return None
        return ThingView(frozenset(thing.principals), dict(thing.attributes))


def project_hook(registry: Registry, claim_certificate_ids: Iterable[str], allowlist: Allowlist) -> Hook:
    config = HookConfig(claim_certificate_ids=frozenset(claim_certificate_ids))
    directory = RegistryDirectory(registry)

    def hook(event: dict[str, Any]) -> Mapping[str, Any]:
        return respond(event, config, directory, allowlist)

    return hook
