"""The agent worker protocol without agents: a worker answers, exits after ``stop``, and one that
died is named in the error instead of leaving the simulator waiting on its pipe."""

from __future__ import annotations

import asyncio

import pytest

from fleet.workers import AgentWorker, WorkerDied


def test_worker_answers_and_exits_after_stop():
    async def run() -> None:
        w = AgentWorker(0, "ERROR")
        try:
            assert await w.call("status") == {}
            assert await w.call("drain", 0.1) == {}
            assert await w.call("stop", 5.0, 50) == {"errors": {}, "stuck_tasks": []}
            w.proc.join(10)
            assert w.proc.exitcode == 0
        finally:
            w.close()

    asyncio.run(run())


def test_a_dead_worker_is_named():
    async def run() -> None:
        w = AgentWorker(3, "ERROR")
        try:
            assert await w.call("status") == {}
            w.proc.kill()
            w.proc.join(10)
            with pytest.raises(WorkerDied, match=r"agent worker 3 \(pid \d+\) ended during 'status'"):
                await w.call("status")
        finally:
            w.close()

    asyncio.run(run())
