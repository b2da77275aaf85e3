"""A revoked certificate: the agent says so clearly in its status, keeps sampling into the spool,
and retries with backoff instead of storming the broker."""

from __future__ import annotations

import time

from agent.cli import main as cli_main
from emulator.pki import cert_id
from tests.e2e.conftest import write_config


def test_revoked_certificate_gives_clear_status_not_a_storm(fleet_emulator, tmp_path, agent_factory, capsys):
    emu = fleet_emulator
    info = emu.info
    config = write_config(tmp_path / "agent.toml", info, tmp_path / "state")
    agent = agent_factory(config).start()
    agent.wait_status(lambda s: s["uplink"].get("readings_acked", 0) > 0)
    cid = cert_id(info.device.cert_file.read_bytes())
    assert cli_main(["emulator", "cert", "revoke", cid, "--state-dir", str(info.state_dir)]) == 0
    st = agent.wait_status(lambda s: s["uplink"].get("certificate_refused") is True, timeout=30)
    failures_then = st["uplink"]["connect_failures"]
    time.sleep(8)
    st = agent.wait_status(lambda s: True)
    # Backoff doubles from 0.2 s to the test config's 2 s cap (full jitter): a handful per 8 s,
    # not hundreds.
    assert st["uplink"]["connect_failures"] - failures_then <= 20, st["uplink"]
    assert st["uplink"]["connected"] is False
    assert st["spool"]["readings"] > 0  # still sampling into the spool
    assert st["sensors"][0]["state"] == "ok"
    agent_out = agent.log.read_text()
    assert "broker refused the certificate" in agent_out
    assert agent_out.count("broker refused the certificate") == 1  # said once, not per attempt
    rc, _ = agent.terminate()
    assert rc == 0
