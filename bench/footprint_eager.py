"""The naive baseline of bench_footprint: ``methane-agent`` after importing every module of the
project (agent, drivers, provisioning, emulator, cloud), as a CLI that registers all its commands
up front does. ``python -m bench.footprint_eager run --config FILE``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

PACKAGES = ("agent", "drivers", "provisioning", "emulator", "cloud")


def import_everything() -> int:
    n = 0
    for name in PACKAGES:
        pkg = importlib.import_module(name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{name}."):
            if info.name.endswith(("__main__", ".aws")):  # __main__ would run; .aws needs boto3 (Lambda only)
                continue
            importlib.import_module(info.name)
            n += 1
    return n


if __name__ == "__main__":
    import_everything()
    from agent.cli import COMMAND_MODULES, main

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    sys.exit(main(sys.argv[1:]))
