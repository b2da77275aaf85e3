"""The runtime's feature wiring: a connection rebuilt by a config change is a stop and a start of
the features, with ports naming the new connection; what the config disables is not wired."""

from __future__ import annotations

import asyncio

from agent.runtime import Agent
from tests.remote.conftest import create_job, eventually, final_execution, jobs_of, jobs_or_none, running, shadow_of


def test_connection_rebuild_restarts_the_features_on_the_new_connection(gateway, admin):
    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            old_sync = await eventually(lambda: (s := shadow_of(agent)) is not None and s.reports > 0 and s)
            old_conn, old_jobs = agent.conn, jobs_of(agent)
            # A local change to the connection, as SIGHUP applies it (the file's new config with the
            # remote layers on top): the connection is rebuilt.
            file_conf = gateway.conf(connection_overrides={"keep_alive_s": 45})
            changed = await agent.apply(agent.layer.layer(file_conf))
            assert "connection" in changed
            assert agent.conn is not None and agent.conn is not old_conn
            new_sync, new_jobs = shadow_of(agent), jobs_of(agent)
            assert new_sync is not None and new_sync is not old_sync and new_sync.conn is agent.conn
            assert new_jobs is not old_jobs and new_jobs.conn is agent.conn
            # The old ones were stopped; the new shadow reports on the new connection.
            assert not old_sync.running
            await eventually(lambda: new_sync.reports > 0)
            assert agent.status().features["remote"]["shadow"]["reports"] == new_sync.reports

    asyncio.run(scenario())


def test_disabled_features_are_not_wired(gateway):
    agent = Agent(gateway.conf(remote={"shadow_enabled": False}))
    assert [f.name for f in agent.features] == ["alarms", "jobs"]  # alarms always run (no network needed)
    assert agent.status().features["remote"]["shadow"] is None


def test_a_feature_stopped_from_its_own_loop_does_not_wait_for_itself(gateway):
    """A remote change applied by the shadow loop that makes the runtime rebuild the connection
    stops the features from inside that loop: the stop must not await its own task."""

    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            sync = await eventually(lambda: (s := shadow_of(agent)) is not None and s.reports > 0 and s)
            # The file changed under the layer (its base): the next shadow change re-applies the
            # file's connection and the runtime rebuilds it from within the shadow's loop.
            agent.layer.base = gateway.conf(connection_overrides={"keep_alive_s": 45})
            sync.request_sync()
            await eventually(lambda: agent.conf.connection.keep_alive_s == 45
                             and (s := shadow_of(agent)) is not None and s is not sync and s.reports > 0)
            # The old loop, which ran the apply, ends after it instead of ticking on the old connection.
            await eventually(lambda: not sync.running, 10)

    asyncio.run(scenario())


def test_a_job_whose_apply_rebuilds_the_connection_finishes_and_jobs_go_on(gateway, admin):
    """The jobs half: a config-update job whose apply makes the runtime rebuild the connection
    stops the jobs feature from inside that job's own task. The stop must not cancel or await the
    job (it would cancel the apply halfway, leaving no features running): the job is reported
    SUCCEEDED and the new runner on the new connection takes the next job."""

    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            old_jobs = await eventually(lambda: (j := jobs_or_none(agent)) is not None
                                        and agent.conn is not None and agent.conn.connected.is_set() and j)
            old_conn = agent.conn
            # The file changed under the layer: the job's patch re-applies the file's connection.
            agent.layer.base = gateway.conf(connection_overrides={"keep_alive_s": 45})
            job = await asyncio.to_thread(create_job, admin, gateway.thing, {
                "action": "config-update", "params": {"patch": {"uplink": {"batch_max_age_s": 5}}}})
            ex = await final_execution(admin, job)
            assert ex["status"] == "SUCCEEDED", ex
            assert agent.conf.connection.keep_alive_s == 45 and agent.conf.uplink.batch_max_age_s == 5
            assert agent.conn is not None and agent.conn is not old_conn
            new_jobs = jobs_of(agent)
            assert new_jobs is not old_jobs and new_jobs.conn is agent.conn and not old_jobs.running
            assert shadow_of(agent) is not None  # every feature was started again
            nxt = await asyncio.to_thread(create_job, admin, gateway.thing, {
                "action": "config-update", "params": {"patch": {"uplink": {"batch_max_age_s": 6}}}})
            assert (await final_execution(admin, nxt))["status"] == "SUCCEEDED"
            assert agent.conf.uplink.batch_max_age_s == 6

    asyncio.run(scenario())
