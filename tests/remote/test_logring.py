"""Agents hosted in one process share one upload-diagnostics log ring: the root logger is
process-wide, so N rings held the same lines and formatted every record N times (1,000 simulated
gateways refused during a broker restart made a million formats on the shared loop)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from agent.config import RemoteConfig
from agent.feature import Ports
from agent.remote.jobs import JobsFeature
from agent.remote.jobs.logring import LogRing


def _offline_ports() -> Ports:
    async def nothing(*_a: Any) -> Any:
        return None

    return Ports(thing_name="", config=lambda: None, apply=nothing, status=lambda: None,  # type: ignore[arg-type]
                 connection=None, calibrate=nothing, request_stop=lambda: None)


def _rings() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, LogRing)]


def test_agents_in_one_process_share_one_ring_and_format_each_record_once() -> None:
    remote = RemoteConfig(log_ring_lines=50)
    features = [JobsFeature(None, remote) for _ in range(3)]  # type: ignore[arg-type]
    before = len(_rings())

    async def scenario() -> None:
        for f in features:
            await f.start(_offline_ports())
            await f.start(_offline_ports())  # started again (a rebuilt connection): still one user
        assert len(_rings()) == before + 1
        ring = features[0].logring
        assert all(f.logring is ring for f in features)
        n = len(ring.lines())
        logging.getLogger("agent.test").warning("one line")
        assert len(ring.lines()) == n + 1  # formatted and kept once, not once per agent
        await features[0].stop()
        await features[0].stop()  # a second stop does not take the ring from the others
        logging.getLogger("agent.test").warning("still kept")
        assert "still kept" in ring.lines()[-1]
        for f in features[1:]:
            await f.stop()
        assert len(_rings()) == before

    asyncio.run(scenario())
