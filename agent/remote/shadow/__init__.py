"""The named Device Shadow as a feature (agent/feature.py): the cloud's ``desired.config`` is
laid over the local file through the shared config layer, and ``reported`` carries what is
applied and a compact status (README.md in this folder). Works only with a connection."""

from __future__ import annotations

from typing import Any

from agent.config import RemoteConfig
from agent.feature import Ports
from agent.remote.layer import ConfigLayer
from agent.remote.shadow.status_source import StatusSource
from agent.remote.shadow.sync import ShadowSync


class ShadowFeature:
    name = "shadow"
    status_key = "remote.shadow"

    def __init__(self, layer: ConfigLayer, remote: RemoteConfig) -> None:
        self.layer = layer
        self.remote = remote
        self.sync: ShadowSync | None = None

    async def start(self, ports: Ports) -> None:
        conn, thing = ports.connection, ports.thing_name
        if conn is None or not thing:
            return
        source = StatusSource(ports.status, ports.config().state_dir)
        self.sync = ShadowSync(conn, thing, self.remote.shadow_name, self.layer, source,
                               min_interval_s=self.remote.reported_min_interval_s,
                               request_timeout_s=self.remote.request_timeout_s)
        self.sync.start()

    async def stop(self) -> None:
        if self.sync is not None:
            await self.sync.stop()
            self.sync = None

    def status(self) -> dict[str, Any] | None:
        return self.sync.status() if self.sync is not None else None
