"""Every query of the Grafana dashboard (cloud/grafana/methane-dashboard.json), run against the local
store after the demo's pipeline: the demo's agent config (``emulator.demo.agent_config``), fleet
provisioning, shadow, and the ingest into a private influxd. Each must return the demo's data.

The alarm annotations come from the agent itself: the demo's scripted plume raises, escalates and
clears a methane alarm, and the ingest stores those events."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloud.influx import InfluxClient
from emulator import Emulator
from emulator.demo import DEMO_SERIAL, agent_config
from emulator.demo_chart import completeness_command, show_store
from emulator.ingest import LocalIngest
from emulator.services.device_services import DeviceServices
from tests.e2e.conftest import AgentProc
from tests.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "cloud" / "grafana" / "methane-dashboard.json").read_text())
MACROS = {"$timeFilter": "time > now() - 1h", "$__interval": "1s", "$site": ".*", "$device": ".*"}


def queries() -> list[tuple[str, str]]:
    out = []
    for panel in DASHBOARD["panels"]:
        for t in panel.get("targets", []):
            assert t["rawQuery"] is True
            out.append((f"{panel['title']} / {t['refId']}", t["query"]))
    for ann in DASHBOARD["annotations"]["list"]:
        out.append((f"annotation {ann['name']}", ann["query"]))
    for var in DASHBOARD["templating"]["list"]:
        out.append((f"variable {var['name']}", var["query"]))
    return out


def expand(query: str) -> str:
    for macro, value in MACROS.items():
        query = query.replace(macro, value)
    return query


@dataclass
class DemoStore:
    client: InfluxClient
    thing: str
    emulator_state: Path


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory) -> Iterator[DemoStore]:
    base = tmp_path_factory.mktemp("demo")
    ingest = LocalIngest()
    with Emulator(base / "emulator", components=[DeviceServices(), ingest], fleet_provisioning=True) as emu:
        info = emu.info
        conf = base / "agent.toml"
        (base / "serial").write_text(DEMO_SERIAL + "\n")
        conf.write_text(agent_config(base / "agent-state", info, None, base / "serial"))
        agent = AgentProc(conf, base / "agent.log").start()
        client = ingest.client
        assert client is not None
        try:
            # Readings, device status, and the plume's alarm events up to its clearing to normal.
            eventually(lambda: client.query_one('SELECT count("seq") FROM "methane"')
                       and client.query_one('SELECT count("spool_depth") FROM "device_status"')
                       and client.query_one('SELECT count("value") FROM "alarm_event" WHERE "level" = \'normal\''),
                       90, 0.5, what="readings, device status and alarm events in the store")
        finally:
            agent.terminate()
        ingest.flush()
        thing = json.loads((base / "agent-state" / "identity" / "identity.json").read_text())["thing_name"]
        yield DemoStore(client, thing, emu.state_dir)


@pytest.mark.parametrize(("name", "query"), queries(), ids=[n for n, _ in queries()])
def test_dashboard_query_returns_demo_data(demo_store: DemoStore, name: str, query: str):
    series = demo_store.client.query_one(expand(query))
    values = [v for s in series for row in s.values for v in row[1:] if v is not None]
    assert values, f"{name}: no data for {expand(query)}"


def test_demo_end_says_how_to_query_the_store_once_it_has_stopped(demo_store: DemoStore):
    """``make demo`` used to end with "try: cloud completeness ... (while the demo runs)" after
    the store had stopped: the end now says how to serve it again, and the hint's command (printed
    during the demo) works while the store runs."""
    lines: list[str] = []
    assert show_store(demo_store.client, demo_store.thing, lines.append, demo_store.emulator_state)
    assert "while the demo runs" not in lines[-1]
    assert f"methane-agent emulator serve --state-dir {demo_store.emulator_state} --ingest" in lines[-1]
    cmd = completeness_command(demo_store.client.url, demo_store.client.database, demo_store.thing).split()
    out = subprocess.run([sys.executable, "-m", "agent", *cmd[1:], "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["received"] > 0, out.stdout + out.stderr


def test_dashboard_shape():
    assert DASHBOARD["uid"] == "methane-fleet" and DASHBOARD["schemaVersion"] >= 36
    titles = " ".join(p["title"] for p in DASHBOARD["panels"])
    for needle in ("per site", "Methane (ppm)", "%LEL", "Alarm", "duplicates", "Last seen", "Spool backlog",
                   "Certificate expiry"):
        assert needle in titles
    ppm = next(p for p in DASHBOARD["panels"] if p["title"].startswith("Methane (ppm)"))
    assert [s["value"] for s in ppm["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 5000, 10000]
