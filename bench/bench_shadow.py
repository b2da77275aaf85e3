"""Delta-to-reported latency of a shadow-driven config change, against the local emulator with
the real in-process agent, vs a naive baseline: restart-to-apply (stop the agent, start a new one
that reads the change at connect). Prints JSON; ratios, not absolute times, are the point.

    .venv/bin/python -m bench.bench_shadow [--n 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agent import config as cfg
from agent.runtime import Agent
from emulator import Emulator
from emulator.admin import Admin, AdminRequestError
from emulator.services.device_services import DeviceServices

SHADOW = "methane-agent"


def _conf(emu: Emulator, thing: str, cert: Path, key: Path, state: Path) -> cfg.AgentConfig:
    info = emu.info
    assert info is not None
    return cfg.validate({
        "state_dir": str(state), "device": {"thing_name": thing},
        "connection": {"endpoint": info.endpoint, "port": info.port, "ca_file": str(info.ca_file),
                       "cert_file": str(cert), "key_file": str(key), "min_reconnect_delay_ms": 100},
        "sensors": [{"id": "sim-1", "driver": "simulated", "interval_s": 1.0}],
        "logging": {"level": "WARNING"},
        "remote": {"reported_min_interval_s": 60},
    })


def _reported_interval(admin: Admin, thing: str) -> Any:
    try:
        doc = admin.shadow_get(thing, SHADOW)
    except AdminRequestError:  # no shadow yet
        return None
    return doc.get("state", {}).get("reported", {}).get("config", {}).get("sensors", {}).get("sim-1", {}) \
        .get("interval_s")


async def _wait_reported(admin: Admin, thing: str, value: float, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while await asyncio.to_thread(_reported_interval, admin, thing) != value:
        if time.monotonic() > deadline:
            raise TimeoutError("reported never matched")
        await asyncio.sleep(0.005)


async def _live(emu: Emulator, admin: Admin, conf: cfg.AgentConfig, thing: str, n: int) -> list[float]:
    agent = Agent(conf)
    task = asyncio.get_running_loop().create_task(agent.run())
    out = []
    try:
        await _wait_reported(admin, thing, 1.0)
        for i in range(n):
            value = 2.0 + i
            t0 = time.perf_counter()
            await asyncio.to_thread(admin.shadow_set_desired, thing, {"config": {"sensors": {"sim-1": {
                "interval_s": value}}}}, SHADOW)
            await _wait_reported(admin, thing, value)
            out.append(time.perf_counter() - t0)
    finally:
        agent.request_stop()
        await task
    return out


async def _restart(emu: Emulator, admin: Admin, conf: cfg.AgentConfig, thing: str, n: int) -> list[float]:
    out = []
    for i in range(n):
        value = 100.0 + i
        t0 = time.perf_counter()
        await asyncio.to_thread(admin.shadow_set_desired, thing, {"config": {"sensors": {"sim-1": {
            "interval_s": value}}}}, SHADOW)
        agent = Agent(conf)
        task = asyncio.get_running_loop().create_task(agent.run())
        try:
            await _wait_reported(admin, thing, value)
            out.append(time.perf_counter() - t0)
        finally:
            agent.request_stop()
            await task
    return out


def _summary(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    return {"median_ms": round(statistics.median(s) * 1000, 1),
            "p95_ms": round(s[min(len(s) - 1, int(0.95 * len(s)))] * 1000, 1), "n": len(s)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bsh-"))
    emu = Emulator(tmp / "emu", components=[DeviceServices()])
    emu.start()
    try:
        admin = Admin(emu.state_dir)
        results: dict[str, Any] = {}
        for name, fn in (("live_delta", _live), ("restart_to_apply", _restart)):
            thing = f"bench-{name.replace('_', '-')}"
            cert, key = emu.issue_identity(thing)
            state = tmp / name
            results[name] = _summary(asyncio.run(fn(emu, admin, _conf(emu, thing, cert, key, state), thing, args.n)))
        results["speedup_median"] = round(results["restart_to_apply"]["median_ms"]
                                          / max(0.1, results["live_delta"]["median_ms"]), 1)
        print(json.dumps({"bench": "shadow_delta_to_reported", **results}, indent=2))
    finally:
        emu.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
