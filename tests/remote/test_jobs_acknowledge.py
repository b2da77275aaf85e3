"""acknowledge-alarm through IoT Jobs against the emulator's jobs service: a latched alarm is
acknowledged (SUCCEEDED, with what was acknowledged), one that is not latched is REJECTED with the
states and nothing changes; the shadow's reported status carries the alarm states."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.runtime import Agent
from tests.remote.conftest import create_job, eventually, eventually_async, final_execution, running


def _ack(admin, gateway, **params: Any) -> str:
    return create_job(admin, gateway.thing, {"action": "acknowledge-alarm", "params": params})


async def _final(admin, job_id: str) -> dict[str, Any]:
    return await final_execution(admin, job_id, 30)


def test_acknowledge_alarm_job(gateway, admin):
    sensor = {"id": "ch4", "driver": "simulated", "interval_s": 0.2,
              "settings": {"noise_ppm": 0.0, "plumes": [{"start_s": 0.5, "duration_s": 2.0, "peak_ppm": 15000}]},
              "alarms": [{"unit": "%LEL", "warn": 10, "alarm": 20}]}
    conf = gateway.conf(sensors=[sensor])

    async def scenario() -> None:
        agent = Agent(conf)
        async with running(agent):
            refused = await _final(admin, _ack(admin, gateway, sensor_id="ch4"))
            assert refused["status"] == "REJECTED"
            assert "nothing to acknowledge" in refused["statusDetails"]["reason"]
            # The plume passes; the alarm stays latched.
            await eventually(lambda: agent.alarms.engine.active() and agent.alarms.engine.active()[0]["latched"]
                             and (agent.alarms.engine.active()[0]["value"] or 99) < 1, 20)
            before = agent.alarms.store.pending() + agent.alarms.status()["events"]["published"]
            done = await _final(admin, _ack(admin, gateway, sensor_id="ch4", by="ops"))
            assert done["status"] == "SUCCEEDED", done
            assert done["statusDetails"] == {"action": "acknowledge-alarm", "acknowledged": "ch4/methane",
                                             "cleared": "1"}
            assert agent.alarms.engine.active() == []
            assert agent.alarms.store.pending() + agent.alarms.status()["events"]["published"] == before + 2
            # The shadow's reported status shows the state (normal again).
            shadow = await eventually_async(lambda: asyncio.to_thread(
                lambda: (admin.shadow_get(gateway.thing, "methane-agent") or {}).get("state", {}).get("reported", {})
                .get("status", {}).get("alarms", {}).get("ch4/methane", {}).get("level") == "normal" or None), 30)
            assert shadow

    asyncio.run(scenario())
