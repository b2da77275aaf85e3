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


def _print_human(st: dict[str, Any]) -> None:
    from agent.status import summary_line

    a = st.get("agent", {})
    print(f"methane-agent {a.get('version')} pid {a.get('pid')} thing {a.get('thing_name')} "
          f"up {a.get('uptime_s')}s config {a.get('config_hash')}")
    print(summary_line(st))
    sp = st.get("spool", {})
    print(f"spool: {sp.get('readings')} readings, {sp.get('bytes')} bytes, oldest {sp.get('oldest_age_s')}s, "
          f"next seq {sp.get('next_seq')}, evicted {sp.get('evicted_routine')} routine / "
          f"{sp.get('evicted_alarm')} alarm, quarantined {sp.get('quarantined')}, "
          f"epoch {sp.get('epoch')}, seq skipped {sp.get('seq_skipped')}")
    up = st.get("uplink", {})
    if up.get("enabled"):
        print(f"uplink: {'connected' if up.get('connected') else 'DISCONNECTED'} to {up.get('endpoint')}, "
              f"reconnects {up.get('reconnects')}, batches acked {up.get('batches_acked')}, "
              f"readings acked {up.get('readings_acked')}, last error {up.get('last_error')}")
    for s in st.get("sensors", []):
        last = ", ".join(f"{q}={v.get('value')} {v.get('unit')}" for q, v in (s.get("last") or {}).items())
        print(f"sensor {s.get('id')}: {s.get('state')}; {last or '-'}; last error {s.get('last_error')}")


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
