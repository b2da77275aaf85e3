"""``methane-agent`` that writes the names of every module it loaded to ``$FOOTPRINT_MODULES_OUT``
when it exits (bench_footprint's answer to "what does the daemon carry"; ``-X importtime`` misses
modules loaded through importlib). ``python -m bench.footprint_probe run --config FILE``."""

from __future__ import annotations

import atexit
import json
import os
import sys


def _dump() -> None:
    out = os.environ.get("FOOTPRINT_MODULES_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(sorted(sys.modules), f)


if __name__ == "__main__":
    atexit.register(_dump)
    from agent.cli import main

    sys.exit(main(sys.argv[1:]))
