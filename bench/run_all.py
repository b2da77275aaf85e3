"""``make bench``: every benchmark as its own subprocess (so none inherits another's memory, page cache
counters or threads), their JSON documents collected into one, printed and written to
``bench/results/latest.json`` with the machine it ran on.

The sizes are chosen so the whole run stays under about 10 minutes on 2 cores; each bench's full
mode remains available by running it directly (see each module's docstring).

    .venv/bin/python -m bench.run_all [--quick] [--only e2e,spool] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "latest.json"

# name -> (module, arguments for make bench, arguments for --quick)
BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    # 12,000 simulated seconds = 48,000 readings: seven filled 5 KB compact batches (~1 min).
    "payload": ("bench.bench_payload", ["--seconds", "12000"], ["--quick"]),
    # Its defaults: 20 simulated minutes per disk scenario, a 1,000,000-reading backlog (~1 min).
    "spool": ("bench.bench_spool", [], ["--quick"]),
    "e2e": ("bench.bench_e2e", [], ["--quick"]),
    "shadow": ("bench.bench_shadow", ["--n", "20"], ["--n", "5"]),
    # 200 gateways for 60 s inside make bench's budget (~5 min); the 1,000-gateway run is
    # `python -m bench.bench_fleet` on its own (~20 min on 2 cores).
    "fleet": ("bench.bench_fleet", ["--devices", "200", "--registry-size", "1000"], ["--quick"]),
    # 20 scripted plumes, 3 s apart: 40 alarm events (~1.5 min).
    "alarm": ("bench.bench_alarm", ["--plumes", "20"], ["--plumes", "4"]),
    # Black-holed link in network namespaces (root only): outages 15 s x3, 45 s x3, 120 s, 300 s and
    # three ping-cycle phases, agent and pre-network-watch baseline in parallel lanes (~8 min).
    # The 10-minute outage: python -m bench.bench_link --full.
    "link": ("bench.bench_link", [], ["--quick"]),
    # The daemon's RSS against an import-everything baseline, and the per-module import cost (~4 min).
    "footprint": ("bench.bench_footprint", [], ["--quick"]),
    # 400,000 readings through the cloud ingest into a private influxd, 5,000 naive; 40 s of the demo (~2 min).
    "ingest": ("bench.bench_ingest", [], ["--quick"]),
}


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": commit,
    }


def run_one(module: str, argv: list[str], timeout_s: float) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True, text=True,
                             timeout=timeout_s)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s", "argv": argv}
    wall = round(time.monotonic() - t0, 1)
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}", "stderr_tail": out.stderr[-2000:], "argv": argv, "wall_s": wall}
    try:
        result: dict[str, Any] = json.loads(out.stdout)
    except json.JSONDecodeError as exc:
        return {"error": f"not JSON: {exc}", "stdout_tail": out.stdout[-2000:], "argv": argv, "wall_s": wall}
    return {"argv": argv, "wall_s": wall, "result": result}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every bench in its quick mode (a smoke run)")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the combined JSON goes")
    ap.add_argument("--timeout-s", type=float, default=900, help="per bench")
    args = ap.parse_args()
    names = list(BENCHES)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHES]
        if unknown:
            print(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}", file=sys.stderr)
            return 2
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    doc: dict[str, Any] = {
        "command": "make bench" if not args.quick else "python -m bench.run_all --quick",
        "date_utc": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "benches": {},
    }
    for name in names:
        module, full, quick = BENCHES[name]
        print(f"bench {name}: running {module} {' '.join(quick if args.quick else full)}", file=sys.stderr, flush=True)
        doc["benches"][name] = run_one(module, quick if args.quick else full, args.timeout_s)
        print(f"bench {name}: {doc['benches'][name].get('error') or 'ok'} in {doc['benches'][name].get('wall_s')} s",
              file=sys.stderr, flush=True)  # fmt: skip
    doc["wall_s"] = round(time.monotonic() - t0, 1)
    text = json.dumps(doc, indent=2) + "\n"
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    return 1 if any("error" in b for b in doc["benches"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
