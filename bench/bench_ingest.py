"""Cloud-side ingest benchmark, printing one JSON document.

* ``throughput``: simulated gas-site streams (4 channels, 1 Hz, several devices) encoded by the
  agent's ``fit`` into filled 5 KB ``compact`` batches, as a backlog drain sends them, then decoded
  and written to a private influxd by ``cloud.ingest.Ingestor`` (decode, de-duplicate, line
  protocol, one ``/write`` per batch with its ledger point). Ingest runs in 1, 2 and 3 worker
  processes (devices partitioned between them, so each device's ledger has one writer). Timed from
  the first batch handed over to the last write acknowledged; CPU of the workers and of influxd
  from /proc. Baseline in the same run: the naive writer, one JSON document per reading parsed and
  written as one point per HTTP request. ``influxd_alone_same_lines`` posts the very lines the
  ingest writes, formatted beforehand, from 2 processes: influxd's own ceiling on this machine.
  The load average is recorded because other work on a shared machine moves every absolute figure.
* ``latency``: the demo's pipeline (``emulator.demo.agent_config``: fleet provisioning, 1 Hz
  simulated site sensor, ``batch_max_age_s`` as the demo sets it) through the emulator and the
  local ingest; a poller queries the store every 50 ms and records when each reading first becomes
  queryable; latency = that moment minus the reading's own timestamp.

    .venv/bin/python -m bench.bench_ingest [--quick] [--readings 400000] [--latency-s 40] [--influxd-variants]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.payload import decode_columns, fit  # noqa: E402
from agent.reading import Reading  # noqa: E402
from cloud.deadletter import DirDeadLetter, Message  # noqa: E402
from cloud.influx import InfluxClient  # noqa: E402
from cloud.ingest import Ingestor, parse_topic  # noqa: E402
from cloud.localstore import LocalInflux  # noqa: E402
from cloud.schema import reading_lines  # noqa: E402
from drivers.simulated import SimulatedDriver, SimulatedSettings  # noqa: E402

T0 = 1_790_000_000_000
BUDGET = 5120 - 40  # a 5 KB billed unit minus the topic


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def streams(readings: int, devices: int) -> dict[str, list[Reading]]:
    per = readings // devices
    out: dict[str, list[Reading]] = {}
    for d in range(devices):
        drv = SimulatedDriver(SimulatedSettings(seed=d, leaks_per_hour=20))
        rs: list[Reading] = []
        s = 0
        while len(rs) < per:
            for m in drv.read():
                rs.append(Reading(len(rs) + 1, T0 + 1000 * s, True, "sim-1", m.quantity, m.value, m.unit))
            s += 1
        out[f"gw-{d:04d}"] = rs[:per]
    return out


def batches(device: str, rs: list[Reading]) -> list[tuple[str, bytes]]:
    topic = f"dt/methane/site-{int(device[-4:]) % 3}/{device}/telemetry"
    out, i = [], 0
    while i < len(rs):
        payload, n = fit(device, rs[i : i + 20000], "compact", BUDGET, "0badcafe")
        out.append((topic, payload))
        i += n
    return out


def _worker(url: str, db: str, work: list[tuple[str, bytes]], dl: str, go: Any, q: Any) -> None:
    ing = Ingestor(InfluxClient(url, db, timeout=60), DirDeadLetter(dl))
    go.wait()
    c0 = time.process_time()
    stored = handled = 0
    for topic, payload in work:
        res = ing.ingest(Message(topic, payload, None, 0))
        stored += res.received
        handled += res.received + res.duplicates
    q.put({"stored": stored, "handled": handled, "cpu_s": time.process_time() - c0,
           "dead_letters": ing.stats.dead_letters})


def run_ingest(server: LocalInflux, db: str, work: dict[str, list[tuple[str, bytes]]], workers: int,
               tmp: Path) -> dict[str, Any]:
    InfluxClient(server.url, db).create_database()
    ctx = mp.get_context("spawn")
    go, q = ctx.Event(), ctx.Queue()
    shares: list[list[tuple[str, bytes]]] = [[] for _ in range(workers)]
    for i, device in enumerate(sorted(work)):
        shares[i % workers].extend(work[device])
    procs = [ctx.Process(target=_worker, args=(server.url, db, share, str(tmp / f"dl-{db}-{i}"), go, q))
             for i, share in enumerate(shares)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # imports done in the children
    assert server.proc is not None
    influx_cpu0 = _cpu_s(server.proc.pid)
    t0 = time.perf_counter()
    go.set()
    results = [q.get(timeout=1800) for _ in procs]
    wall = time.perf_counter() - t0
    influx_cpu = _cpu_s(server.proc.pid) - influx_cpu0
    for p in procs:
        p.join(30)
    handled = sum(r["handled"] for r in results)
    return {
        "workers": workers,
        "readings": handled,
        "stored": sum(r["stored"] for r in results),
        "dead_letters": sum(r["dead_letters"] for r in results),
        "wall_s": round(wall, 3),
        "readings_per_s": round(handled / wall),
        "ingest_cpu_us_per_reading": round(sum(r["cpu_s"] for r in results) / handled * 1e6, 2),
        "influxd_cpu_us_per_reading": round(influx_cpu / handled * 1e6, 2),
    }


def _post(port: int, db: str, bodies: list[bytes], gzipped: bool, go: Any, q: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "text/plain; charset=utf-8", **({"Content-Encoding": "gzip"} if gzipped else {})}
    go.wait()
    for body in bodies:
        conn.request("POST", f"/write?db={db}&precision=ns", body, headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 204:
            raise RuntimeError(f"influxd refused a write: HTTP {resp.status}")
    q.put(True)


def run_influxd_alone(server: LocalInflux, db: str, work: dict[str, list[tuple[str, bytes]]], workers: int,
                      per_write: int = 0, gzipped: bool = False) -> dict[str, Any]:
    """influxd's own share: the very lines the ingest writes (formatted, and gzipped when asked,
    before the clock starts), posted by ``workers`` processes with nothing else to do, one batch per
    write (or ``per_write`` lines per write). No ingest can go faster than this."""
    InfluxClient(server.url, db).create_database()
    shares: list[list[str]] = [[] for _ in range(workers)]
    batches_of: list[list[list[str]]] = [[] for _ in range(workers)]
    for i, device in enumerate(sorted(work)):
        for topic, payload in work[device]:
            lines = reading_lines(decode_columns(payload), parse_topic(topic).site)
            shares[i % workers] += lines
            batches_of[i % workers].append(lines)
    chunks = [[s[j : j + per_write] for j in range(0, len(s), per_write)] if per_write else b
              for s, b in zip(shares, batches_of, strict=True)]
    bodies = [[_body(c, gzipped) for c in share] for share in chunks]
    n = sum(len(s) for s in shares)
    ctx = mp.get_context("spawn")
    go, q = ctx.Event(), ctx.Queue()
    assert server.port is not None and server.proc is not None
    procs = [ctx.Process(target=_post, args=(server.port, db, b, gzipped, go, q)) for b in bodies]
    for p in procs:
        p.start()
    time.sleep(2.0)
    influx_cpu0 = _cpu_s(server.proc.pid)
    t0 = time.perf_counter()
    go.set()
    for _ in procs:
        q.get(timeout=1800)
    wall = time.perf_counter() - t0
    influx_cpu = _cpu_s(server.proc.pid) - influx_cpu0
    for p in procs:
        p.join(30)
    return {"workers": workers, "readings": n, "lines_per_write": per_write or round(n / sum(map(len, bodies))),
            "gzip": gzipped, "wall_s": round(wall, 3), "readings_per_s": round(n / wall),
            "influxd_cpu_us_per_reading": round(influx_cpu / n * 1e6, 2)}


def _body(lines: list[str], gzipped: bool) -> bytes:
    raw = "\n".join(lines).encode()
    return gzip.compress(raw, 1) if gzipped else raw


def run_naive(server: LocalInflux, rs: list[Reading], device: str) -> dict[str, Any]:
    """One JSON document per reading -> json.loads -> one point -> one HTTP POST."""
    db = "naive"
    InfluxClient(server.url, db).create_database()
    docs = [json.dumps({"device": device, "seq": r.seq, "ts_ms": r.ts_ms, "sensor_id": r.sensor_id,
                        "quantity": r.quantity, "value": r.value, "unit": r.unit}).encode() for r in rs]
    url = f"{server.url}/write?db={db}&precision=ms"
    t0 = time.perf_counter()
    c0 = time.process_time()
    for raw in docs:
        d = json.loads(raw)
        line = (f"{d['quantity']},device={d['device']},sensor={d['sensor_id']},unit={d['unit']} "
                f"value={float(d['value'])!r},seq={d['seq']}i {d['ts_ms']}")
        with urllib.request.urlopen(urllib.request.Request(url, data=line.encode(), method="POST"), timeout=30):
            pass
    wall = time.perf_counter() - t0
    return {"readings": len(docs), "wall_s": round(wall, 3), "readings_per_s": round(len(docs) / wall),
            "cpu_us_per_reading": round((time.process_time() - c0) / len(docs) * 1e6, 2)}


def throughput(readings: int, devices: int, naive_readings: int, influxd_variants: bool = False) -> dict[str, Any]:
    data = streams(readings, devices)
    work = {dev: batches(dev, rs) for dev, rs in data.items()}
    n_batches = sum(len(b) for b in work.values())
    payload_bytes = sum(len(p) for b in work.values() for _, p in b)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        with LocalInflux(tmp / "influx") as server:
            load0 = os.getloadavg()[0]
            one = run_ingest(server, "w1", work, 1, tmp)
            two = run_ingest(server, "w2", work, 2, tmp)
            three = run_ingest(server, "w3", work, 3, tmp)
            replay = run_ingest(server, "w2", work, 2, tmp)  # the same batches again: all duplicates
            alone = run_influxd_alone(server, "alone", work, 2)
            variants = {"gzip_bodies": run_influxd_alone(server, "alone_gz", work, 2, gzipped=True),
                         "20000_lines_per_write": run_influxd_alone(server, "alone_20k", work, 2, per_write=20000),
                         "1000_lines_per_write": run_influxd_alone(server, "alone_1k", work, 2, per_write=1000),
                         } if influxd_variants else {}
            naive = run_naive(server, data[sorted(data)[0]][:naive_readings], sorted(data)[0])
            load1 = os.getloadavg()[0]
            check = InfluxClient(server.url, "w2").query_one('SELECT sum("received") FROM "ingest_batch"')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = max(one["readings_per_s"], two["readings_per_s"], three["readings_per_s"])
    cores = os.cpu_count() or 1
    ingest_us, influxd_us = two["ingest_cpu_us_per_reading"], two["influxd_cpu_us_per_reading"]
    return {
        "readings": sum(len(v) for v in data.values()),
        "devices": devices,
        "batches": n_batches,
        "readings_per_batch": round(sum(len(v) for v in data.values()) / n_batches, 1),
        "bytes_per_reading": round(payload_bytes / sum(len(v) for v in data.values()), 3),
        "ingest_1_worker": one,
        "ingest_2_workers": two,
        "ingest_3_workers": three,
        "replay_all_duplicates": {**replay, "stored_after_replay": int(check[0].values[0][1]) if check else None},
        "influxd_alone_same_lines": alone,
        **({"influxd_alone_variants": variants} if variants else {}),
        "naive_json_point_per_request": naive,
        "best_readings_per_s": best,
        "ratio_vs_naive": round(best / naive["readings_per_s"], 1),
        "ratio_vs_influxd_alone": round(best / alone["readings_per_s"], 2),
        "cores": cores,
        "load_avg_1m_start_end": [round(load0, 2), round(load1, 2)],
        # What the CPU per reading allows on an otherwise idle machine (all cores busy, no waiting):
        "cpu_bound_readings_per_s": round(cores * 1e6 / (ingest_us + influxd_us)),
        "influxd_bound_readings_per_s": round(cores * 1e6 / influxd_us),
        "aim_readings_per_s": 200_000,
    }


def latency(seconds: float) -> dict[str, Any]:
    from emulator import Emulator
    from emulator.demo import BATCH_MAX_AGE_S, DEMO_SERIAL, agent_config
    from emulator.ingest import LocalIngest
    from emulator.services.device_services import DeviceServices

    tmp = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    ingest = LocalIngest()
    seen: dict[int, float] = {}
    stamps: dict[int, int] = {}
    stop = threading.Event()
    try:
        with Emulator(tmp / "emu", components=[DeviceServices(), ingest], fleet_provisioning=True) as emu:
            conf = tmp / "agent.toml"
            (tmp / "serial").write_text(DEMO_SERIAL + "\n")
            conf.write_text(agent_config(tmp / "agent-state", emu.info, None, tmp / "serial"))
            client = ingest.client
            assert client is not None

            def poll() -> None:
                while not stop.is_set():
                    now = time.time()
                    for s in client.query_one('SELECT "seq" FROM "methane","temperature","humidity","pressure" '
                                              "WHERE time > now() - 2m", epoch="ms"):
                        for t, seq in s.values:
                            if seq not in seen:
                                seen[seq] = now
                                stamps[seq] = t
                    time.sleep(0.05)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            import subprocess

            agent = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(conf)], cwd=ROOT,
                                     stderr=subprocess.DEVNULL)
            time.sleep(seconds)
            agent.terminate()
            agent.wait(30)
            time.sleep(1.0)
            stop.set()
            poller.join(5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # The first batch waits for provisioning; measure the steady stream after it.
    seqs = sorted(seen)
    steady = [s for s in seqs if s > 20]
    lat = sorted(seen[s] - stamps[s] / 1000 for s in steady)
    if not lat:
        return {"error": "no readings became queryable"}
    return {
        "batch_max_age_s": BATCH_MAX_AGE_S,
        "readings": len(lat),
        "p50_s": round(statistics.median(lat), 3),
        "p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3),
        "max_s": round(lat[-1], 3),
        "poll_interval_s": 0.05,
        "aim_p95_s": 2.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--readings", type=int, default=400_000)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--naive-readings", type=int, default=5_000)
    ap.add_argument("--latency-s", type=float, default=40.0)
    ap.add_argument("--influxd-variants", action="store_true",
                    help="also post the lines to influxd gzipped, and 1,000 / 20,000 to a write")
    args = ap.parse_args()
    if args.quick:
        args.readings, args.naive_readings, args.latency_s = 40_000, 1_000, 15.0
    doc = {"throughput": throughput(args.readings, args.devices, args.naive_readings, args.influxd_variants),
           "latency": latency(args.latency_s)}
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
