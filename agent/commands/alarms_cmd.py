"""``methane-agent alarms list|ack`` and ``methane-agent events``: for the technician on site, with or
without a network. ``ack`` talks to the running agent over its control socket; ``events`` reads the
event store read-only, so it works with the agent stopped too."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from agent import config as cfg
from agent.commands.config_cmd import EXIT_CONFIG

EXIT_REFUSED = 1
EXIT_NOT_RUNNING = 3


def _conf(args: argparse.Namespace) -> cfg.AgentConfig | None:
    try:
        return cfg.load(Path(args.config))
    except cfg.ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def _when(ts_ms: Any) -> str:
    if not isinstance(ts_ms, int):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_ms / 1000))


def _list(args: argparse.Namespace) -> int:
    from agent.status import alarm_text, query

    conf = _conf(args)
    if conf is None:
        return EXIT_CONFIG
    try:
        states = (query(conf.status_socket).get("alarms") or {}).get("states", [])
    except OSError:
        print(f"agent not running (no answer on {conf.status_socket})", file=sys.stderr)
        return EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps(states, indent=2))
        return 0
    for s in states:
        print(alarm_text(s) if s["level"] != "normal" else f"normal {s['sensor_id']}/{s['quantity']}")
    return 0


def _ack(args: argparse.Namespace) -> int:
    from agent.alarms.control import request

    conf = _conf(args)
    if conf is None:
        return EXIT_CONFIG
    body = {"command": "ack", "sensor_id": args.sensor_id, "quantity": args.quantity, "by": args.by}
    try:
        reply = request(conf.control_socket, body)
    except OSError:
        print(f"agent not running (no answer on {conf.control_socket})", file=sys.stderr)
        return EXIT_NOT_RUNNING
    if not reply.get("ok"):
        print(f"not acknowledged: {reply.get('error')}", file=sys.stderr)
        return EXIT_REFUSED
    for e in reply.get("events", []):
        print(f"{e['type']}: {e['sensor_id']}/{e['quantity']} now {e['level']}")
    return 0


def _events(args: argparse.Namespace) -> int:
    from agent.alarms.store import list_events

    conf = _conf(args)
    if conf is None:
        return EXIT_CONFIG
    try:
        events = list_events(conf.events_path, None if args.kind == "all" else args.kind, args.limit)
    except sqlite3.Error as exc:
        print(f"cannot read {conf.events_path}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        for e in events:
            print(json.dumps(e))
        return 0
    for e in events:
        sent = "sent" if e.get("sent") else "PENDING"
        if "start_ts_ms" in e:  # a leak event
            print(f"#{e['event_id']} {_when(e['start_ts_ms'])} leak {e['type']} {e['sensor_id']} peak "
                  f"{e.get('peak_ppm')} ppm, {e.get('duration_s')} s, {e.get('excess_ppm_s')} ppm·s [{sent}]")
        else:
            print(f"#{e['event_id']} {_when(e.get('ts_ms'))} {e['type']} {e['level']} {e['sensor_id']}/"
                  f"{e['quantity']} value {e.get('value')} threshold {e.get('threshold')} {e.get('unit') or ''} "
                  f"seq {e.get('seq')} [{sent}]")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alarms", help="list alarm states or acknowledge a latched alarm")
    asub = p.add_subparsers(dest="alarms_command", required=True, metavar="ACTION")
    lst = asub.add_parser("list", help="every alarm's state, active first (exit 3 when not running)")
    lst.add_argument("--config", required=True)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_list)
    ack = asub.add_parser("ack", help="acknowledge a sensor's latched alarm (exit 1 when nothing is latched)")
    ack.add_argument("--config", required=True)
    ack.add_argument("sensor_id")
    ack.add_argument("--quantity", help="only this quantity (default: every latched one of the sensor)")
    ack.add_argument("--by", help="who acknowledges, recorded in the event")
    ack.set_defaults(func=_ack)
    ev = sub.add_parser("events", help="recent alarm and leak events, oldest first (works with the agent stopped)")
    ev.add_argument("--config", required=True)
    ev.add_argument("--kind", choices=["all", "alarm", "leak"], default="all")
    ev.add_argument("--limit", type=int, default=50)
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=_events)
