"""The remote configuration layers laid over the local file's config, validated, bounded by the
file's ``[remote.bounds]`` (bounds.py), applied through the runtime's one apply path and persisted
(overlay.py). Shared by the shadow and the jobs features; the runtime owns it (SIGHUP lays the
layers over the reloaded file).

Two layers: what config-update jobs patched in, and on top the shadow's ``desired.config`` (the
shadow wins where both set a key; job keys the shadow leaves alone stay). All changes are
serialised by one lock, so a delta, a fresh get after a reconnect and a job never interleave. A
change is all-or-nothing: one bad key rejects the whole document and the running config stays."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent import config as cfg
from agent.merge_patch import merge_patch
from agent.remote import bounds, overlay
from agent.remote.managed import ManagedError, managed_view, to_config

log = logging.getLogger(__name__)

ConfigErrors = list[tuple[str, str]]


def _deep_merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    return merge_patch(low, high)  # high holds no nulls: a plain recursive merge


class ConfigLayer:
    def __init__(
        self,
        base: cfg.AgentConfig,
        *,
        running: Callable[[], cfg.AgentConfig],
        apply: Callable[[cfg.AgentConfig], Awaitable[list[str]]],
        spool_bytes: Callable[[], int],
    ) -> None:
        """``base``: the local file's config, before any remote layer; ``running``: the config in
        force; ``apply``: the one apply path; ``spool_bytes``: what the spool holds now (bounds)."""
        self.base = base
        self._running = running
        self._apply = apply
        self._spool_bytes = spool_bytes
        self.layers: dict[str, dict[str, Any]] = {"job": {}, "shadow": {}}
        self.errors: ConfigErrors = []
        self.shadow_version: int | None = None
        self.changes = 0
        self._lock = asyncio.Lock()
        self._view: tuple[cfg.AgentConfig, dict[str, Any]] | None = None

    @property
    def state_dir(self) -> Path:
        return self.base.state_dir

    def combined(self, layers: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        ly = self.layers if layers is None else layers
        return _deep_merge(ly.get("job", {}), ly.get("shadow", {}))

    async def load_persisted(self) -> None:
        """On start: the overlay file on top of the file config, through the same path."""
        layers, err = overlay.load(self.state_dir)
        if err:
            log.error("remote config overlay ignored", extra={"error": err})
            self.errors = [("overlay", err)]
            return
        if any(layers.values()):
            errors = await self._set(layers, None, persist=False)
            if errors:
                log.error("remote config overlay no longer fits the local config; ignored",
                          extra={"errors": errors})

    def layer(self, file_conf: cfg.AgentConfig) -> cfg.AgentConfig:
        """SIGHUP: the new file config with the remote layers on top (or the file alone if they
        no longer validate against it)."""
        self.base = file_conf
        doc = self.combined()
        if not doc:
            return file_conf
        try:
            return self._bounded(file_conf, doc)
        except ManagedError as exc:
            self.errors = exc.errors
            log.error("remote config layer does not fit the reloaded file; using the file alone",
                      extra={"errors": exc.errors})
            return file_conf

    async def set_shadow(self, doc: Any, version: int | None) -> ConfigErrors:
        if not isinstance(doc, dict):
            return [("config", "must be an object")]
        return await self._set({**self.layers, "shadow": doc}, version)

    async def patch_job(self, patch: Any) -> ConfigErrors:
        """A config-update job: an RFC 7386 merge patch on the job layer."""
        if not isinstance(patch, dict):
            return [("config", "must be an object")]
        return await self._set({**self.layers, "job": merge_patch(self.layers["job"], patch)}, self.shadow_version)

    async def _set(
        self, layers: dict[str, dict[str, Any]], version: int | None, *, persist: bool = True
    ) -> ConfigErrors:
        """Make ``layers`` the remote layers. Returns [] when applied (or already in force), else
        the errors; on error nothing changed."""
        async with self._lock:
            try:
                new = self._bounded(self.base, self.combined(layers))
            except ManagedError as exc:
                self.errors = exc.errors
                log.warning("remote config rejected; nothing changed", extra={"errors": exc.errors})
                return exc.errors
            if new != self._running():
                try:
                    await self._apply(new)
                except cfg.ConfigRejected as exc:
                    self.errors = [("config", str(exc))]
                    return self.errors
                self.changes += 1
            self.layers, self.shadow_version, self.errors = layers, version, []
            if persist:
                try:
                    overlay.save(self.state_dir, layers, version)
                except OSError as exc:
                    # Applied but not durable: say so; the next get after a restart re-applies it.
                    self.errors = [("config", f"applied but not persisted: {exc}")]
            return self.errors

    def _bounded(self, base: cfg.AgentConfig, doc: dict[str, Any]) -> cfg.AgentConfig:
        """``doc`` over ``base``, validated and within the file's ``[remote.bounds]``."""
        new = to_config(base, doc)
        errors = bounds.check(base, new, running=self._running(), spool_bytes=self._spool_bytes())
        if errors:
            raise ManagedError(errors)
        return new

    def reported(self) -> dict[str, Any]:
        """The managed view of the applied config, recomputed only when the config object changed
        (every apply replaces it; the shadow worker asks every second)."""
        conf = self._running()
        if self._view is None or self._view[0] is not conf:
            self._view = (conf, managed_view(conf))
        return self._view[1]

    def status(self) -> dict[str, Any]:
        return {"remote_changes": self.changes, "config_errors": [{"path": p, "reason": r} for p, r in self.errors]}
