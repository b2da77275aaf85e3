"""kill -9 at random moments: every reading the child saw committed is still there or was acked."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from agent.spool import Spool

CHILD = Path(__file__).with_name("child_writer.py")


def run_and_kill(path: Path, seed: int, rng: random.Random) -> list[list[str]]:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    # Wait until the child really works (it printed its first commit), then kill at a random moment.
    # The two lines are read in a thread so a child that hangs fails the test instead of blocking it.
    stdout = proc.stdout
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = pool.submit(lambda: [stdout.readline().decode(), stdout.readline().decode()])
        try:
            first = started.result(timeout=60)
        except FutureTimeout:
            proc.kill()  # ends the reader thread's readline with EOF
            err = proc.stderr.read()
            raise AssertionError(f"the child printed no start and first commit in 60 s: {err!r}") from None
    assert first[0].startswith("S "), (first, proc.stderr.read() if proc.poll() is not None else "")
    time.sleep(rng.uniform(0.0, 0.3))
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read().decode()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    proc.stderr.close()
    proc.stdout.close()
    lines = [ln.split() for ln in (first[0] + first[1] + rest).splitlines()]
    # The last line may have been cut by the kill.
    return [ln for ln in lines if ln and ln[0] in ("S", "C", "A+", "A") and len(ln) == {"S": 2, "C": 2}.get(ln[0], 3)]


def test_kill_9_at_random_moments_loses_no_committed_reading(tmp_path):
    path = tmp_path / "spool.db"
    rng = random.Random(20260101)
    acked: set[int] = set()
    expected_next = 1
    for cycle in range(6):
        lines = run_and_kill(path, seed=cycle, rng=rng)
        assert lines[0] == ["S", str(expected_next)], f"cycle {cycle}: restart must continue the sequence"
        reported_high = 0
        in_flight: tuple[int, int] | None = None
        for ln in lines[1:]:
            if ln[0] == "C":
                reported_high = max(reported_high, int(ln[1]))
            elif ln[0] == "A+":
                in_flight = (int(ln[1]), int(ln[2]))
            elif ln[0] == "A":
                acked.update(range(int(ln[1]), int(ln[2]) + 1))
                in_flight = None
        sp = Spool(path, max_bytes=1 << 30, min_free_disk_bytes=0, commit_interval_s=1.0)
        sp.open()
        try:
            present = [r.seq for r in sp.read_after(0, 10_000_000)]
            high = sp.stats().committed_seq
            assert sp.stats().quarantined == 0
        finally:
            sp.close()
        assert present == sorted(present)
        assert high >= reported_high, f"cycle {cycle}: a reported commit was lost"
        present_set = set(present)
        if in_flight is not None:
            # An ack cut by the kill is all or nothing (one transaction).
            rng_seqs = set(range(in_flight[0], in_flight[1] + 1))
            assert rng_seqs <= present_set or not (rng_seqs & present_set), f"cycle {cycle}: torn ack"
            if not rng_seqs & present_set:
                acked |= rng_seqs
        assert not (present_set & acked), "an acknowledged reading came back"
        # Gapless committed history: every number up to the high-water mark is present or acked.
        assert present_set | acked >= set(range(1, high + 1)), f"cycle {cycle}: gap in committed history"
        assert max(present_set | acked, default=0) == high
        expected_next = high + 1
