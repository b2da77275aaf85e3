"""A fleet on this machine: ``methane-agent fleet simulate`` with every scenario (cold start, steady,
broker restart, rollout, completeness), plus two same-run baselines for the changes that made it fit
on 2 cores:

- registry: provisioning one more device with the authz file rebuilt incrementally vs rebuilt in
  full on every change (the emulator's previous behaviour), with ``--registry-size`` devices already
  registered;
- sampler: CPU per reading of simulated sensors read on the event loop vs one worker-thread hop
  per read (the sampler's path for blocking drivers, previously used for every driver);
- herd: the agent's reconnect policy replayed for the fleet (fleet/herd.py) over broker outages of
  0-30 s, the worst first second after the broker returns with the default first window (10 s)
  against the previous default (1 s) and the 5 s once suggested.

Prints JSON and writes it to bench/results/fleet.json.

    .venv/bin/python -m bench.bench_fleet [--devices 1000] [--duration 60] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "fleet.json"


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def registry_baseline(size: int, extra: int = 20) -> dict[str, Any]:
    from emulator.fleet_setup import CLAIM_POLICY_FILE, DEVICE_POLICY_FILE
    from emulator.registry import Registry

    out: dict[str, Any] = {"registered": size, "measured": extra}
    for mode in ("incremental", "full_rebuild"):
        tmp = Path(tempfile.mkdtemp(prefix="bfl-reg-"))
        try:
            reg = Registry(tmp / "registry")
            reg.put_policy("methane-device", json.loads(DEVICE_POLICY_FILE.read_text()))
            reg.put_policy("methane-claim", json.loads(CLAIM_POLICY_FILE.read_text()))
            if mode == "full_rebuild":
                full = reg.write_authz
                reg.write_authz = lambda changed=None, f=full: f(None)  # type: ignore[method-assign]

            def provision(i: int, registry: Registry = reg, tag: str = mode) -> None:
                cid = hashlib.sha256(f"{tag}{i}".encode()).hexdigest()
                registry.add_certificate(cid, "PEM", "PENDING_ACTIVATION", ownership_token=f"t{i}")
                registry.take_token(f"t{i}")
                registry.apply_provisioning(cid, {"name": f"methane-{i}", "attributes": {"site": "s"},
                                                  "groups": ["methane-fleet"]}, "ACTIVE", ["methane-device"])

            saved = reg.write_authz
            reg.write_authz = lambda changed=None: None  # type: ignore[method-assign]
            for i in range(size):
                provision(i)
            reg.write_authz = saved  # type: ignore[method-assign]
            reg.write_authz(None)
            t0 = time.perf_counter()
            for i in range(size, size + extra):
                provision(i)
            out[f"{mode}_ms_per_device"] = round((time.perf_counter() - t0) / extra * 1000, 2)
            reg.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    out["speedup"] = round(out["full_rebuild_ms_per_device"] / max(0.01, out["incremental_ms_per_device"]), 1)
    return out


def sampler_baseline(sensors: int, seconds: float) -> dict[str, Any]:
    from agent.clock import ClockSync
    from agent.config import SensorConfig
    from agent.sampler import SensorTask
    from drivers.simulated import SimulatedDriver, SimulatedSettings

    class ThreadedSimulated(SimulatedDriver):
        blocking = True  # the path every driver took before

    out: dict[str, Any] = {"sensors": sensors, "seconds": seconds}
    for mode, cls in (("loop", SimulatedDriver), ("thread_hop", ThreadedSimulated)):
        got: list[Any] = []

        async def run(driver_cls: type[SimulatedDriver] = cls, sink: list[Any] = got) -> None:
            tasks = [SensorTask(SensorConfig(id=f"s{i}", driver="simulated", interval_s=0.1), sink.extend,
                                ClockSync("assume_synced"), driver=driver_cls(SimulatedSettings(seed=i)))
                     for i in range(sensors)]
            for t in tasks:
                t.start()
            await asyncio.sleep(seconds)
            for t in tasks:
                await t.stop()

        c0 = _cpu()
        asyncio.run(run())
        cpu = _cpu() - c0
        out[f"{mode}_us_cpu_per_reading"] = round(cpu / max(1, len(got)) * 1e6, 1)
        out[f"{mode}_readings"] = len(got)
    out["speedup"] = round(out["thread_hop_us_cpu_per_reading"] / max(0.01, out["loop_us_cpu_per_reading"]), 1)
    return out


def herd_baseline(gateways: int) -> dict[str, Any]:
    from agent.config import ConnectionConfig
    from fleet.herd import OUTAGES, worst

    c = ConnectionConfig()
    out: dict[str, Any] = {"gateways": gateways, "outages_s": [OUTAGES[0], OUTAGES[-1]], "step_s": OUTAGES[1]}
    for name, min_s in (("default", c.min_reconnect_delay_ms / 1000), ("previous_1s", 1.0), ("suggested_5s", 5.0)):
        w = worst(gateways, min_s, c.max_reconnect_delay_ms / 1000, OUTAGES)
        out[name] = {"min_reconnect_delay_s": min_s, "worst_first_second_share": round(w.first_second_share, 3),
                     "at_outage_s": w.outage_s, "p50_s": round(w.p50_s, 2), "p95_s": round(w.p95_s, 2)}
    out["herd_ratio_previous_to_default"] = round(
        out["previous_1s"]["worst_first_second_share"] / max(1e-6, out["default"]["worst_first_second_share"]), 1)
    return out


def fleet_run(devices: int, duration: float, outage: float, timeout_s: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bfl-"))
    report = tmp / "report.json"
    cmd = [sys.executable, "-m", "agent", "fleet", "simulate", "--emulator-dir", str(tmp / "emu"),
           "--devices", str(devices), "--duration", str(duration), "--outage", str(outage),
           "--progress", "30", "--report", str(report)]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        result: dict[str, Any] = {"command": " ".join(["methane-agent", *cmd[3:]]), "exit": proc.returncode,
                                  "wall_s": round(time.monotonic() - t0, 1)}
        if report.exists():
            result["report"] = json.loads(report.read_text())
        else:
            result["stderr_tail"] = proc.stderr[-3000:]
        result["text"] = proc.stdout.strip().splitlines()
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--outage", type=float, default=10.0)
    ap.add_argument("--registry-size", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="30 gateways, 10 s window, small baselines")
    ap.add_argument("--timeout-s", type=float, default=3600)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.quick:
        args.devices, args.duration, args.outage, args.registry_size = 30, 10.0, 5.0, 200
    doc: dict[str, Any] = {"bench": "fleet"}
    doc["registry"] = registry_baseline(args.registry_size)
    doc["sampler"] = sampler_baseline(50 if args.quick else 200, 5.0)
    doc["herd"] = herd_baseline(args.devices)
    doc["fleet"] = fleet_run(args.devices, args.duration, args.outage, args.timeout_s)
    r = doc["fleet"].get("report", {})
    doc["summary"] = {k: r.get(k) for k in (
        "devices", "provisioned", "publishing", "readings_committed", "readings_received", "readings_lost",
        "reconnect_p50_s", "reconnect_p95_s", "cpu_percent_per_device", "rss_mb_per_device",
        "broker_cpu_percent_per_device", "broker_rss_mb_per_device")}
    sc = r.get("scenarios", {})
    doc["summary"].update(
        agent_cpu_us_per_reading=sc.get("steady", {}).get("agent_cpu_us_per_reading"),
        readings_per_s=sc.get("steady", {}).get("readings_per_s"),
        readings_per_s_expected=sc.get("steady", {}).get("readings_per_s_expected"),
        first_second_share=sc.get("broker-restart", {}).get("first_second_share"),
        p95_within_bound=sc.get("broker-restart", {}).get("p95_within_bound"),
        errors=r.get("errors"))
    text = json.dumps(doc, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0 if doc["fleet"].get("exit") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
