"""``methane-agent`` command line. Each command group lives in its own module under
``agent/commands`` (or ``emulator/cli.py``) and registers itself here.

Only the module of the command being run is imported: ``methane-agent run`` is the daemon and must
not carry the emulator, provisioning or certificate parsing for subcommands it never runs (each
costs megabytes of RSS on a gateway). Without a known command (``--help``, a typo) every module is
loaded so the help lists them all."""

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
    "cloud.cli",
]
# Command name -> the module that registers it (a command missing here still works: its module is
# found by loading all of COMMAND_MODULES).
COMMANDS = {
    "config": "agent.commands.config_cmd",
    "run": "agent.commands.run_cmd",
    "status": "agent.commands.run_cmd",
    "decode": "agent.commands.decode_cmd",
    "sensor": "agent.commands.sensor_cmd",
    "provision": "agent.commands.provision_cmd",
    "rotate-cert": "agent.commands.provision_cmd",
    "doctor": "agent.commands.doctor_cmd",
    "alarms": "agent.commands.alarms_cmd",
    "events": "agent.commands.alarms_cmd",
    "emulator": "emulator.cli",
    "fleet": "fleet.cli",
}


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named by ``argv`` (its first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="methane-agent", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    name = _command(sys.argv[1:] if argv is None else argv)
    for module_name in [COMMANDS[name]] if name in COMMANDS else COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A development package a gateway install leaves out (systemd/install.sh ships agent,
            # drivers, provisioning, emulator and cloud, not fleet).
            if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
