"""An agent that no systemd watches builds no STATUS= line every 5 s: nobody would read it, and
building it (spool stats, config digest) was most of an idle gateway's CPU in a fleet simulation."""

from __future__ import annotations

import asyncio
import socket

from agent import config as cfg
from agent.runtime import Agent
from tests.eventually import eventually_async


def _conf(tmp_path) -> cfg.AgentConfig:
    return cfg.validate({"state_dir": str(tmp_path / "state"), "remote": {"shadow_enabled": False,
                         "jobs_enabled": False},
                         "sensors": [{"id": "s1", "driver": "simulated", "interval_s": 1.0}]}, "test")


async def _task_names(agent: Agent) -> set[str]:
    run = asyncio.get_running_loop().create_task(agent.run(signals=False))
    await eventually_async(agent.running.is_set, 20)
    names = set(agent.loops)
    agent.request_stop()
    assert await run == 0
    return names


def test_no_status_loop_without_systemd(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    names = asyncio.run(_task_names(Agent(_conf(tmp_path))))
    assert "committer" in names and "status" not in names


def test_status_loop_when_systemd_listens(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        names = asyncio.run(_task_names(Agent(_conf(tmp_path))))
    assert "status" in names
