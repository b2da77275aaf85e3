"""The reconnect schedule, as a pure policy (no clock, no I/O) so the fleet simulator can replay it
for thousands of gateways.

Full jitter (delay = uniform(0, min(max, min * 2**n))) spreads a fleet that lost its broker at the
same moment over the whole window, so a broker that comes back is not hit by every gateway at
once. That is the right answer when the broker refused or was down while the network was fine. It
is the wrong answer when this gateway's own network was down: after a long outage n is large and
the wait is anything up to the maximum, while only this gateway (or the few behind the same cell)
is coming back. ``network_returned`` therefore resets n and answers with a small jitter instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class ReconnectPolicy:
    min_delay_s: float
    max_delay_s: float
    network_return_jitter_s: float = 2.0
    # A connection that lived this long was a real success: the next loss starts the backoff over
    # (awscrt's own default, min_connected_time_to_reset_reconnect_delay_ms).
    stable_after_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        """After a failed attempt or a lost connection: full jitter over a window that doubles."""
        window = min(self.max_delay_s, self.min_delay_s * 2 ** min(self.failures, 32))
        self.failures += 1
        return self.rng.uniform(0, window)

    def lost(self, connected_for_s: float) -> float:
        """A connection was lost after ``connected_for_s``: the delay before the first new attempt."""
        if connected_for_s >= self.stable_after_s:
            self.failures = 0
        return self.next_delay()

    def network_returned(self) -> float:
        """The network was seen down and is now seen up: try again soon, backoff forgotten."""
        self.failures = 0
        return self.rng.uniform(0, self.network_return_jitter_s)
