"""A batch's billed size (payload + topic + MQTT5 properties) never exceeds batch_max_bytes, so by
default every batch costs exactly one 5 KB IoT Core message."""

import pytest

from agent import payload
from agent.config import UplinkConfig
from agent.reading import Reading
from agent.uplink import Uplink
from drivers.simulated import SimulatedDriver, SimulatedSettings


def stream(n):
    drv = SimulatedDriver(SimulatedSettings(seed=5))
    out, seq, ts = [], 1, 1_700_000_000_000
    while len(out) < n:
        for m in drv.read():
            out.append(Reading(seq, ts, True, "sim-1", m.quantity, m.value, m.unit, tuple(sorted(m.flags))))
            seq += 1
        ts += 1000
    return out


@pytest.mark.parametrize("encoding", ["compact", "json"])
@pytest.mark.parametrize("budget", [5120, 10240, 128 * 1024])
def test_billed_size_within_budget(encoding, budget):
    conf = UplinkConfig(encoding=encoding, batch_max_bytes=budget)
    up = Uplink(spool=None, conn=None, conf=conf, device="gw-0001", site="site-1")  # type: ignore[arg-type]
    readings = stream(2 * budget if encoding == "compact" else budget // 50)
    body, n = payload.fit("gw-0001", readings, encoding, up.max_payload)
    assert n < len(readings)  # the budget, not the input, bounded the batch
    billed = len(body) + len(up.topic) + len(up.content_type) + sum(len(k) + len(v) for k, v in up.user_properties)
    assert billed <= budget
    # ...and the batch fills the budget: not more than 10% of it is left unused.
    assert billed > 0.9 * budget, (billed, budget)
