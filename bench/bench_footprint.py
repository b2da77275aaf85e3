"""Daemon footprint: RSS of ``methane-agent run`` in steady state (8 simulated channels at 1 Hz,
connected to the local emulator) against a naive baseline that imports every module of the project
first (what the CLI did before it loaded only the command being run), plus a per-module import
cost table.

    .venv/bin/python -m bench.bench_footprint [--quick] [--seconds 70]

The default window (70 s after 5 s of warm-up) spans at least one 60 s batch, so the daemon has
encoded and published when its modules are listed.

Import layers (``import_layers``): one fresh interpreter imports the daemon's layers in order and
reads VmRSS after each, so each row is what that layer adds on top of those above it (the rows do
not overlap and sum to what the daemon's imports cost before it runs).

Per-module cost: each module imported alone in a fresh interpreter, VmRSS after the import minus
VmRSS of the bare interpreter (shared libraries it maps count, as they do in the daemon's VmRSS; a
module's cost includes what it imports, so the rows overlap), and the cumulative import time from
``-X importtime``; ``in_daemon`` says whether the real daemon had loaded it when it stopped (the
daemon runs under ``bench.footprint_probe``, which writes its ``sys.modules`` at exit).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_e2e import THING, agent_steady, connection_info
from bench.footprint_probe import not_in_run

ROOT = Path(__file__).resolve().parents[1]
EAGER = "bench.footprint_eager"
PROBE = "bench.footprint_probe"
# Modules worth a line in the table: what the daemon needs, and what it should not carry.
MODULES = [
    "asyncio", "sqlite3", "pydantic", "agent.config", "awscrt.mqtt5", "awsiot.mqtt5_client_builder",
    "awsiot.iotshadow", "awsiot.iotjobs", "agent.connection", "agent.spool", "agent.sampler", "agent.uplink",
    "agent.remote", "agent.runtime", "agent.payload.compact", "agent.payload.jsonfmt", "drivers.simulated",
    "cryptography.x509", "provisioning.flow", "provisioning.rotation", "tenacity", "pymodbus", "emulator.cli",
    "cloud.preprovision.hook",
]
# (what, modules): the daemon's imports in layers, each costed on top of the rows above it.
LAYERS = [
    ("hashlib and hmac: libcrypto (the config hash; pydantic.types imports secrets -> hmac)", ["hashlib", "hmac"]),
    ("pydantic with its schema builder", ["pydantic", "pydantic.main", "pydantic.fields", "pydantic.types",
                                          "pydantic._internal._generate_schema", "pydantic.json_schema"]),
    ("pydantic.networks and the plugin loader: importlib.metadata, email, zipfile, csv",
     ["pydantic.networks", "pydantic.plugin._loader"]),
    ("ssl (asyncio imports it)", ["ssl"]),
    ("asyncio", ["asyncio"]),
    ("awscrt MQTT5 (its native library)", ["awscrt.mqtt5"]),
    ("awsiotsdk: MQTT5 builder, shadow and jobs clients", ["awsiot.mqtt5_client_builder", "awsiot.iotshadow",
                                                          "awsiot.iotjobs"]),
    ("sqlite3", ["sqlite3"]),
    ("the project's run modules and config models", ["agent.commands.run_cmd", "agent.runtime"]),
]  # fmt: skip
_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)\s*$")


def _rss_kib_after(module: str) -> tuple[int, int]:
    code = ("import importlib, sys\n"
            "def rss():\n"
            "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])\n"
            "r0 = rss()\n"
            f"importlib.import_module({module!r})\n"
            "print(r0, rss())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)  # fmt: skip
    r0, r1 = (int(x) for x in out.stdout.split())
    return r0, r1


def _import_us(module: str) -> int:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    for line in out.stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m and m.group(4) == module:
            return int(m.group(2))
    return 0


def import_layers() -> list[dict[str, Any]]:
    code = ("import importlib, json\n"
            "def rss():\n"
            "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])\n"
            "rows = [['interpreter', rss()]]\n"
            f"for what, mods in {LAYERS!r}:\n"
            "    for m in mods:\n"
            "        importlib.import_module(m)\n"
            "    rows.append([what, rss()])\n"
            "print(json.dumps(rows))\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True)  # fmt: skip
    rows = json.loads(out.stdout)
    return [{"layer": what, "rss_kib_added": kib - (rows[i - 1][1] if i else 0), "rss_kib_total": kib}
            for i, (what, kib) in enumerate(rows)]  # fmt: skip


def module_table(in_daemon: set[str]) -> list[dict[str, Any]]:
    rows = []
    for mod in MODULES:
        r0, r1 = _rss_kib_after(mod)
        rows.append({"module": mod, "rss_kib_alone": r1 - r0, "import_ms": round(_import_us(mod) / 1000, 1),
                     "in_daemon": mod in in_daemon})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a 10 s steady window instead of 70 s")
    ap.add_argument("--seconds", type=float, help="steady window per run")
    args = ap.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 70.0)

    from emulator import Emulator

    report: dict[str, Any] = {"bench": "footprint", "channels": 8, "interval_s": 1.0, "steady_s": seconds}
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        work = Path(tmp)
        with Emulator(work / "emu", thing=THING) as emu:
            info = connection_info(emu)
            os.environ["FOOTPRINT_MODULES_OUT"] = str(work / "modules.json")
            agent = agent_steady(work / "agent", info, seconds, ["-m", PROBE])
            naive = agent_steady(work / "naive", info, seconds, ["-m", EAGER])
        loaded = set(json.loads((work / "modules.json").read_text()))
    report["agent"] = agent
    report["naive_eager_imports"] = naive
    report["modules_loaded_by_daemon"] = len(loaded)
    report["not_loaded_by_daemon"] = sorted(m for m in MODULES if m not in loaded)
    report["not_in_run_but_loaded"] = not_in_run(loaded)  # must stay empty (tests/e2e/test_footprint.py)
    report["import_layers"] = import_layers()
    report["import_cost"] = module_table(loaded)
    report["ratio_rss_naive_over_agent"] = round(naive["rss_kib_max"] / agent["rss_kib_max"], 3)
    report["aim_rss_kib"] = 40 * 1024
    report["aim_met"] = agent["rss_kib_max"] <= 40 * 1024
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
