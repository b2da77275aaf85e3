"""IoT Jobs as a feature (agent/feature.py): one job at a time, only allowlisted actions
(README.md in this folder). The runner and its IotJobsClientV2 exist only while the agent has a
connection; the in-memory log ring for upload-diagnostics lives as long as the feature."""

from __future__ import annotations

import logging
from typing import Any

from agent.config import RemoteConfig
from agent.feature import Ports
from agent.remote.jobs.actions import ActionContext, ActionEnv, registry
from agent.remote.jobs.journal import Journal
from agent.remote.jobs.logring import LogRing
from agent.remote.jobs.runner import JobRunner
from agent.remote.layer import ConfigLayer

log = logging.getLogger(__name__)


class JobsFeature:
    name = "jobs"
    status_key = "remote.jobs"

    def __init__(self, layer: ConfigLayer, remote: RemoteConfig, env: ActionEnv | None = None) -> None:
        self.layer = layer
        self.remote = remote
        self.env = env or ActionEnv()
        self.logring = LogRing.shared(remote.log_ring_lines)
        self._ring_installed = False
        self.runner: JobRunner | None = None

    async def start(self, ports: Ports) -> None:
        if not self._ring_installed:
            self.logring.install()
            self._ring_installed = True
        conn, thing = ports.connection, ports.thing_name
        if conn is None or not thing:
            return  # offline: nothing to take jobs from
        ctx = ActionContext(ports=ports, layer=self.layer, logring=self.logring, remote=self.remote, env=self.env,
                            set_phase=lambda _phase: None)
        self.runner = JobRunner(conn, thing, registry(), ctx, Journal(ports.config().state_dir), self.remote)
        self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None
        if self._ring_installed:
            self.logring.remove()
            self._ring_installed = False

    def status(self) -> dict[str, Any] | None:
        return self.runner.status() if self.runner is not None else None
