"""``methane-agent emulator ...``: run the local IoT Core in the foreground and inspect it."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from cloud.preprovision.allowlist import AllowlistError, FileAllowlist
from emulator.broker import BrokerError
from emulator.lifecycle import DEFAULT_THING, Component, Emulator
from emulator.pki import PkiError

# Modules adding ``methane-agent emulator <name>`` subcommands via ``register(esub)``.
EXTRA_COMMANDS = ["emulator.telemetry_cmd", "emulator.cli_services", "emulator.cli_registry"]

# Components `emulator serve` runs behind the broker, as "module:callable" returning a Component.
SERVE_COMPONENTS = ["emulator.services.device_services:DeviceServices", "emulator.recorder:TelemetryRecorder"]
INGEST_COMPONENT = "emulator.ingest:LocalIngest"  # with --ingest


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("emulator", help="local IoT Core emulator (mosquitto with mutual TLS)")
    esub = parser.add_subparsers(dest="emulator_command", required=True, metavar="SUBCOMMAND")
    serve = esub.add_parser("serve", help="run the emulator in the foreground until SIGINT/SIGTERM")
    serve.add_argument("--state-dir", type=Path, required=True, help="CA, certificates, broker files, emulator.json")
    serve.add_argument("--port", type=int, default=None, help="TCP port on 127.0.0.1 (default: previous or free)")
    serve.add_argument("--thing", default=DEFAULT_THING, help=f"ready-made device identity (default {DEFAULT_THING})")
    serve.add_argument("--serial-allowlist", type=Path, default=None, metavar="FILE",
                       help="serials allowed to onboard by fleet provisioning (.json or .csv, re-read on change; "
                            "default: any serial)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="listen address (default 127.0.0.1; the link-fault harness uses 0.0.0.0 in its own "
                            "network namespace)")
    serve.add_argument("--ingest", action="store_true",
                       help="also run the cloud side's local twin: a private InfluxDB (data under the state dir) "
                            "fed by the ingest; its URL and database go to emulator.json under \"ingest\"")
    serve.set_defaults(func=serve_cmd)
    _register_extra(esub)


def _register_extra(esub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Admin commands that live in their own modules register here when present."""
    for name in EXTRA_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(esub)


def _serve_components(ingest: bool = False) -> list[Component]:
    out: list[Component] = []
    for spec in SERVE_COMPONENTS + ([INGEST_COMPONENT] if ingest else []):
        module, _, name = spec.partition(":")
        out.append(getattr(importlib.import_module(module), name)())
    return out


def serve_cmd(args: argparse.Namespace) -> int:
    if args.port is not None and not 1 <= args.port <= 65535:
        print(f"error: --port must be 1..65535, got {args.port}", file=sys.stderr)
        return 2
    allowlist = None
    if args.serial_allowlist is not None:
        try:
            allowlist = FileAllowlist(args.serial_allowlist)
        except AllowlistError as exc:
            print(f"error: --serial-allowlist: {exc}", file=sys.stderr)
            return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        emu = Emulator(
            args.state_dir, port=args.port, thing=args.thing, components=_serve_components(args.ingest),
            fleet_provisioning=True, serial_allowlist=allowlist, host=args.host,
        )
    except PkiError as exc:
        print(f"error: --thing: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            info = emu.start()
        except (BrokerError, PkiError, OSError) as exc:
            print(f"error: emulator did not start: {exc}", file=sys.stderr)
            return 1
        print(
            f"emulator ready endpoint={info.endpoint} port={info.port} state_dir={info.state_dir} "
            f"thing={info.device.thing_name}",
            flush=True,
        )
        broker = emu.broker
        assert broker is not None
        while not stop.wait(0.5):
            if not broker.running():
                print(f"error: mosquitto exited unexpectedly; see {broker.log_file}", file=sys.stderr)
                return 1
        return 0
    finally:
        emu.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
