"""A shadow or jobs request that is answered in the same loop turn as the feature's stop cancels
the waiting loop must still end that loop. With ``asyncio.wait_for`` (Python 3.11) the response
won, the cancel was lost, the loop went back to its queue and the feature's stop waited for it
forever (the likeliest cause of the 213 of 1,000 simulated gateways that never finished stopping)."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

from agent.remote.service_client import call


async def _cancel_as_answered(turns: int) -> bool:
    """A loop like the jobs/shadow worker: one request, then back to waiting for its queue. The
    request is answered, ``turns`` loop turns pass, the loop is cancelled. True when it ended."""
    fut: concurrent.futures.Future[str] = concurrent.futures.Future()
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def worker() -> None:
        await call(fut, 10)
        await queue.get()  # nothing ever comes: only the cancel ends this

    task = asyncio.create_task(worker())
    await asyncio.sleep(0.01)
    fut.set_result("response")
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    if not done:
        task.cancel()  # tidy up: the lost-cancel case
        await asyncio.gather(task, return_exceptions=True)
    return bool(done) and task.cancelled()


@pytest.mark.parametrize("turns", range(8))
def test_cancel_is_never_lost_when_the_answer_arrives_with_it(turns: int) -> None:
    # The answer travels through a few loop turns (awscrt future -> asyncio future -> shield ->
    # waiter); every moment of that path is covered by one of the turn counts.
    assert asyncio.run(_cancel_as_answered(turns))


def test_a_late_answer_still_times_out() -> None:
    async def main() -> None:
        fut: concurrent.futures.Future[str] = concurrent.futures.Future()
        with pytest.raises(TimeoutError):
            await call(fut, -4.95)  # call adds 5 s of grace to the operation's own timeout
        assert not fut.cancelled()  # awscrt completes its own future later

    asyncio.run(main())


def test_the_answer_is_returned() -> None:
    async def main() -> str:
        fut: concurrent.futures.Future[str] = concurrent.futures.Future()
        asyncio.get_running_loop().call_later(0.01, fut.set_result, "ok")
        return await call(fut, 1)

    assert asyncio.run(main()) == "ok"
