"""Draining a backlog must stay under IoT Core's 100 publishes/s per connection (excess is discarded
by IoT Core). The emulator's broker plugin counts publishes per connection and second; the same
drain with the client-side limits switched off shows the check can fail."""

from __future__ import annotations

import pytest

from emulator import authz
from emulator.recorder import TelemetryRecorder
from tests.e2e.conftest import write_config
from tests.eventually import eventually


@pytest.mark.parametrize("limits", [True, False], ids=["limits-on", "limits-off"])
def test_backlog_drain_respects_100_publishes_per_second(fleet_emulator, tmp_path, agent_factory, limits):
    emu = fleet_emulator
    emu.add_component(TelemetryRecorder())  # a subscriber: the broker delivers what it counts
    info = emu.info
    thing = info.device.thing_name
    config = write_config(tmp_path / "agent.toml", info, tmp_path / "state", interval=0.01, encoding="json")
    env = {
        # ~3 readings per publish, so a backlog of a few thousand readings needs > 1000 publishes.
        "METHANE_AGENT__UPLINK__BATCH_MAX_BYTES": "600",
        # Many in flight, so that without the limits even a loaded CI machine exceeds 100/s.
        "METHANE_AGENT__UPLINK__MAX_INFLIGHT": "32",
        "METHANE_AGENT__CONNECTION__IOT_CORE_LIMITS": "true" if limits else "false",
    }
    emu.broker.stop()
    agent = agent_factory(config, env=env).start()
    agent.wait_status(lambda s: s["spool"]["readings"] >= 3000, timeout=60)
    emu.broker.start()
    st = agent.wait_status(lambda s: s["uplink"].get("batches_acked", 0) >= 400, timeout=90)
    # The plugin lists connected clients only: read the counters while the agent is connected.
    stats_file = emu.fleet.plugin.stats_file
    stats: dict = eventually(lambda: (s := authz.read_stats(stats_file).get(thing, {})).get("in", 0) >= 400 and s,
                             15, 0.2, what=lambda: authz.read_stats(stats_file))
    rc, _ = agent.terminate()
    assert rc == 0
    if limits:
        # The token bucket may let a second's boundary see slightly more than its share.
        assert stats["max_per_s"] <= 105, stats
    else:
        assert stats["max_per_s"] > 105, stats
    assert st["uplink"]["failures"] == 0
