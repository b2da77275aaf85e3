"""``methane-agent config validate|show FILE``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent import config as cfg

EXIT_CONFIG = 2


def _validate(args: argparse.Namespace) -> int:
    try:
        conf = cfg.load(Path(args.file))
    except cfg.ConfigError as exc:
        print(f"{exc.source}: {len(exc.errors)} error(s)", file=sys.stderr)
        for path, reason in exc.errors:
            print(f"  {path}: {reason}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.file}: OK ({len(conf.sensors)} sensor(s), config hash {conf.digest()})")
    return 0


def _show(args: argparse.Namespace) -> int:
    try:
        conf = cfg.load(Path(args.file))
    except cfg.ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(conf.model_dump(mode="json"), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="validate or show a config file")
    csub = p.add_subparsers(dest="config_command", required=True)
    v = csub.add_parser("validate", help="print every error with its key path; exit 2 if any")
    v.add_argument("file")
    v.set_defaults(func=_validate)
    s = csub.add_parser("show", help="print the effective config (file + environment overrides)")
    s.add_argument("file")
    s.set_defaults(func=_show)
