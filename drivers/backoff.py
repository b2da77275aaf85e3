"""A non-blocking backoff gate. The sampler calls ``read`` on its own schedule; when a device is gone
we must not hammer it (or block the sampler sleeping), so a failed reconnect just closes the gate
until a growing, jittered delay has passed.

Why not tenacity (which the agent uses for provisioning retries): tenacity wraps a call and sleeps
between attempts; here nothing may sleep, the caller only asks "may I try again yet?" on its own
schedule, a shape tenacity does not offer."""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        self._initial = initial_s
        self._max = max_s
        self._clock = clock
        self._rng = rng
        self.failures = 0
        self._next_at = 0.0

    def ready(self) -> bool:
        return self._clock() >= self._next_at

    def remaining_s(self) -> float:
        return max(0.0, self._next_at - self._clock())

    def failure(self) -> float:
        """Record a failed attempt; returns the delay before the next one (half to full exponential)."""
        self.failures += 1
        delay = min(self._max, self._initial * 2 ** min(self.failures - 1, 32))
        delay *= 0.5 + 0.5 * self._rng()
        self._next_at = self._clock() + delay
        return delay

    def success(self) -> None:
        self.failures = 0
        self._next_at = 0.0
