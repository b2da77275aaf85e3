"""``methane-agent run`` and ``methane-agent status``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from agent import config as cfg
from agent.commands.config_cmd import EXIT_CONFIG


def _run(args: argparse.Namespace) -> int:
    from agent import runtime  # heavy imports (awscrt) only for the daemon

    try:
        return runtime.run(Path(args.config))
    except cfg.ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG


def _offline_status(conf: cfg.AgentConfig) -> dict[str, Any]:
    """No daemon answers: report what the spool file holds, strictly read-only."""
    from agent.spool import Spool, SpoolError

    out: dict[str, Any] = {"running": False, "spool": None}
    path = conf.spool_path
    if not path.exists():
        return out
    try:
        peek = Spool.peek(path)
    except SpoolError as exc:
        out["spool"] = {"path": str(path), "error": str(exc)}
        return out
    oldest = peek.oldest_ts_ms
    out["spool"] = {
        "path": str(path),
        "readings": peek.readings,
        "alarm_readings": peek.alarm_readings,
        "file_bytes": peek.file_bytes,
        "oldest_ts_ms": oldest,
        "oldest_age_s": None if oldest is None else round(time.time() - oldest / 1000, 1),
        "epoch": peek.epoch,
        "seq_skipped": peek.seq_skipped,
        "clean_shutdown": peek.clean_shutdown,
    }
    return out


def _print_human(doc: dict[str, Any]) -> None:
    from agent.status import alarm_text, summary_line
    from agent.status_model import AgentStatus

    st = AgentStatus.from_dict(doc)
    for alarm in (st.features.get("alarms") or {}).get("active", []):
        print(alarm_text(alarm))  # active alarms first: what a technician must see before anything else
    a, sp, link = st.agent, st.spool, st.uplink.link
    print(f"methane-agent {a.version} pid {a.pid} thing {a.thing_name} up {a.uptime_s}s config {a.config_hash}")
    print(summary_line(st))
    print(f"spool: {sp.readings} readings, {sp.bytes} bytes, oldest {sp.oldest_age_s}s, "
          f"next seq {sp.next_seq}, evicted {sp.evicted_routine} routine / "
          f"{sp.evicted_alarm} alarm, quarantined {sp.quarantined}, "
          f"epoch {sp.epoch}, seq skipped {sp.seq_skipped}")
    if link is not None:
        print(f"uplink: {'connected' if link.connected else 'DISCONNECTED'} to {link.endpoint}, "
              f"reconnects {link.reconnects}, batches acked {link.batches_acked}, "
              f"readings acked {link.readings_acked}, last error {link.last_error}")
    for s in st.sensors:
        last = ", ".join(f"{q}={v.get('value')} {v.get('unit')}" for q, v in s.last.items())
        print(f"sensor {s.id}: {s.state}; {last or '-'}; last error {s.last_error}")


def _status(args: argparse.Namespace) -> int:
    from agent.status import query

    try:
        conf = cfg.load(Path(args.config))
    except cfg.ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    try:
        st = query(conf.status_socket)
        st["running"] = True
    except OSError:
        st = _offline_status(conf)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
    elif st.get("running"):
        _print_human(st)
    else:
        print(f"agent not running (no answer on {conf.status_socket})")
        if st.get("spool"):
            print(f"spool: {json.dumps(st['spool'])}")
    return 0 if st.get("running") else 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the agent in the foreground")
    p.add_argument("--config", required=True)
    p.set_defaults(func=_run)
    s = sub.add_parser("status", help="show the running agent's status (exit 3 when not running)")
    s.add_argument("--config", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_status)
