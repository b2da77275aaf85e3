"""Sensor -> spool -> uplink -> broker, with the real agent process, the real mosquitto (mutual TLS)
and the telemetry recorder as the oracle: nothing committed is ever lost."""

from __future__ import annotations

import random
import time

import pytest

from tests.e2e.conftest import write_config

NO_SENSORS = {"METHANE_AGENT__SENSORS__0__ENABLED": "false"}


def drain_and_check(agent_factory, config, telemetry, thing: str) -> dict:
    """Run the agent with sampling off until its spool is empty, then prove 1..N all arrived."""
    agent = agent_factory(config, env=NO_SENSORS).start()
    st = agent.wait_status(lambda s: s["spool"]["readings"] == 0 and s["uplink"].get("connected"), timeout=60)
    rc, _ = agent.terminate()
    assert rc == 0
    last = st["spool"]["next_seq"] - 1
    assert last > 0
    telemetry.wait_for(thing, range(1, last + 1), timeout=30)
    assert telemetry.gaps(thing, upto=last) == []
    assert max(telemetry.received(thing)) == last
    return {"last": last, "duplicates": telemetry.duplicates(thing)}


def test_readings_arrive_decoded_and_gapless(emulator, telemetry, agent_factory, tmp_path):
    info = emulator.info
    config = write_config(tmp_path / "agent.toml", info, tmp_path / "state")
    agent = agent_factory(config).start()
    st = agent.wait_status(lambda s: s["uplink"].get("readings_acked", 0) >= 200)
    assert st["uplink"]["connected"] is True
    assert st["sensors"][0]["state"] == "ok"
    rc, took = agent.terminate()
    assert rc == 0 and took < 5, (rc, took)
    result = drain_and_check(agent_factory, config, telemetry, info.device.thing_name)
    assert result["duplicates"] == 0


def test_json_encoding_end_to_end(emulator, telemetry, agent_factory, tmp_path):
    info = emulator.info
    config = write_config(tmp_path / "agent.toml", info, tmp_path / "state", encoding="json")
    agent = agent_factory(config).start()
    agent.wait_status(lambda s: s["uplink"].get("readings_acked", 0) >= 40)
    agent.terminate()
    drain_and_check(agent_factory, config, telemetry, info.device.thing_name)


def test_starts_without_network_then_drains(emulator, telemetry, agent_factory, tmp_path):
    """A gateway that boots with no 5G link runs, spools, and sends everything once the link is up."""
    info = emulator.info
    emulator.broker.stop()
    config = write_config(tmp_path / "agent.toml", info, tmp_path / "state")
    agent = agent_factory(config).start()
    st = agent.wait_status(lambda s: s["spool"]["readings"] >= 100)
    assert st["uplink"]["connected"] is False
    emulator.broker.start()
    agent.wait_status(lambda s: s["uplink"].get("readings_acked", 0) >= 100, timeout=60)
    agent.terminate()
    drain_and_check(agent_factory, config, telemetry, info.device.thing_name)


def test_broker_killed_and_restarted_mid_stream(emulator, telemetry, agent_factory, tmp_path):
    info = emulator.info
    config = write_config(tmp_path / "agent.toml", info, tmp_path / "state")
    agent = agent_factory(config).start()
    agent.wait_status(lambda s: s["uplink"].get("readings_acked", 0) >= 100)
    for _ in range(2):
        emulator.broker.restart()  # SIGTERM: the broker saves its sessions, as IoT Core keeps them
        time.sleep(1.0)
    st = agent.wait_status(lambda s: s["uplink"].get("reconnects", 0) >= 1, timeout=60)
    assert st["uplink"]["connected"]
    agent.terminate()
    drain_and_check(agent_factory, config, telemetry, info.device.thing_name)


@pytest.mark.slow
def test_agent_sigkilled_at_random_moments(emulator, telemetry, agent_factory, tmp_path):
    """kill -9 while sampling and publishing, several times; afterwards every sequence number
    1..N arrives (duplicates allowed and counted), none lost."""
    info = emulator.info
    config = write_config(tmp_path / "agent.toml", info, tmp_path / "state", interval=0.02)
    rng = random.Random(1234)
    for _ in range(5):
        agent = agent_factory(config).start()
        agent.wait_status(lambda s: s["spool"]["next_seq"] > 1, timeout=30)
        time.sleep(rng.uniform(0.2, 2.0))
        agent.kill()
    result = drain_and_check(agent_factory, config, telemetry, info.device.thing_name)
    assert result["last"] > 100


def test_foreign_thing_topic_refused_and_agent_keeps_running(emulator, telemetry, agent_factory, tmp_path):
    """A topic outside the device's ACL is refused by the broker; the agent reports it, keeps the
    readings, and keeps running (degrade, don't die)."""
    info = emulator.info
    config = write_config(tmp_path / "agent.toml", info, tmp_path / "state")
    agent = agent_factory(config, env={"METHANE_AGENT__UPLINK__TOPIC": "dt/methane/{site}/other-thing/telemetry"})
    agent.start()
    st = agent.wait_status(lambda s: s["uplink"].get("failures", 0) >= 1 and s["spool"]["readings"] > 0)
    assert "NOT_AUTHORIZED" in (st["uplink"]["last_error"] or "")
    assert st["uplink"].get("readings_acked", 0) == 0
    agent.terminate()
    assert telemetry.received(info.device.thing_name) == set()
    # The readings were kept: with the right topic they all arrive.
    drain_and_check(agent_factory, config, telemetry, info.device.thing_name)


def test_batch_refused_as_too_large_is_split(emulator, telemetry, agent_factory, tmp_path):
    """A broker with a smaller payload limit than the agent's batches (a misconfigured budget, or a
    broker other than IoT Core) refuses them; the agent splits until they pass, losing nothing."""
    info = emulator.info
    emulator.broker.payload_limit = 1500
    emulator.broker.restart()
    config = write_config(tmp_path / "agent.toml", info, tmp_path / "state", encoding="json", batch_max_age_s=3)
    agent = agent_factory(config).start()
    st = agent.wait_status(lambda s: s["uplink"].get("readings_acked", 0) >= 300, timeout=60)
    assert "too large" in agent.log.read_text()
    splits = st["uplink"]["splits"]
    assert splits >= 1
    # The refusal taught the uplink a smaller cap: later batches are not refused first.
    acked = st["uplink"]["readings_acked"]
    st = agent.wait_status(lambda s: s["uplink"]["readings_acked"] >= acked + 300, timeout=60)
    assert st["uplink"]["splits"] == splits, st["uplink"]
    agent.terminate()
    drain_and_check(agent_factory, config, telemetry, info.device.thing_name)
