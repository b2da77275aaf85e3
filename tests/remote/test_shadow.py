"""Shadow-driven configuration against the emulator's Shadow service with the real agent."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time

from agent.remote import overlay
from agent.runtime import Agent
from emulator.admin import AdminRequestError
from tests.remote.conftest import eventually, eventually_async, running, shadow_of

SHADOW = "methane-agent"


def _reported(admin, thing):
    try:
        doc = admin.shadow_get(thing, SHADOW)
    except AdminRequestError:  # no shadow yet
        return {}
    return doc.get("state", {}).get("reported", {})


def test_desired_change_applied_live_reported_and_persisted(gateway, admin):
    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            await eventually_async(lambda: asyncio.to_thread(
                lambda: "config" in _reported(admin, gateway.thing)))
            desired = {"config": {"sensors": {"sim-1": {"interval_s": 2.5}}, "uplink": {"encoding": "json"},
                                  "logging": {"level": "DEBUG"}}}
            await asyncio.to_thread(admin.shadow_set_desired, gateway.thing, desired, SHADOW)
            await eventually(lambda: agent.conf.sensors[0].interval_s == 2.5 and agent.conf.uplink.encoding == "json")
            # live: the running sensor task has the new interval, no restart happened
            assert agent.sampler.tasks["sim-1"].conf.interval_s == 2.5
            rep = await eventually_async(lambda: asyncio.to_thread(
                lambda: (r := _reported(admin, gateway.thing)).get("config", {}).get("uplink", {}).get("encoding")
                == "json" and r))
            assert rep["config"]["sensors"]["sim-1"]["interval_s"] == 2.5
            assert rep["config_errors"] == []
            assert rep["status"]["config_hash"] == agent.conf.digest()
            doc = await asyncio.to_thread(admin.shadow_get, gateway.thing, SHADOW)
            assert "delta" not in doc["state"]
        path = overlay.path_in(gateway.state_dir)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        saved = json.loads(path.read_text())
        assert saved["shadow"]["uplink"] == {"encoding": "json"}

    asyncio.run(scenario())


def test_invalid_desired_rejected_with_reasons_and_nothing_changed(gateway, admin):
    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            await eventually(lambda: (s := shadow_of(agent)) is not None and s.reports > 0)
            before = agent.conf.digest()
            desired = {"config": {"sensors": {"sim-1": {"interval_s": -1}, "nope": {"enabled": False}},
                                  "connection": {"endpoint": "evil.example.com"},
                                  "uplink": {"encoding": "json"}},
                       "extra": 1}
            await asyncio.to_thread(admin.shadow_set_desired, gateway.thing, desired, SHADOW)
            rep = await eventually_async(lambda: asyncio.to_thread(
                lambda: (r := _reported(admin, gateway.thing)).get("config_errors") and r))
            paths = {e["path"]: e["reason"] for e in rep["config_errors"]}
            assert "config.connection" in paths and "local only" in paths["config.connection"]
            assert "config.sensors.nope" in paths
            assert "extra" in paths
            assert agent.conf.digest() == before
            assert agent.conf.uplink.encoding == "compact"  # the valid part did not sneak in
            # The operator fixes desired: the whole document now applies and the errors clear.
            fix = {"config": {"sensors": {"sim-1": {"interval_s": 3}, "nope": None}, "connection": None}, "extra": None}
            await asyncio.to_thread(admin.shadow_set_desired, gateway.thing, fix, SHADOW)
            await eventually(lambda: agent.conf.uplink.encoding == "json" and agent.conf.sensors[0].interval_s == 3)
            await eventually_async(lambda: asyncio.to_thread(
                lambda: _reported(admin, gateway.thing).get("config_errors") == []))
        assert not overlay.path_in(gateway.state_dir).read_text().count("evil")

    asyncio.run(scenario())


def test_change_while_agent_stopped_reconciled_on_start(gateway, admin):
    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            await eventually(lambda: (s := shadow_of(agent)) is not None and s.reports > 0)
        await asyncio.to_thread(admin.shadow_set_desired, gateway.thing,
                                {"config": {"spool": {"commit_interval_s": 0.5}}}, SHADOW)
        again = Agent(gateway.conf())
        async with running(again):
            await eventually(lambda: again.conf.spool.commit_interval_s == 0.5)
            await eventually_async(lambda: asyncio.to_thread(
                lambda: _reported(admin, gateway.thing).get("config", {}).get("spool", {})
                .get("commit_interval_s") == 0.5))

    asyncio.run(scenario())


def test_overlay_applies_on_start_while_offline_and_broker_restart_reconciles(gateway, admin, remote_emulator):
    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            await asyncio.to_thread(admin.shadow_set_desired, gateway.thing,
                                    {"config": {"sensors": {"sim-1": {"interval_s": 4}}}}, SHADOW)
            await eventually(lambda: agent.conf.sensors[0].interval_s == 4)
        # Rebooted with no network (nothing listens on port 1): the persisted layer still applies.
        offline = Agent(gateway.conf(port=1))
        async with running(offline):
            await eventually(lambda: offline.conf.sensors[0].interval_s == 4)
        # Broker down while desired changes (admin writes straight to the service), then back up.
        agent = Agent(gateway.conf())
        async with running(agent):
            conn = agent.conn
            assert conn is not None
            await eventually(lambda: conn.connected.is_set())
            broker = remote_emulator.broker
            await asyncio.to_thread(broker.stop)
            await eventually(lambda: not conn.connected.is_set())
            await asyncio.to_thread(admin.shadow_set_desired, gateway.thing,
                                    {"config": {"sensors": {"sim-1": {"interval_s": 6}}}}, SHADOW)
            await asyncio.to_thread(broker.start)
            await eventually(lambda: agent.conf.sensors[0].interval_s == 6, timeout_s=30)

    asyncio.run(scenario())


def test_idle_agent_does_not_build_its_status_every_second(gateway, admin):
    """Between reports (reported_min_interval_s) nothing can be due, so the shadow worker must not
    build the status document on its 1 s tick (a fleet of 1,000 agents in one process spent most of
    its idle CPU there); a config change is still reported at once."""
    async def scenario() -> None:
        agent = Agent(gateway.conf(remote={"reported_min_interval_s": 300.0}))
        async with running(agent):
            shadow = shadow_of(agent)
            assert shadow is not None
            await eventually(lambda: shadow.reports >= 1)
            # The start-up reports (config, then status) are done once none came for 1.5 s (a fixed
            # wait is too short on a loaded machine, and then counts a start-up report).
            seen = {"reports": -1, "since": 0.0}

            def settled() -> bool:
                now = time.monotonic()
                if shadow.reports != seen["reports"]:
                    seen.update(reports=shadow.reports, since=now)
                return now - seen["since"] >= 1.5

            await eventually(settled, 30)
            reports = shadow.reports
            source = shadow.status_source
            builds = 0
            real = source.build

            def counting() -> dict:
                nonlocal builds
                builds += 1
                return real()

            source.build = counting  # type: ignore[method-assign]
            await asyncio.sleep(3.5)  # three or more worker ticks
            assert builds == 0 and shadow.reports == reports
            await asyncio.to_thread(admin.shadow_set_desired, gateway.thing,
                                    {"config": {"sensors": {"sim-1": {"interval_s": 2.0}}}}, "methane-agent")
            await eventually(lambda: _reported_interval(admin, gateway.thing) == 2.0)
            assert builds >= 1

    asyncio.run(scenario())


def _reported_interval(admin, thing):
    try:
        doc = admin.shadow_get(thing, "methane-agent")
    except AdminRequestError:
        return None
    return doc.get("state", {}).get("reported", {}).get("config", {}).get("sensors", {}).get("sim-1", {}).get(
        "interval_s")
