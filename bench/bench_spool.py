"""Spool benchmark: disk bytes written per reading, throughput and memory, against a naive baseline.

Prints one JSON document. Every scenario runs in its own subprocess so ``/proc/self/io``
``write_bytes`` (bytes this process caused to be written to storage, counted per 4 KiB page-cache page
dirtied) belongs to that scenario alone. Time is simulated: the spool gets a fake monotonic clock and
the loop feeds "one second" of 8 channels x 1 Hz per tick without sleeping, with an ack of everything
sent every 60 simulated seconds (as the uplink would after a PUBACK).

Group commits go to the spool's journal (agent/spool/journal.py) and fold into SQLite at 64 KiB;
``spool_1s_journal_off`` is the same spool committing every group straight into SQLite (the design
before the journal), measured in the same run.

Because nothing sleeps, the kernel's own writeback (dirty pages older than 30 s are written, and the
next append to the same page dirties it again) would never happen during the run and the figure would
be flattering. ``writeback_s`` emulates it pessimistically: every 30 simulated seconds the spool's files
are fdatasync'ed, so a later write to a partly filled page is counted again, as on a real device.

    .venv/bin/python -m bench.bench_spool [--minutes 20] [--backlog 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.spool import Reading, Spool, SpoolTuning  # noqa: E402

CHANNELS = 8
ACK_EVERY_S = 60
WRITEBACK_S = 30
TS0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def write_bytes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes")


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def tick_readings(sec: int, rng: random.Random) -> list[Reading]:
    """One second of a gateway: 8 channels (methane ppm, %LEL, temperature, humidity, ...)."""
    return [
        Reading.new(
            ts_ms=TS0 + sec * 1000 + ch * 3,
            clock_synced=True,
            sensor_id=f"s{ch // 4}",
            quantity=("ch4_ppm", "ch4_lel", "temp", "rh")[ch % 4],
            value=round(rng.gauss(1.9 + ch, 0.05), 3),
            unit=("ppm", "%LEL", "degC", "%")[ch % 4],
            alarm=False,
        )
        for ch in range(CHANNELS)
    ]


def _sync_files(base: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal", ".journal"):  # .journal: the spool's own (journal.py)
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(f"{base}{suffix}", os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)


# --- child scenarios ---------------------------------------------------------------------------------
def child_disk_spool(p: dict[str, Any]) -> dict[str, Any]:
    tuning = replace(SpoolTuning(), **p.get("tuning", {}))
    clock = FakeClock()
    path = Path(p["dir"]) / "spool.db"
    sp = Spool(
        path,
        max_bytes=256 << 20,
        min_free_disk_bytes=0,
        commit_interval_s=p["commit_interval_s"],
        synchronous=p.get("synchronous", "NORMAL"),
        tuning=tuning,
        clock=clock,
    )
    sp.open()
    rng = random.Random(1)
    seconds = int(p["minutes"] * 60)
    cursor = 0
    n = 0
    _sync_files(path)
    start = write_bytes()
    for sec in range(seconds):
        clock.t = float(sec)
        if sp.commit_due(clock.t):
            sp.commit()
        n += len(sp.append(tick_readings(sec, rng)))
        if sec % ACK_EVERY_S == ACK_EVERY_S - 1:
            while batch := sp.read_after(cursor, 4096):
                sp.ack(batch[0].seq, batch[-1].seq)
                cursor = batch[-1].seq
        if p.get("writeback") and sec % WRITEBACK_S == WRITEBACK_S - 1:
            _sync_files(path)
    clock.t = float(seconds)
    sp.commit()
    _sync_files(path)
    written = write_bytes() - start
    st = sp.stats()
    sp.close()
    return {"readings": n, "write_bytes": written, "bytes_per_reading": round(written / n, 1),
            "file_bytes": st.file_bytes, "left_in_spool": st.readings}


def child_disk_naive(p: dict[str, Any]) -> dict[str, Any]:
    conn = _naive_open(Path(p["dir"]) / "naive.db")
    rng = random.Random(1)
    seconds = int(p["minutes"] * 60)
    seq = 0
    cursor = 0
    _sync_files(Path(p["dir"]) / "naive.db")
    start = write_bytes()
    for sec in range(seconds):
        for r in tick_readings(sec, rng):
            seq += 1
            _naive_insert(conn, seq, r)
        if sec % ACK_EVERY_S == ACK_EVERY_S - 1:
            conn.execute("DELETE FROM readings WHERE seq > ? AND seq <= ?", (cursor, seq))
            conn.commit()
            cursor = seq
        if p.get("writeback") and sec % WRITEBACK_S == WRITEBACK_S - 1:
            _sync_files(Path(p["dir"]) / "naive.db")
    written = write_bytes() - start
    conn.close()
    return {"readings": seq, "write_bytes": written, "bytes_per_reading": round(written / seq, 1)}


def _naive_open(path: Path) -> sqlite3.Connection:
    """What one would write first: default page size, rollback journal, a wide row, a commit per row."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS readings (seq INTEGER PRIMARY KEY, ts_ms INTEGER, clock_synced INTEGER,"
        " sensor_id TEXT, quantity TEXT, value REAL, unit TEXT, flags TEXT, alarm INTEGER)"
    )
    conn.commit()
    return conn


def _naive_insert(conn: sqlite3.Connection, seq: int, r: Reading) -> None:
    conn.execute(
        "INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, r.ts_ms, r.clock_synced, r.sensor_id, r.quantity, r.value, r.unit, json.dumps(r.flags), r.alarm),
    )
    conn.commit()


def child_throughput(p: dict[str, Any]) -> dict[str, Any]:
    """append + commit (per 8) + read + ack (per 480), flat out, for ``readings`` readings."""
    total = p["readings"]
    rng = random.Random(2)
    ticks = [tick_readings(s, rng) for s in range(total // CHANNELS)]
    d = Path(p["dir"])
    if p["impl"] == "spool":
        tuning = replace(SpoolTuning(), **p.get("tuning", {}))
        sp = Spool(d / "spool.db", max_bytes=1 << 30, min_free_disk_bytes=0, commit_interval_s=1.0, tuning=tuning)
        sp.open()
        cursor = 0
        t0 = time.perf_counter()
        for sec, items in enumerate(ticks):
            sp.append(items)
            sp.commit()
            if sec % ACK_EVERY_S == ACK_EVERY_S - 1:
                while batch := sp.read_after(cursor, 4096):
                    sp.ack(batch[0].seq, batch[-1].seq)
                    cursor = batch[-1].seq
        dt = time.perf_counter() - t0
        sp.close()
    else:
        conn = _naive_open(d / "naive.db")
        seq = cursor = 0
        t0 = time.perf_counter()
        for sec, items in enumerate(ticks):
            for r in items:
                seq += 1
                _naive_insert(conn, seq, r)
            if sec % ACK_EVERY_S == ACK_EVERY_S - 1:
                rows = conn.execute("SELECT * FROM readings WHERE seq > ? ORDER BY seq", (cursor,)).fetchall()
                conn.execute("DELETE FROM readings WHERE seq > ? AND seq <= ?", (cursor, rows[-1][0]))
                conn.commit()
                cursor = rows[-1][0]
        dt = time.perf_counter() - t0
        conn.close()
    n = len(ticks) * CHANNELS
    return {"readings": n, "seconds": round(dt, 3), "readings_per_s": round(n / dt)}


def child_backlog(p: dict[str, Any]) -> dict[str, Any]:
    """RSS while paging through a large backlog with read_after (the uplink's access pattern)."""
    d = Path(p["dir"])
    path = d / "spool.db"
    rng = random.Random(3)
    sp = Spool(path, max_bytes=1 << 34, min_free_disk_bytes=0, commit_interval_s=1.0)
    sp.open()
    t0 = time.perf_counter()
    for sec in range(p["backlog"] // CHANNELS):
        sp.append(tick_readings(sec, rng))
        if sec % 1000 == 999:
            sp.commit()
    sp.commit()
    fill_s = time.perf_counter() - t0
    sp.close()
    # A fresh open, as after a reboot with a full spool: quick_check and counting included.
    t0 = time.perf_counter()
    sp = Spool(path, max_bytes=1 << 34, min_free_disk_bytes=0, commit_interval_s=1.0)
    sp.open()
    open_s = time.perf_counter() - t0
    rss_open = rss_kib()
    cursor = 0
    pages = 0
    peak = rss_open
    lat_first = lat_last = 0.0
    seen = 0
    t0 = time.perf_counter()
    while True:
        t1 = time.perf_counter()
        batch = sp.read_after(cursor, 500)
        lat = time.perf_counter() - t1
        if not batch:
            break
        lat_first = lat_first or lat
        lat_last = lat
        seen += len(batch)
        cursor = batch[-1].seq
        pages += 1
        if pages % 100 == 0:
            peak = max(peak, rss_kib())
    page_s = time.perf_counter() - t0
    peak = max(peak, rss_kib())
    st = sp.stats()
    sp.close()
    return {
        "backlog": st.readings,
        "read": seen,
        "file_mib": round(st.file_bytes / 2**20, 1),
        "bytes_per_row_on_disk": round(st.file_bytes / max(st.readings, 1), 1),
        "fill_s": round(fill_s, 1),
        "open_s_with_quick_check": round(open_s, 2),
        "rss_after_open_kib": rss_open,
        "rss_peak_while_paging_kib": peak,
        "rss_growth_kib": peak - rss_open,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "read_after_500_ms_first": round(lat_first * 1000, 3),
        "read_after_500_ms_last": round(lat_last * 1000, 3),
        "paging_readings_per_s": round(seen / page_s),
    }


CHILDREN = {
    "disk_spool": child_disk_spool,
    "disk_naive": child_disk_naive,
    "throughput": child_throughput,
    "backlog": child_backlog,
}


def run_child(kind: str, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        params = {**params, "dir": d}
        out = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--params", json.dumps(params)],
            check=True, capture_output=True, text=True,
        )
        result: dict[str, Any] = json.loads(out.stdout)
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="simulated minutes per disk scenario")
    ap.add_argument("--backlog", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"),
                    help="where the databases go: a real disk (tmpfs counts no write_bytes)")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(args.params))))
        return
    if args.quick:
        args.minutes, args.backlog = 3.0, 50_000
    workdir = args.workdir
    m = args.minutes
    disk: dict[str, Any] = {}
    candidates: list[tuple[str, str, dict[str, Any]]] = [
        ("naive_per_reading_commit", "disk_naive", {}),
        ("spool_1s", "disk_spool", {"commit_interval_s": 1.0}),
        ("spool_2s", "disk_spool", {"commit_interval_s": 2.0}),
        ("spool_5s", "disk_spool", {"commit_interval_s": 5.0}),
        ("spool_1s_synchronous_full", "disk_spool", {"commit_interval_s": 1.0, "synchronous": "FULL"}),
        ("spool_1s_journal_off", "disk_spool", {"commit_interval_s": 1.0, "tuning": {"journal_bytes": 0}}),
        ("spool_1s_journal_16k", "disk_spool", {"commit_interval_s": 1.0, "tuning": {"journal_bytes": 16384}}),
        ("spool_1s_journal_256k", "disk_spool", {"commit_interval_s": 1.0, "tuning": {"journal_bytes": 262144}}),
        ("spool_1s_page_4096", "disk_spool", {"commit_interval_s": 1.0, "tuning": {"page_size": 4096}}),
        ("spool_1s_page_1024", "disk_spool", {"commit_interval_s": 1.0, "tuning": {"page_size": 1024}}),
        ("spool_1s_shared_lock_shm", "disk_spool", {"commit_interval_s": 1.0, "tuning": {"exclusive_lock": False}}),
        ("spool_1s_autocheckpoint_4000", "disk_spool",
         {"commit_interval_s": 1.0, "tuning": {"wal_autocheckpoint_pages": 4000}}),
        ("spool_1s_autocheckpoint_250", "disk_spool",
         {"commit_interval_s": 1.0, "tuning": {"wal_autocheckpoint_pages": 250}}),
    ]
    for writeback in (True, False):
        for name, kind, params in candidates:
            if not writeback and name not in ("naive_per_reading_commit", "spool_1s", "spool_2s", "spool_5s"):
                continue
            key = name + ("" if writeback else "_no_writeback_emulation")
            disk[key] = run_child(kind, {**params, "minutes": m, "writeback": writeback}, workdir)
    base = disk["naive_per_reading_commit"]["bytes_per_reading"]
    for v in disk.values():
        v["vs_naive"] = round(v["bytes_per_reading"] / base, 4)
    n_tp = 9_600 if args.quick else 48_000
    tp_spool = run_child("throughput", {"impl": "spool", "readings": n_tp}, workdir)
    tp_direct = run_child("throughput", {"impl": "spool", "readings": n_tp, "tuning": {"journal_bytes": 0}}, workdir)
    tp_naive = run_child("throughput", {"impl": "naive", "readings": min(n_tp, 9_600)}, workdir)
    backlog = run_child("backlog", {"backlog": args.backlog}, workdir)
    print(json.dumps({
        "bench": "spool",
        "simulated_minutes": m,
        "channels_hz": CHANNELS,
        "ack_every_s": ACK_EVERY_S,
        "writeback_emulation_s": WRITEBACK_S,
        "target_bytes_per_reading": 64,
        "disk_bytes_per_reading": disk,
        "throughput": {"spool": tp_spool, "spool_journal_off": tp_direct, "naive": tp_naive,
                       "ratio": round(tp_spool["readings_per_s"] / tp_naive["readings_per_s"], 1),
                       "journal_on_vs_off": round(tp_spool["readings_per_s"] / tp_direct["readings_per_s"], 2)},
        "backlog": backlog,
    }, indent=2))


if __name__ == "__main__":
    main()
