"""Remote management: live configuration through the named Device Shadow and allowlisted IoT
Jobs, both over the agent's one MQTT connection (see README.md in this folder).

``RemoteManager`` is the feature's lifecycle: the runtime creates it after the uplink exists,
``await start()``, ``layer()`` on SIGHUP, ``rebind()`` when the connection was rebuilt,
``await stop()`` before the connection stops, and ``status()`` in the agent's status."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agent import config as cfg
from agent.remote import actions as actions_mod
from agent.remote.journal import Journal
from agent.remote.layer import ConfigLayer
from agent.remote.logring import LogRing
from agent.remote.status_source import StatusSource

if TYPE_CHECKING:
    from agent.remote.jobs import JobRunner
    from agent.remote.shadow import ShadowSync
    from agent.runtime import Agent

log = logging.getLogger(__name__)


class RemoteManager:
    def __init__(
        self,
        agent: Agent,
        *,
        restart: Callable[[], None] | None = None,
        run_argv: Callable[[list[str]], Awaitable[tuple[int, str]]] | None = None,
        https_context: ssl.SSLContext | None = None,
        boot_id: Callable[[], str] | None = None,
        rotate: Callable[..., Any] | None = None,
    ) -> None:
        self.agent = agent
        self.conf = agent.conf.remote  # [remote] is local only and read once: changes need a restart
        self.layer_ = ConfigLayer(agent)
        self.logring = LogRing(self.conf.log_ring_lines)
        self.journal = Journal(agent.conf.state_dir)
        self.status_source = StatusSource(agent.status, agent.conf.state_dir)
        self.ctx = actions_mod.ActionContext(
            agent=agent, layer=self.layer_, logring=self.logring, remote=self.conf,
            set_phase=lambda _phase: None, restart=restart or agent.request_stop,
        )
        if run_argv is not None:
            self.ctx.run_argv = run_argv
        if https_context is not None:
            self.ctx.https_context = https_context
        if boot_id is not None:
            self.ctx.boot_id = boot_id
        if rotate is not None:
            self.ctx.rotate = rotate
        self.shadow: ShadowSync | None = None
        self.jobs: JobRunner | None = None

    async def start(self) -> None:
        self.logring.install()
        await self.layer_.load_persisted()
        self._bind()

    def _bind(self) -> None:
        conn, thing = self.agent.conn, self.agent.thing
        if conn is None or not thing:
            return
        if self.conf.shadow_enabled:
            from agent.remote.shadow import ShadowSync

            self.shadow = ShadowSync(
                conn, thing, self.conf.shadow_name, self.layer_, self.status_source,
                min_interval_s=self.conf.reported_min_interval_s, request_timeout_s=self.conf.request_timeout_s,
            )
            self.shadow.start()
        if self.conf.jobs_enabled:
            from agent.remote.jobs import JobRunner

            self.jobs = JobRunner(conn, thing, actions_mod.registry(), self.ctx, self.journal, self.conf)
            self.jobs.start()

    async def rebind(self) -> None:
        """The runtime rebuilt the connection: follow the new one."""
        await self._stop_clients()
        self._bind()

    async def _stop_clients(self) -> None:
        if self.jobs is not None:
            await self.jobs.stop()
        if self.shadow is not None:
            await self.shadow.stop()
        self.jobs = self.shadow = None

    async def stop(self) -> None:
        await self._stop_clients()
        self.logring.remove()

    def layer(self, file_conf: cfg.AgentConfig) -> cfg.AgentConfig:
        return self.layer_.layer(file_conf)

    def status(self) -> dict[str, Any]:
        return {
            "remote_changes": self.layer_.changes,
            "config_errors": [{"path": p, "reason": r} for p, r in self.layer_.errors],
            "shadow": self.shadow.status() if self.shadow else None,
            "jobs": self.jobs.status() if self.jobs else None,
        }
