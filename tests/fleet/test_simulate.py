"""``methane-agent fleet simulate`` end to end at small N: every scenario against the emulator the
simulator runs itself, each gateway the real agent (provisioned by claim, its own connection, spool,
shadow and jobs). The checks are outcomes, not timings: everyone provisioned and publishing, the
broker restart survived by every gateway, the rollout aborted by the legacy share, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.registry import Registry
from emulator.services.admin_socket import socket_path

ROOT = Path(__file__).resolve().parents[2]
N = 20


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_small_fleet_runs_every_scenario(tmp_path):
    emu_dir, report = tmp_path / "emu", tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "fleet", "simulate", "--emulator-dir", str(emu_dir), "--devices", str(N),
         "--duration", "3", "--agent-workers", "2", "--batch-max-age", "2", "--outage", "2",
         "--min-reconnect-delay-ms", "500", "--max-reconnect-delay-ms", "4000",
         "--rollout-per-minute", "300", "--legacy-fraction", "0.2", "--progress", "2", "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    r = json.loads(report.read_text())
    assert r["devices"] == N and r["provisioned"] == N and r["publishing"] == N
    assert r["readings_committed"] >= N * 8 * 3 and r["readings_lost"] == 0
    assert r["readings_received"] == r["readings_committed"]
    assert r["cpu_percent_per_device"] > 0 and r["rss_mb_per_device"] > 0
    # The agents ran in two worker processes, ten each; their costs are the workers' sum, and the
    # per-gateway figures are that sum (not this process, which holds the emulator) over N.
    steady = r["scenarios"]["steady"]
    assert r["agent_workers"] == 2 and len(steady["agent_worker_cpu_percent"]) == 2
    assert all(c > 0 for c in steady["agent_worker_cpu_percent"])
    assert r["cpu_percent_per_device"] == pytest.approx(steady["agent_cpu_percent"] / N, abs=1e-3)
    assert r["rss_mb_per_device"] == pytest.approx(steady["agent_process_rss_mb"] / N, abs=0.01)
    assert r["broker_cpu_percent_per_device"] >= 0 and r["broker_rss_mb_per_device"] > 0
    sc = r["scenarios"]
    assert sc["cold-start"]["provisioned"] == N and sc["cold-start"]["provision_p95_s"] is not None
    restart = sc["broker-restart"]
    assert restart["reconnected"] == N and r["reconnect_p50_s"] is not None and r["reconnect_p95_s"] is not None
    rollout = sc["rollout"]
    # Every 5th gateway is legacy and refuses the change: the job is aborted, queued ones canceled.
    assert rollout["aborted"] and rollout["status"] == "CANCELED"
    assert rollout["execution_counts"].get("REJECTED", 0) >= 1 and rollout["good_devices_failed"] == 0
    assert sc["completeness"]["devices_with_gaps"] == 0 and sc["completeness"]["left_in_spools"] == 0
    # Live view and text report on the terminal.
    assert "provisioned" in proc.stderr and "readings/s" in proc.stderr
    assert f"fleet: {N} gateways, provisioned {N}, publishing {N}" in proc.stdout
    # The template put every gateway in the fleet's group and its site's (ten per site).
    reg = Registry(emu_dir / "registry")
    try:
        groups = reg.groups()
    finally:
        reg.close()
    assert groups["methane-fleet"] == N and groups["site-0001"] == 10 and groups["site-0002"] == 10
    assert not socket_path(emu_dir).exists()  # the emulator was stopped with the run


def test_bad_arguments_are_refused_with_a_reason(tmp_path):
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent", "fleet", "simulate", *argv], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    p = run("--devices", "3")
    assert p.returncode == 2 and "--emulator-dir" in p.stderr
    p = run("--devices", "0", "--emulator-dir", str(tmp_path / "e"))
    assert p.returncode == 2 and "--devices" in p.stderr
    p = run("--devices", "2", "--endpoint", "example.com", "--claim-cert", "c", "--claim-key", "k",
            "--scenario", "rollout")
    assert p.returncode == 2 and "need the emulator" in p.stderr
    p = run("--devices", "2", "--endpoint", "example.com")
    assert p.returncode == 2 and "--claim-cert" in p.stderr
    p = run("--devices", "2", "--emulator-dir", str(tmp_path / "e"), "--agent-workers", "0")
    assert p.returncode == 2 and "--agent-workers" in p.stderr
    # The agent's first reconnect window (10 s) cannot exceed the bound given: said before any gateway starts.
    p = run("--devices", "2", "--emulator-dir", str(tmp_path / "e"), "--max-reconnect-delay-ms", "4000")
    assert p.returncode == 2 and "--min-reconnect-delay-ms" in p.stderr
    assert not (tmp_path / "e").exists()
