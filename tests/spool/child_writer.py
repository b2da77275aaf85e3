"""Child process for the kill -9 test: appends, commits and acks in a loop, reporting each durable
step on stdout (flushed) so the parent knows what must survive a SIGKILL at any moment.

Lines: ``S <next_seq>`` at start, ``C <high>`` after a commit returned, ``A+ <a> <b>`` before an ack,
``A <a> <b>`` after it returned.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from agent.spool import Reading, Spool


def main() -> None:
    path, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    sp = Spool(path, max_bytes=1 << 30, min_free_disk_bytes=0, commit_interval_s=1.0)
    sp.open()
    out = sys.stdout
    out.write(f"S {sp.stats().next_seq}\n")
    out.flush()
    cursor = sp.stats().oldest_seq or 0
    cursor = max(0, cursor - 1)
    i = 0
    while True:
        i += 1
        n = rng.randint(1, 40)
        sp.append(
            Reading.new(ts_ms=i, clock_synced=True, sensor_id="s", quantity="q", value=float(i), unit="u",
                       alarm=rng.random() < 0.05)
            for _ in range(n)
        )
        if rng.random() < 0.8:
            sp.commit()
            out.write(f"C {sp.stats().committed_seq}\n")
            out.flush()
        if rng.random() < 0.3:
            batch = sp.read_after(cursor, rng.randint(1, 60))
            if batch:
                a, b = batch[0].seq, batch[-1].seq
                out.write(f"A+ {a} {b}\n")
                out.flush()
                sp.ack(a, b)
                out.write(f"A {a} {b}\n")
                out.flush()
                cursor = b


if __name__ == "__main__":
    main()
