"""The agent on a link that dies the way a 5G bearer does (packets vanish: no FIN, no RST), with the
emulator across a veth pair in another network namespace (tests/netfault/harness.py).

- A half-open outage is noticed by the connection's own ping within 1.5 x keep-alive, and status
  says why (the ping timeout, not the uplink's "no PUBACK"), since when, and what comes next.
- Once the link is back the first PUBACK follows promptly, not after whatever the reconnect
  backoff had grown to.
- Nothing committed is lost or evicted, and nothing the agent expected is logged as an ERROR."""

from __future__ import annotations

import time

import pytest

from tests.eventually import eventually
from tests.netfault.harness import EmulatorInNs, NetFault, agent_config, agent_in_ns

KEEP_ALIVE_S = 30
PROBE_S = 5.0
# Restore -> first PUBACK: the next probe (PROBE_S), the network-returned jitter (2 s), TLS +
# CONNACK + one batch; the slack covers a loaded CI machine. Without the network watch the wait is
# the full-jitter backoff, up to max_reconnect_delay_ms (60 s).
PROMPT_S = PROBE_S + 2 + 8

pytestmark = pytest.mark.slow


def _drain_and_check(net: NetFault, emu: EmulatorInNs, config, tmp_path, thing: str) -> None:
    """Restart the agent with sampling off until its spool is empty; the recorder must then hold
    every sequence number 1..N."""
    agent = agent_in_ns(net, config, tmp_path / "drain.log", env={"METHANE_AGENT__SENSORS__0__ENABLED": "false"})
    agent.start()
    try:
        st = agent.wait_status(lambda s: s["spool"]["readings"] == 0 and s["uplink"].get("connected"), 90)
        assert agent.terminate()[0] == 0
    finally:
        agent.kill()
    last = st["spool"]["next_seq"] - 1
    assert st["spool"]["evicted_routine"] == 0 and st["spool"]["evicted_alarm"] == 0
    got = eventually(lambda: (g := emu.telemetry(thing, upto=last))["received"] >= last and g, 30, 0.5,
                     what=lambda: emu.telemetry(thing, upto=last))
    assert got["gaps"] == [], got
    assert got["last_seq"] == last


def _errors(log_text: str) -> list[str]:
    return [line for line in log_text.splitlines() if "level=error" in line]


def test_half_open_outage_detected_then_resumed_promptly_nothing_lost(net, emu, tmp_path):
    info = emu.info()
    config = agent_config(tmp_path / "agent.toml", info, emu.port, tmp_path / "state",
                          keep_alive_s=KEEP_ALIVE_S, probe_interval_s=PROBE_S)
    agent = agent_in_ns(net, config, tmp_path / "agent.log").start()
    try:
        agent.wait_status(lambda s: s["uplink"].get("readings_acked", 0) >= 50, 60)
        dropped_at = time.time()
        net.blackhole()
        st = agent.wait_status(lambda s: not s["uplink"]["connected"], 1.5 * KEEP_ALIVE_S + 30)
        link = st["uplink"]["link"]
        # The connection's own clock: when it declared the link down, against when packets stopped.
        assert link["down_since_ts"] - dropped_at <= 1.5 * KEEP_ALIVE_S + 1, (link, dropped_at)
        assert "PING_RESPONSE_TIMEOUT" in st["uplink"]["last_error"], st["uplink"]
        assert link["failure_kind"] == "network"

        st = agent.wait_status(lambda s: s["uplink"]["link"]["network"] == "down"
                               and s["uplink"]["link"]["connect_attempts"] >= 1, 60)
        link = st["uplink"]["link"]
        assert link["down_for_s"] > 0
        assert link["state"] in ("waiting", "connecting")
        if link["state"] == "waiting":
            assert link["next_attempt_ts"] is not None and link["next_attempt_in_s"] >= 0
        time.sleep(10)  # a longer outage: the backoff grows meanwhile

        acked = agent.status()["uplink"]["readings_acked"]
        restored_at = time.time()
        net.restore()
        st = agent.wait_status(lambda s: s["uplink"]["readings_acked"] > acked, 60, every=0.1)
        # The agent's own clock for when it was connected again (a status poll can lag by seconds on
        # a loaded machine); the resend follows on that connection (acked count grew).
        took = st["uplink"]["link"]["up_since_ts"] - restored_at
        assert 0 < took <= PROMPT_S, (took, st["uplink"])
        assert st["spool"]["evicted_routine"] == 0
        assert agent.terminate()[0] == 0
    finally:
        agent.kill()
    assert _errors((tmp_path / "agent.log").read_text()) == []
    _drain_and_check(net, emu, config, tmp_path, info.device.thing_name)


def test_interface_back_up_reconnects_on_the_kernel_event(net, emu, tmp_path):
    """The periodic probe is set to 5 minutes, so only the netlink event can explain a prompt
    reconnect once the interface is back."""
    info = emu.info()
    config = agent_config(tmp_path / "agent.toml", info, emu.port, tmp_path / "state",
                          keep_alive_s=KEEP_ALIVE_S, probe_interval_s=300)
    agent = agent_in_ns(net, config, tmp_path / "agent.log").start()
    try:
        agent.wait_status(lambda s: s["uplink"].get("readings_acked", 0) >= 50, 60)
        net.link_down()
        agent.wait_status(lambda s: s["uplink"]["link"]["network"] == "down", 1.5 * KEEP_ALIVE_S + 30)
        acked = agent.status()["uplink"]["readings_acked"]
        up_at = time.time()
        net.link_up()
        st = agent.wait_status(lambda s: s["uplink"]["readings_acked"] > acked, 60, every=0.1)
        link = st["uplink"]["link"]
        took = link["up_since_ts"] - up_at  # the agent's own clock, not the status poll's
        assert link["network_returns"] == 1, link
        assert "added" in (link["last_network_event"] or ""), link
        assert 0 < took <= 2 + 8, (took, link)
        assert agent.terminate()[0] == 0
    finally:
        agent.kill()
    assert _errors((tmp_path / "agent.log").read_text()) == []
