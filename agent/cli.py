"""``methane-agent`` command line. Each command group lives in its own module under
``agent/commands`` (or ``emulator/cli.py``) and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules exposing ``register(subparsers)``; each added parser sets ``func(args) -> int``.
COMMAND_MODULES = [
    "agent.commands.config_cmd",
    "agent.commands.run_cmd",
    "agent.commands.decode_cmd",
    "agent.commands.sensor_cmd",
    "agent.commands.provision_cmd",
    "agent.commands.doctor_cmd",
    "agent.commands.alarms_cmd",
    "emulator.cli",
    "fleet.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="methane-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A command group not built yet, or a development package a gateway install leaves out
            # (systemd/install.sh ships agent, drivers, provisioning and emulator, not fleet).
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
