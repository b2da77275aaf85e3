"""``methane-agent emulator telemetry``: what the telemetry recorder saw of one device."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from emulator.recorder import DB_FILE, TelemetryStore


def register(esub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = esub.add_parser("telemetry", help="sequence numbers received per device (recorder of `emulator serve`)")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--thing", required=True, help="device (thing name) to report on")
    p.add_argument("--upto", type=int, default=None, help="highest seq the device sent (shows trailing gaps)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=telemetry_cmd)


def telemetry_cmd(args: argparse.Namespace) -> int:
    try:
        store = TelemetryStore(args.state_dir / DB_FILE, readonly=True)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        summary = store.summary(args.thing, args.upto)
    except sqlite3.DatabaseError as exc:
        print(f"error: {args.state_dir / DB_FILE}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        gaps = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in summary["gaps"]) or "none"
        print(
            f"thing={summary['thing']} received={summary['received']} first_seq={summary['first_seq']} "
            f"last_seq={summary['last_seq']} duplicates={summary['duplicates']} gaps={gaps} "
            f"batches={summary['batches']} rejects={summary['rejects']}"
        )
    return 0
