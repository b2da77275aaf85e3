"""``methane-agent cloud ...``: commands that read the cloud side's store."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from cloud.completeness import DeviceReport, parse_time, report
from cloud.influx import InfluxClient, StoreError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("cloud", help="the cloud side: reports from the time-series store")
    csub = parser.add_subparsers(dest="cloud_command", required=True, metavar="SUBCOMMAND")
    comp = csub.add_parser("completeness", help="per device: readings expected vs received, gaps by (epoch, seq), "
                           "duplicates dropped, uptime fraction")
    comp.add_argument("--influx-url", required=True, help="InfluxDB v1 API base URL, e.g. http://127.0.0.1:8086")
    comp.add_argument("--database", required=True, help="database (bucket mapped by DBRP on InfluxDB 2)")
    comp.add_argument("--thing", default=None, help="one device (thing name)")
    comp.add_argument("--site", default=None, help="only this site (all its devices unless --thing)")
    comp.add_argument("--since", default=None, help="batches that arrived since: ISO 8601 with zone, or 90s/15m/2h/7d")
    comp.add_argument("--until", default=None, help="end of the window (default now); same forms as --since")
    comp.add_argument("--bucket-s", type=int, default=60, help="uptime bucket in seconds (default 60)")
    comp.add_argument("--token", default=None, help="API token (Timestream for InfluxDB / InfluxDB 2)")
    comp.add_argument("--json", action="store_true", help="print JSON")
    comp.set_defaults(func=completeness_cmd)


def _when(ns: int | None) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds") if ns is not None else "-"


def _ranges(items: list[list[Any]]) -> str:
    return ", ".join(f"{e or '-'}:{a}-{b}" for e, a, b in items)


def _text(r: DeviceReport) -> str:
    pct = f"{100 * r.received / r.expected:.3f} %" if r.expected else "-"
    up = f"{100 * r.uptime_fraction:.1f} %" if r.uptime_fraction is not None else "-"
    gaps = _ranges(r.gaps) or "none"
    lines = [
        f"{r.thing} (site {r.site or '-'})",
        f"  readings expected {r.expected}, received {r.received} ({pct}), missing {r.missing}",
        f"  gaps (epoch:first-last) {gaps}",
        f"  duplicates dropped {r.duplicates_dropped}, batches {r.batches}, rejected messages {r.rejected_messages}",
        f"  readings {_when(r.first_reading_ns)} .. {_when(r.last_reading_ns)}, last seen {_when(r.last_seen_ns)}, "
        f"uptime {up}",
    ]
    if r.evicted:
        lines.insert(3, "  of which evicted on the device: " + _ranges(r.evicted))
    return "\n".join(lines)


def completeness_cmd(args: argparse.Namespace) -> int:
    if not args.thing and not args.site:
        print("error: give --thing or --site", file=sys.stderr)
        return 2
    if args.bucket_s < 1:
        print("error: --bucket-s must be >= 1", file=sys.stderr)
        return 2
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
        client = InfluxClient(args.influx_url, args.database, token=args.token)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        reports = report(client, args.thing, args.site, since, until, args.bucket_s)
    except StoreError as exc:
        print(f"error: {args.influx_url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        docs = [r.as_dict() for r in reports]
        out = docs[0] if args.thing else {"site": args.site, "devices": docs}
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print("\n".join(_text(r) for r in reports) if reports else f"no devices in site {args.site}")
    return 0
