"""Link recovery on a black-holed link (issue 15), the agent against the agent as it was before the
network watch (the naive baseline, commit BASELINE_COMMIT, run from a ``git archive`` of it), both
in the same run, each in its own pair of network namespaces with its own emulator
(tests/netfault/harness.py: veth + a tc BPF filter that drops every IP packet, no netem needed).

Measured, at the shipped connection defaults (keep-alive 60 s):

* ``restore_to_first_puback_s``: from lifting the drop filter to the first batch the broker
  receives (the emulator's telemetry recorder stamps it; the broker PUBACKs as it receives), for
  outages of ``--durations`` seconds (each repeated ``--reps`` times when short).
* ``detected_after_s``: from the first dropped packet to the connection declaring the link dead,
  with the drop placed at chosen phases of the ping cycle (``--phases``, fractions of the
  keep-alive after the connect); worst case is just after a ping was answered.
* readings lost (gaps in what the recorder holds) and evicted (the agent's status).

Lanes of outages run in parallel (each lane its own namespaces), so the run takes about the
longest lane, not the sum. ``make bench`` runs durations up to 300 s (~8 min); ``--full`` adds the
10-minute outage (~13 min).

    .venv/bin/python -m bench.bench_link [--full] [--quick] [--durations 15,45,120,300] [--reps 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.netfault.harness import EmulatorInNs, NetFault, Unavailable, agent_config, agent_in_ns  # noqa: E402

BASELINE_COMMIT = "426de2d"  # main just before the network watch and the uplink's resend-at-once
KEEP_ALIVE_S = 60
THING = "gw-0001"
_TS = re.compile(r"^ts=(\S+) .*msg=(connected|disconnected)\b")


@dataclass
class Variant:
    name: str
    tag: str
    tmp: Path
    cwd: Path
    link_keys: bool
    lane: list[tuple[str, float]] = field(default_factory=list)
    net: NetFault | None = None
    emu: EmulatorInNs | None = None
    agent: Any = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def log(self) -> Path:
        return self.tmp / f"{self.tag}-agent.log"

    def start(self) -> None:
        self.net = NetFault(self.tag).open()
        self.emu = EmulatorInNs(self.net, self.tmp / f"{self.tag}-emu", self.tmp / f"{self.tag}-emu.log").start()
        info = self.emu.info()
        assert self.emu.port is not None
        config = agent_config(self.tmp / f"{self.tag}.toml", info, self.emu.port, self.tmp / f"{self.tag}-state",
                              link_keys=self.link_keys, keep_alive_s=KEEP_ALIVE_S, interval=0.5,
                              ping_timeout_ms=15000, probe_interval_s=5.0, batch_max_age_s=1.0,
                              max_reconnect_delay_ms=60000 if self.link_keys else 120000)
        self.agent = agent_in_ns(self.net, config, self.log)
        self.agent.cwd = self.cwd
        self.agent.start()

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.kill()
        if self.emu is not None:
            self.emu.stop()
        if self.net is not None:
            self.net.close()

    # --- observations ---------------------------------------------------------------------------
    def first_batch_after(self, t: float) -> float | None:
        assert self.emu is not None
        db = self.emu.state_dir / "telemetry.db"
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                row = con.execute("SELECT min(received_at) FROM batches WHERE thing = ? AND received_at > ?",
                                  (THING, t)).fetchone()
            finally:
                con.close()
        except sqlite3.Error:
            return None
        return None if row is None or row[0] is None else float(row[0])

    def events(self, kind: str) -> list[float]:
        """Wall times of the agent's own "connected" / "disconnected" log lines."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            m = _TS.match(line)
            if m and m.group(2) == kind:
                out.append(datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp())
        return out

    def wait_flowing(self, timeout: float = 240) -> float:
        """Until connected and a batch arrived after that; returns the connect time."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            ups = self.events("connected")
            if ups and self.first_batch_after(ups[-1]) is not None and (
                    not self.events("disconnected") or ups[-1] > self.events("disconnected")[-1]):
                return ups[-1]
            time.sleep(0.5)
        raise TimeoutError(f"{self.tag}: link not flowing within {timeout}s")

    def wait_puback_after(self, t: float, timeout: float = 300) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.first_batch_after(t)
            if got is not None:
                return got - t
            time.sleep(0.1)
        raise TimeoutError(f"{self.tag}: no batch within {timeout}s of the restore")

    def wait_detected_after(self, t: float, timeout: float = 200) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            downs = [d for d in self.events("disconnected") if d > t]
            if downs:
                return downs[0] - t
            time.sleep(0.2)
        raise TimeoutError(f"{self.tag}: dead link not detected within {timeout}s")

    def integrity(self) -> dict[str, Any]:
        assert self.emu is not None
        got = self.emu.telemetry(THING)
        st = self.agent.status() if self.agent is not None else None
        spool = (st or {}).get("spool", {})
        return {"received": got["received"], "gaps_within_received": got["gaps"],
                "duplicates": got["duplicates"],
                "evicted": spool.get("evicted_routine", 0) + spool.get("evicted_alarm", 0) if spool else None}


def _drop_at(connected_at: float, phase: float) -> float:
    """The next wall time at ``phase`` of the ping cycle (pings go at connect + k * keep-alive)."""
    now = time.time() + 2
    k = max(0, int((now - connected_at - phase * KEEP_ALIVE_S) // KEEP_ALIVE_S) + 1)
    return connected_at + (k * KEEP_ALIVE_S) + phase * KEEP_ALIVE_S


def run_lane(v: Variant, schedule: list[tuple[str, float]]) -> None:
    """``schedule``: ("outage", seconds) or ("detect", phase). Appends a sample per item."""
    try:
        v.start()
        for kind, value in schedule:
            up = v.wait_flowing()
            net = v.net
            assert net is not None
            if kind == "detect":
                t_drop = _drop_at(up, value)
                time.sleep(max(0.0, t_drop - time.time()))
                t_drop = time.time()
                net.blackhole()
                detected = v.wait_detected_after(t_drop)
                t_restore = time.time()
                net.restore()
                v.samples.append({"kind": "detect", "phase": value, "detected_after_s": round(detected, 2),
                                  "restore_to_first_puback_s": round(v.wait_puback_after(t_restore), 2)})
            else:
                t_drop = time.time()
                net.blackhole()
                time.sleep(value)
                t_restore = time.time()
                net.restore()
                took = v.wait_puback_after(t_restore)
                downs = [d - t_drop for d in v.events("disconnected") if t_drop < d < t_restore]
                v.samples.append({"kind": "outage", "outage_s": value, "restore_to_first_puback_s": round(took, 2),
                                  "detected_after_s": round(downs[0], 2) if downs else None,
                                  "drop_phase": round(((t_drop - up) % KEEP_ALIVE_S) / KEEP_ALIVE_S, 2)})
            time.sleep(3)
        v.samples.append({"kind": "integrity", **v.integrity()})
    except (TimeoutError, RuntimeError, AssertionError, OSError, Unavailable) as exc:
        v.error = f"{type(exc).__name__}: {exc}"
    finally:
        v.stop()


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))], 2)


def summarise(variants: list[Variant]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in variants:
        outages = [s for s in v.samples if s["kind"] == "outage"]
        detects = [s for s in v.samples if s["kind"] == "detect"]
        rtp = [s["restore_to_first_puback_s"] for s in outages]
        det = [s["detected_after_s"] for s in [*detects, *outages] if s.get("detected_after_s") is not None]
        by_d: dict[str, list[float]] = {}
        for s in outages:
            by_d.setdefault(str(int(s["outage_s"])), []).append(s["restore_to_first_puback_s"])
        out[v.name] = out.get(v.name, {"samples": [], "errors": []})
        out[v.name]["samples"] += v.samples
        if v.error:
            out[v.name]["errors"].append(f"{v.tag}: {v.error}")
        acc = out[v.name].setdefault("_rtp", []) + rtp
        out[v.name]["_rtp"] = acc
        out[v.name]["_det"] = out[v.name].get("_det", []) + det
        per = out[v.name].setdefault("restore_to_first_puback_s_by_outage", {})
        for k, xs in by_d.items():
            per.setdefault(k, []).extend(xs)
    for _name, r in out.items():
        rtp, det = r.pop("_rtp"), r.pop("_det")
        r["restore_to_first_puback_s"] = {"n": len(rtp), "p50": _pct(rtp, 0.5), "p95": _pct(rtp, 0.95),
                                          "max": max(rtp) if rtp else None,
                                          "mean": round(statistics.fmean(rtp), 2) if rtp else None}
        r["detected_after_s"] = {"n": len(det), "max": max(det) if det else None,
                                 "bound_1_5x_keep_alive": 1.5 * KEEP_ALIVE_S,
                                 "within_bound": all(d <= 1.5 * KEEP_ALIVE_S for d in det) if det else None}
    if "agent" in out and "baseline" in out:
        a, b = out["agent"]["restore_to_first_puback_s"], out["baseline"]["restore_to_first_puback_s"]
        if a["p95"] and b["p95"]:
            out["ratio_p95_baseline_over_agent"] = round(b["p95"] / a["p95"], 1)
    return out


def baseline_tree(tmp: Path) -> Path | None:
    """The baseline agent's code (agent/, drivers/, provisioning/ at BASELINE_COMMIT)."""
    dest = tmp / "baseline"
    dest.mkdir()
    try:
        archive = subprocess.run(["git", "archive", BASELINE_COMMIT, "agent", "drivers", "provisioning"],
                                 cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError):
        return None
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--durations", default="15,45,120,300", help="outage lengths in seconds")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of outages up to 60 s")
    ap.add_argument("--phases", default="0.02,0.5,0.98", help="ping-cycle phases for the detection lane")
    ap.add_argument("--full", action="store_true", help="durations 15,30,60,120,300,600 and five phases")
    ap.add_argument("--quick", action="store_true", help="one 15 s and one 90 s outage (a smoke run)")
    args = ap.parse_args()
    if args.full:
        args.durations, args.phases = "15,30,60,120,300,600", "0.02,0.25,0.5,0.75,0.98"
    if args.quick:
        args.durations, args.reps, args.phases = "15,90", 1, "0.98"
    durations = [float(d) for d in args.durations.split(",")]
    phases = [float(p) for p in args.phases.split(",")]
    short = [("outage", d) for d in durations if d <= 60 for _ in range(args.reps)]
    longs = sorted((d for d in durations if d > 60), reverse=True)
    # Lanes: the longest outage alone; the other long ones share a lane with the detection phases
    # when they fit in about the same time; the short repeated ones in their own lane.
    lanes: list[list[tuple[str, float]]] = []
    if longs:
        lanes.append([("outage", longs[0])])
        rest = [("outage", d) for d in longs[1:]]
        if rest:
            lanes.append(rest)
    lanes.append([("detect", p) for p in phases])
    if short:
        lanes.append(short)

    try:
        NetFault("chk").open().close()
    except Unavailable as exc:
        print(json.dumps({"bench": "link", "skipped": f"network namespaces unavailable: {exc}"}))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-link-"))
    base = baseline_tree(tmp)
    variants: list[Variant] = []
    for i, lane in enumerate(lanes):
        variants.append(Variant("agent", f"{i}a", tmp, ROOT, link_keys=True, lane=lane))
        if base is not None:
            variants.append(Variant("baseline", f"{i}b", tmp, base, link_keys=False, lane=lane))
    threads = []
    for v in variants:
        t = threading.Thread(target=run_lane, args=(v, v.lane), daemon=True)
        t.start()
        threads.append(t)
    t0 = time.monotonic()
    for t in threads:
        t.join()
    doc = {
        "bench": "link",
        "keep_alive_s": KEEP_ALIVE_S,
        "baseline": f"agent at {BASELINE_COMMIT} (awscrt's own full-jitter reconnect up to 120 s, retry waits "
                    "inside in-flight publishes)" if base is not None else "unavailable (no git history)",
        "durations_s": durations,
        "reps_short": args.reps,
        "phases": phases,
        "lanes": [[f"{k}:{v}" for k, v in lane] for lane in lanes],
        "wall_s": round(time.monotonic() - t0, 1),
        "results": summarise(variants),
        "aim": {"restore_to_first_puback_p95_s": 10, "detection_max_s": 1.5 * KEEP_ALIVE_S},
    }
    print(json.dumps(doc, indent=2))
    return 0 if not any(v.error for v in variants if v.name == "agent") else 1


if __name__ == "__main__":
    sys.exit(main())
