"""How a fleet's reconnects spread after a broker outage, replayed from the agent's own reconnect
policy (``agent.link.backoff.ReconnectPolicy``) without a broker: every gateway was connected long
enough for its backoff to start over, loses the broker at 0, retries on its full-jitter schedule
while the broker is down, and connects at its first attempt after the broker returns. The broker's
own admission rate is left out (the fleet simulator measures the real thing); this is what chose
``connection.min_reconnect_delay_ms`` (agent/link/README.md)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from agent.link.backoff import ReconnectPolicy
from fleet.procstat import percentile


@dataclass(frozen=True)
class Spread:
    outage_s: float
    first_second_share: float  # of the fleet, connecting within 1 s of the broker's return
    p50_s: float
    p95_s: float


def replay(gateways: int, outage_s: float, min_delay_s: float, max_delay_s: float, seed: int = 1) -> Spread:
    delays = []
    for i in range(gateways):
        policy = ReconnectPolicy(min_delay_s, max_delay_s, rng=random.Random(seed * 1_000_003 + i))
        t = policy.lost(connected_for_s=policy.stable_after_s)
        while t < outage_s:  # this attempt found the broker down
            t += policy.next_delay()
        delays.append(t - outage_s)
    return Spread(outage_s, sum(d < 1.0 for d in delays) / gateways,
                  percentile(delays, 50) or 0.0, percentile(delays, 95) or 0.0)


def worst(gateways: int, min_delay_s: float, max_delay_s: float, outages: list[float], seed: int = 1) -> Spread:
    """The outage length (of ``outages``) that puts the largest share in the first second."""
    return max((replay(gateways, o, min_delay_s, max_delay_s, seed) for o in outages),
               key=lambda s: s.first_second_share)


OUTAGES = [i / 4 for i in range(121)]  # 0 to 30 s in quarter seconds
