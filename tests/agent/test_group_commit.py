"""Group commit in the running agent: readings wait in RAM at most commit_interval_s (plus
scheduling slack), and are not committed one by one."""

from __future__ import annotations

import asyncio

import pytest

from agent import config as cfg
from agent.runtime import Agent
from tests.eventually import eventually_async


@pytest.mark.parametrize("interval", [0.5, 2.0])
def test_readings_wait_at_most_one_commit_interval(tmp_path, interval):
    conf = cfg.validate({
        "state_dir": str(tmp_path / "state"),
        "spool": {"commit_interval_s": interval, "min_free_disk_bytes": 1 << 20},
        "sensors": [{"id": "sim", "driver": "simulated", "interval_s": 0.05}],
    })
    rate = 4 / 0.05  # readings per second (4 channels)
    samples: list[int] = []
    commits: list[int] = []

    async def scenario() -> None:
        agent = Agent(conf)
        task = asyncio.create_task(agent.run())
        await eventually_async(agent.running.is_set)
        real_commit = agent.spool.commit

        def counting_commit() -> int:
            n = real_commit()
            if n:
                commits.append(n)
            return n

        agent.spool.commit = counting_commit  # type: ignore[method-assign]
        for _ in range(int((3 * interval + 1) / 0.05)):
            samples.append(agent.spool.stats().pending_uncommitted)
            await asyncio.sleep(0.05)
        agent.request_stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    # Never more in RAM than one interval's worth (+30% slack for a loaded machine).
    assert max(samples) <= rate * interval * 1.3 + 8, (max(samples), rate * interval)
    # Grouped: each commit carries many readings, not one. The first and the last are partial by
    # when the test starts watching and stops (a loaded machine moves those, not the policy).
    steady = commits[1:-1]
    assert steady and min(steady) >= rate * interval * 0.5, commits


def test_unusable_status_socket_path_does_not_stop_the_agent(tmp_path):
    """A state_dir whose path is too long for a Unix socket (108 bytes) costs the status socket,
    not the agent: sampling and spooling go on."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    conf = cfg.validate({
        "state_dir": str(deep),
        "spool": {"commit_interval_s": 0.2, "min_free_disk_bytes": 1 << 20},
        "sensors": [{"id": "sim", "driver": "simulated", "interval_s": 0.05}],
    })
    assert len(str(conf.status_socket)) > 108

    async def scenario() -> int:
        agent = Agent(conf)
        task = asyncio.create_task(agent.run())
        await eventually_async(lambda: task.done() or (agent.running.is_set() and agent.spool.stats().next_seq > 1))
        assert not task.done()
        committed = agent.spool.stats().next_seq - 1
        agent.request_stop()
        await asyncio.wait_for(task, 10)
        return committed

    assert asyncio.run(scenario()) > 0
