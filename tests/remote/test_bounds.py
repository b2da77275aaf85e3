"""[remote.bounds]: what a shadow delta or a config-update job can never do to this device
(issue 10 item 2), through the real emulator shadow and jobs paths and the agent's own layer."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from agent import config as cfg
from agent.remote import bounds
from agent.runtime import Agent
from agent.spool import NewReading
from emulator.admin import AdminRequestError
from tests.remote.conftest import create_job, eventually, eventually_async, final_execution, running

SHADOW = "methane-agent"
METHANE_ALARM = [{"quantity": "methane", "high": 1000.0}]


def _reported(admin, thing) -> dict[str, Any]:
    try:
        doc = admin.shadow_get(thing, SHADOW)
    except AdminRequestError:
        return {}
    return doc.get("state", {}).get("reported", {})


def _fill(agent: Agent, n: int, *, alarms_every: int = 10) -> None:
    now = int(time.time() * 1000)
    agent.spool.append([
        NewReading(now + i, True, "sim-1", "methane", 2.0 + i % 7, "ppm", (), alarm=i % alarms_every == 0)
        for i in range(n)
    ])
    agent.spool.commit()


def test_shadow_cannot_shrink_the_spool_or_evict_alarms(gateway, admin):
    """The reproduction from the issue: one delta with max_bytes 65536 on a spool holding alarms."""

    async def scenario() -> None:
        agent = Agent(gateway.conf(sensors=[{"id": "sim-1", "driver": "simulated", "interval_s": 0.5,
                                             "settings": {"seed": 1}, "alarms": METHANE_ALARM}]))
        async with running(agent):
            await eventually_async(lambda: asyncio.to_thread(lambda: "config" in _reported(admin, gateway.thing)))
            _fill(agent, 3000)
            desired = {"config": {"spool": {"max_bytes": 65536}}}
            await asyncio.to_thread(admin.shadow_set_desired, gateway.thing, desired, SHADOW)
            rep = await eventually_async(lambda: asyncio.to_thread(
                lambda: (r := _reported(admin, gateway.thing)).get("config_errors") and r))
            errors = {e["path"]: e["reason"] for e in rep["config_errors"]}
            assert "local floor" in errors["config.spool.max_bytes"], errors
            assert agent.conf.spool.max_bytes == 256 * 1024 * 1024
            assert agent.spool.stats().evicted_alarm == 0 and agent.spool.stats().evicted_routine == 0
            assert rep["config"]["spool"]["max_bytes"] == 256 * 1024 * 1024
            # A raise is allowed (it is never below the file's budget) and reported as applied.
            raise_ = {"config": {"spool": {"max_bytes": 512 * 1024 * 1024}}}
            await asyncio.to_thread(admin.shadow_set_desired, gateway.thing, raise_, SHADOW)
            await eventually(lambda: agent.conf.spool.max_bytes == 512 * 1024 * 1024)
            await eventually_async(lambda: asyncio.to_thread(
                lambda: _reported(admin, gateway.thing).get("config_errors") == []))

    asyncio.run(scenario())


def _job(admin, gateway, patch: dict[str, Any]) -> str:
    return create_job(admin, gateway.thing, {"action": "config-update", "params": {"patch": patch}})


@pytest.mark.parametrize(("patch", "reason"), [
    ({"sensors": {"sim-1": {"interval_s": 0.01}}}, "min_interval_s"),
    ({"sensors": {"sim-1": {"enabled": False}}}, "methane sensor cannot be disabled"),
    ({"sensors": {"sim-1": {"alarms": []}}}, "removes the alarm level on methane"),
    ({"sensors": {"sim-1": {"alarms": [{"quantity": "methane", "high": 0.5}]}}}, "outside the local bounds"),
    ({"sensors": {"sim-1": {"alarms": [{"quantity": "methane", "high": 1000.0},
                                       {"quantity": "temperature", "high": 1.0}]}}}, "local only"),
    ({"sensors": {"sim-1": {"alarms": [{"quantity": "methane", "alarm": 1000.0, "clear_margin": 0.0,
                                        "latch": False, "on_delay_s": 3600}]}}}, "on_delay_s of a methane alarm"),
    ({"spool": {"min_free_disk_bytes": 10 * 1024**3}}, "shrinks the spool budget"),
    ({"spool": {"min_free_disk_bytes": 0}}, "local floor"),
])
def test_config_update_job_cannot_cross_the_local_bounds(gateway, admin, patch, reason):
    async def scenario() -> None:
        agent = Agent(gateway.conf(
            sensors=[{"id": "sim-1", "driver": "simulated", "interval_s": 0.5, "settings": {"seed": 1},
                      "alarms": METHANE_ALARM}],
            remote={"bounds": {"alarm_thresholds": {"methane": {"min": 100.0, "max": 20000.0}}}}))
        async with running(agent):
            before = agent.conf.digest()
            ex = await final_execution(admin, await asyncio.to_thread(_job, admin, gateway, patch))
            assert ex["status"] == "REJECTED", ex
            assert reason in ex["statusDetails"]["reason"], ex
            assert agent.conf.digest() == before
            assert agent.sampler.tasks["sim-1"].conf.interval_s == 0.5
            # Within the bounds the same kind of change applies.
            ok = await final_execution(admin, await asyncio.to_thread(_job, admin, gateway, {
                "sensors": {"sim-1": {"interval_s": 2.0, "alarms": [{"quantity": "methane", "high": 5000.0}]}}}))
            assert ok["status"] == "SUCCEEDED", ok
            assert agent.conf.sensors[0].alarms[0].alarm == 5000.0

    asyncio.run(scenario())


def test_a_remote_budget_below_the_backlog_never_evicts(tmp_path: Path) -> None:
    """Even where the file allows a smaller budget, a shrink that would evict unsent readings now
    is refused (the layer with the agent's real spool)."""
    state = Path(tempfile.mkdtemp(prefix="rb-"))

    async def scenario() -> None:
        conf = cfg.validate({"state_dir": str(state),
                             "sensors": [{"id": "sim-1", "driver": "simulated", "interval_s": 0.5}],
                             "remote": {"bounds": {"spool_max_bytes_min": 65536}}})
        agent = Agent(conf)
        agent.spool.open()
        try:
            _fill(agent, 4000)
            held = agent.spool.stats()
            assert held.bytes > 65536
            errors = await agent.layer.patch_job({"spool": {"max_bytes": 65536}})
            assert errors and errors[0][0] == "config.spool.max_bytes" and "would evict" in errors[0][1], errors
            after = agent.spool.stats()
            assert (after.readings, after.evicted_alarm, after.evicted_routine) == (held.readings, 0, 0)
            # A budget above what the spool holds is allowed: the file said so.
            assert await agent.layer.patch_job({"spool": {"max_bytes": held.bytes * 4}}) == []
        finally:
            await agent.sampler.stop()
            agent.spool.close()

    try:
        asyncio.run(scenario())
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_reload_drops_a_remote_layer_the_new_file_bounds_refuse(tmp_path: Path) -> None:
    base = cfg.validate({"state_dir": str(tmp_path), "sensors": [
        {"id": "ch4", "driver": "simulated", "interval_s": 5.0, "alarms": METHANE_ALARM}]})
    doc = {"sensors": {"ch4": {"interval_s": 2.0}}}
    from agent.remote.managed import to_config

    assert bounds.check(base, to_config(base, doc)) == []
    stricter = base.model_copy(update={"remote": cfg.RemoteConfig(bounds=cfg.RemoteBounds(min_interval_s=3.0))})
    assert [p for p, _ in bounds.check(stricter, to_config(stricter, doc))] == ["config.sensors.ch4.interval_s"]
    # The file's own value can always be restored, even below the floor.
    fast = base.model_copy(update={"sensors": [base.sensors[0].model_copy(update={"interval_s": 0.1})]})
    assert bounds.check(fast, to_config(fast, {"sensors": {"ch4": {"interval_s": 0.1}}})) == []


def test_methane_drivers_and_channels_count_as_methane_sensors() -> None:
    sim = cfg.SensorConfig(id="a", driver="simulated")
    env = cfg.SensorConfig(id="b", driver="simulated", settings={"channels": ["temperature"]})
    dyn = cfg.SensorConfig(id="c", driver="dynament", settings={"port": "/dev/null", "unit": "ppm"})
    assert bounds.is_methane(sim) and not bounds.is_methane(env) and bounds.is_methane(dyn)
