"""CPU time and resident memory of a process from /proc (Linux), for per-gateway cost figures."""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu_s: float
    rss_mb: float


def sample(pid: int | None = None) -> Sample:
    """utime+stime and VmRSS of ``pid`` (default: this process)."""
    base = f"/proc/{pid or 'self'}"
    with open(f"{base}/stat") as f:
        # Fields after the command name (which may hold spaces) start after the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    rss_kb = 0
    with open(f"{base}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
                break
    return Sample(time.monotonic(), cpu, rss_kb / 1024)


def threads_cpu_s(prefix: str) -> float:
    """utime+stime of this process's Python threads whose name starts with ``prefix`` (the
    in-process emulator's threads are all ``emulator-*``), from /proc/self/task/<tid>/stat; a
    thread that ended meanwhile counts 0."""
    total = 0.0
    for t in threading.enumerate():
        if not t.name.startswith(prefix) or t.native_id is None:
            continue
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def cpu_percent(a: Sample, b: Sample) -> float:
    """Share of one core used between two samples, in percent."""
    return 100.0 * (b.cpu_s - a.cpu_s) / max(1e-9, b.wall - a.wall)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]
