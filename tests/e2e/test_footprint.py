"""The daemon carries only what it runs (issue 11, footprint): a steady ``methane-agent run``,
connected and publishing, has loaded none of ``bench.footprint_probe.NOT_IN_RUN``. One short run;
no memory figure is asserted here (bench/bench_footprint.py measures RSS)."""

from __future__ import annotations

import json

from bench.footprint_probe import not_in_run
from tests.e2e.conftest import AgentProc, write_config


def test_steady_daemon_loads_nothing_it_does_not_run(emulator, tmp_path):
    out = tmp_path / "modules.json"
    config = write_config(tmp_path / "agent.toml", emulator.info, tmp_path / "state")
    agent = AgentProc(config, tmp_path / "agent.log", env={"FOOTPRINT_MODULES_OUT": str(out)},
                      module="bench.footprint_probe").start()  # fmt: skip
    try:
        # Connected, and batches encoded, published and acknowledged: the steady state.
        agent.wait_status(lambda s: s.get("uplink", {}).get("batches_acked", 0) >= 2, timeout=60)
    finally:
        rc, _ = agent.terminate()
    assert rc == 0
    loaded = json.loads(out.read_text())
    assert {"agent.runtime", "agent.connection", "agent.payload.compact", "agent.remote.jobs.runner"} <= set(loaded)
    assert not_in_run(loaded) == []
