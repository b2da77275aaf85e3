"""``methane-agent decode [FILE|-] [--content-type CT] [--envelope]``: one payload in, one JSON line
per reading out, so a captured MQTT message can be inspected with jq or loaded anywhere."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, BinaryIO

from agent import payload

EXIT_BAD_PAYLOAD = 2
READ_LIMIT = payload.MAX_PAYLOAD_BYTES + 1


def _value(v: float) -> float | str:
    if math.isfinite(v):
        return v
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


def _read(source: str) -> bytes:
    stream: BinaryIO
    if source == "-":
        return sys.stdin.buffer.read(READ_LIMIT)
    with open(source, "rb") as stream:
        return stream.read(READ_LIMIT)


def _decode(args: argparse.Namespace) -> int:
    try:
        data = _read(args.file)
    except OSError as exc:
        print(f"decode: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_PAYLOAD
    try:
        batch = payload.decode(data, args.content_type)
    except payload.PayloadError as exc:
        print(f"decode: bad payload ({len(data)} bytes): {exc}", file=sys.stderr)
        return EXIT_BAD_PAYLOAD
    try:
        _print(batch, data, args)
    except BrokenPipeError:  # `| head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _print(batch: payload.Batch, data: bytes, args: argparse.Namespace) -> None:
    out = sys.stdout
    if args.envelope:
        env = {
            "device": batch.device,
            "batch_id": batch.batch_id,
            "first_seq": batch.first_seq,
            "last_seq": batch.last_seq,
            "count": len(batch.readings),
            "encoding": payload.sniff(data) if args.content_type is None else payload.encoding_of(args.content_type),
            "bytes": len(data),
        }
        out.write(json.dumps(env, ensure_ascii=False) + "\n")
    for r in batch.readings:
        line: dict[str, Any] = {}
        if not args.envelope:
            line["device"] = batch.device
            line["batch_id"] = batch.batch_id
        line.update(
            seq=r.seq,
            ts_ms=r.ts_ms,
            clock_synced=r.clock_synced,
            sensor_id=r.sensor_id,
            quantity=r.quantity,
            value=_value(r.value),
            unit=r.unit,
            flags=list(r.flags),
            alarm=r.alarm,
        )
        out.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
    out.flush()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decode",
        help="decode one batch payload (json or compact) into JSON lines, one per reading",
        description="Decode one telemetry payload. Without --content-type the format is sniffed "
        "(compact payloads start with a magic). Exit 2 on a bad payload.",
    )
    p.add_argument("file", nargs="?", default="-", help="payload file, or - for stdin (default)")
    p.add_argument("--content-type", help="MQTT5 content type of the message, if known")
    p.add_argument(
        "--envelope",
        action="store_true",
        help="print the envelope as the first line instead of repeating device/batch_id on each reading",
    )
    p.set_defaults(func=_decode)
