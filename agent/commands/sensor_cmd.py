"""``methane-agent sensor read|list``: how a technician checks the wiring on site.

``read`` builds the driver's settings through the same pydantic model the config file uses, reads N
times and prints one JSON object per measurement (or per failed read); the exit code says whether
any read failed. ``list`` shows every driver and its settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from pydantic import ValidationError

from drivers import registry
from drivers.base import DriverError, describe_settings

EXIT_READ_FAILED = 1
EXIT_USAGE = 2


def _setting_value(text: str) -> Any:
    """Numbers, booleans and lists parse as JSON; anything else stays a string (e.g. %vol)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _settings_dict(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.setting or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--setting {item!r} is not key=value")
        out[key.strip()] = _setting_value(value)
    for key in ("port", "baud", "bus", "address"):
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    return out


def _emit(obj: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, sort_keys=True), flush=True)
    elif "error" in obj:
        print(f"read {obj['read']}: ERROR {obj['error']}: {obj['message']}", flush=True)
    else:
        flags = ",".join(obj["flags"]) or "-"
        print(f"read {obj['read']}: {obj['quantity']} = {obj['value']} {obj['unit']} [{flags}]", flush=True)


def _read(args: argparse.Namespace) -> int:
    try:
        model = registry.settings_model(args.driver)
        settings = model.model_validate(_settings_dict(args))
    except registry.UnknownDriverError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "settings"
            print(f"error: {args.driver} setting {loc}: {err['msg']}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    driver = registry.create(args.driver, settings)
    failed = 0
    try:
        for i in range(1, args.count + 1):
            if i > 1:
                time.sleep(args.interval)
            try:
                if i == 1:
                    driver.open()
                measurements = driver.read()
            except DriverError as exc:
                failed += 1
                _emit({"read": i, "driver": args.driver, "error": exc.kind, "message": exc.message}, args.json)
                continue
            for m in measurements:
                _emit({"read": i, "driver": args.driver, "quantity": m.quantity, "value": m.value,
                       "unit": m.unit, "flags": sorted(m.flags)}, args.json)
    finally:
        driver.close()
    if failed:
        print(f"{failed} of {args.count} reads failed", file=sys.stderr)
        return EXIT_READ_FAILED
    return 0


def _list(args: argparse.Namespace) -> int:
    table = {name: describe_settings(registry.settings_model(name)) for name in registry.names()}
    if args.json:
        print(json.dumps(table, indent=2, sort_keys=True, default=str))
        return 0
    for name, settings in table.items():
        print(name)
        for key, info in settings.items():
            default = "required" if info["required"] else f"default {info['default']!r}"
            print(f"  {key} ({info['type']}, {default}): {info['description']}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _interval(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sensor", help="read a sensor directly (wiring check) or list drivers")
    ssub = p.add_subparsers(dest="sensor_command", required=True)
    r = ssub.add_parser("read", help="read a sensor N times; one line (or JSON object) per measurement")
    r.add_argument("--driver", required=True, help="driver name (see `sensor list`)")
    r.add_argument("--port", help="serial device path (UART / RS-485 drivers)")
    r.add_argument("--baud", type=int, help="line speed")
    r.add_argument("--bus", type=int, help="I2C bus number (/dev/i2c-N)")
    r.add_argument("--address", type=lambda s: int(s, 0), help="I2C address, e.g. 0x48")
    r.add_argument("--setting", action="append", metavar="KEY=VALUE", help="any driver setting; repeatable")
    r.add_argument("--count", type=_positive_int, default=1, help="number of reads (default 1)")
    r.add_argument("--interval", type=_interval, default=1.0, help="seconds between reads (default 1)")
    r.add_argument("--json", action="store_true", help="one JSON object per line")
    r.set_defaults(func=_read)
    ls = ssub.add_parser("list", help="drivers and their settings")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
