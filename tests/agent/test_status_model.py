"""The typed status (agent/status_model.py) serves the same JSON keys as before: external checks
read ``methane-agent status --json``. Round trip through the socket's JSON loses nothing."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from agent import config as cfg
from agent.runtime import Agent
from agent.status import query, summary_line
from agent.status_model import AgentStatus, LinkStatus, SensorStatus, UplinkStatus
from tests.eventually import eventually_async

AGENT_KEYS = {"version", "pid", "thing_name", "uptime_s", "config_hash", "reloads", "last_reload_error"}
SPOOL_KEYS = {"path", "readings", "bytes", "oldest_seq", "oldest_ts_ms", "oldest_age_s", "next_seq", "uncommitted",
              "evicted_routine", "evicted_alarm", "quarantined", "epoch", "seq_skipped"}
SENSOR_KEYS = {"id", "driver", "state", "reads", "errors", "consecutive_errors", "skipped_ticks", "last_error",
               "last_error_ts", "last_read_ts", "last", "restarts"}
LINK_KEYS = {"endpoint", "topic", "encoding", "connected", "connects", "reconnects", "connect_failures",
             "certificate_refused", "last_error", "link", "last_ack_ts", "batches_acked", "readings_acked",
             "bytes_acked", "failures", "splits", "inflight", "publishes_per_s"}


def test_status_socket_serves_the_documented_keys_and_reads_back():
    state = Path(tempfile.mkdtemp(prefix="sm-"))  # short: the status socket path is limited

    async def scenario() -> dict:
        conf = cfg.validate({"state_dir": str(state), "sensors": [
            {"id": "sim-1", "driver": "simulated", "interval_s": 0.05}]})
        agent = Agent(conf)
        task = asyncio.get_running_loop().create_task(agent.run())
        try:
            await asyncio.wait_for(agent.running.wait(), 20)
            await eventually_async(lambda: agent.status().sensors[0].reads)
            return await asyncio.to_thread(query, conf.status_socket)
        finally:
            agent.request_stop()
            await asyncio.wait_for(task, 15)

    doc = asyncio.run(scenario())
    assert set(doc) == {"agent", "clock_synced", "spool", "uplink", "sensors", "remote", "alarms"}
    assert set(doc["agent"]) == AGENT_KEYS and set(doc["spool"]) == SPOOL_KEYS
    assert doc["uplink"] == {"enabled": False}
    assert set(doc["sensors"][0]) == SENSOR_KEYS
    assert doc["remote"] == {"remote_changes": 0, "config_errors": [], "shadow": None, "jobs": None}
    typed = AgentStatus.from_dict(doc)
    assert json.loads(json.dumps(typed.as_dict())) == doc
    assert typed.sensors[0].reads >= 1 and "offline-mode" in summary_line(typed)


def test_connected_uplink_and_not_started_sensor_shapes():
    link = LinkStatus(endpoint="e", topic="t", encoding="compact", connected=True, last_ack_ts=None)
    st = AgentStatus.from_dict({
        "agent": {"version": "1", "pid": 1, "thing_name": "gw", "uptime_s": 1.0, "config_hash": "h", "new": 1},
        "clock_synced": True, "spool": {"path": "/s"},
        "uplink": UplinkStatus(True, link).as_dict(),
        "sensors": [SensorStatus("bad", "not_started", "no such port").as_dict()],
        "running": True,
    })
    assert set(st.as_dict()["uplink"]) == {"enabled"} | LINK_KEYS
    assert st.uplink.link == link
    assert st.as_dict()["sensors"] == [{"id": "bad", "state": "not_started", "last_error": "no such port"}]
    line = summary_line(st)
    assert "connected" in line and "failing sensors: bad" in line
