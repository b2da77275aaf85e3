"""Time since the device was (re)connected, on the monotonic clock. A USB-serial adapter that comes
back has usually power-cycled the sensor with it, so the warm-up window restarts on every reopen."""

from __future__ import annotations

import time
from collections.abc import Callable


class WarmupTimer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started: float | None = None

    def restart(self) -> None:
        self._started = self._clock()

    def active(self, warmup_s: float) -> bool:
        if self._started is None:
            return warmup_s > 0
        return self._clock() - self._started < warmup_s
