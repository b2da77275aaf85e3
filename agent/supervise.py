"""Keeps a long-running loop alive: an exception nobody expected (a bug, a library surprise) is
logged with its traceback, counted, and the loop restarted after a backoff, instead of the task
dying silently while the daemon looks healthy ("degrade, don't die").

Each loop still handles the failures it expects (network, sensor, broker) itself; this is the
last line, not the first. Cancellation (a stop) is never caught."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
HEALTHY_AFTER_S = 60.0  # a loop that ran this long before failing starts its backoff afresh


@dataclass
class Restarts:
    """What status shows for one supervised loop."""

    count: int = 0
    last_error: str | None = None
    last_ts: float | None = None


async def supervised(
    name: str,
    body: Callable[[], Awaitable[None]],
    restarts: Restarts,
    *,
    min_backoff_s: float = MIN_BACKOFF_S,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> None:
    """Run ``body()`` until it returns; restart it whenever it raises."""
    delay = min_backoff_s
    while True:
        started = time.monotonic()
        try:
            await body()
            return
        except Exception as exc:  # not hidden: logged with traceback, counted, restarted
            if time.monotonic() - started >= HEALTHY_AFTER_S:
                delay = min_backoff_s
            restarts.count += 1
            restarts.last_error = f"{type(exc).__name__}: {exc}"[:200]
            restarts.last_ts = time.time()
            log.error("loop crashed; restarting it", exc_info=True,
                      extra={"loop": name, "restarts": restarts.count, "retry_in_s": delay})
        await asyncio.sleep(delay)
        delay = min(max_backoff_s, delay * 2)
