"""``methane-agent doctor --config FILE [--json]``: pre-flight checks, one line each; exit 1 on any FAIL."""

from __future__ import annotations

import argparse
from pathlib import Path

EXIT_FAIL = 1


def _doctor(args: argparse.Namespace) -> int:
    from agent.doctor import DoctorOptions, render_json, render_text, run_checks  # awscrt only when run

    opts = DoctorOptions(timeout_s=args.timeout, skip=set(args.skip or ()), topic=args.topic, client_id=args.client_id)
    results = run_checks(Path(args.config), opts)
    print(render_json(results) if args.json else render_text(results), flush=True)
    return EXIT_FAIL if any(r.status == "FAIL" for r in results) else 0


def register(sub: argparse._SubParsersAction) -> None:
    from agent.doctor.runner import CHECKS

    p = sub.add_parser(
        "doctor",
        help="check config, identity, clock, network, MQTT, sensors and disk; exit 1 on any FAIL",
        description=(
            "One line per check: PASS|WARN|FAIL name: detail (fix: how). The MQTT check connects with the "
            "device's client id (IoT Core policies allow only that one), which briefly takes over a running "
            "agent's connection; the agent reconnects by itself. Sensor checks open the serial/I2C devices: "
            "stop the service first or they report the device busy."
        ),
    )
    p.add_argument("--config", required=True, help="agent config file (TOML)")
    p.add_argument("--json", action="store_true", help="print a JSON document instead of lines")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per network step (default 5)")
    p.add_argument("--skip", action="append", choices=CHECKS[1:], help="skip a check (repeatable)")
    p.add_argument(
        "--topic",
        default="dt/methane/{site}/{thing}/doctor",
        help="round-trip topic; the device policy must allow publish, subscribe and receive on it",
    )
    p.add_argument("--client-id", default=None, help="MQTT client id (default: connection.client_id or the thing name)")
    p.set_defaults(func=_doctor)
