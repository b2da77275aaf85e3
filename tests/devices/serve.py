"""Run an emulated UART sensor as simulated hardware: a pty behind a symlink that a real driver (or
``methane-agent sensor read``) opens like /dev/ttyUSB0.

    python -m tests.devices.serve dynament --link /tmp/ch4 --value 2.5
    methane-agent sensor read --driver dynament --port /tmp/ch4 --setting unit=%vol --json
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from tests.devices.cubic import CubicDevice
from tests.devices.dynament import DynamentDevice
from tests.devices.inir import InirDevice
from tests.devices.modbus_rtu import ModbusRtuDevice
from tests.devices.nmea import NmeaDevice
from tests.devices.pty_host import EmulatedDevice, PtyHost
from tests.devices.winsen import WinsenDevice

DEVICES: dict[str, tuple[Callable[[float], EmulatedDevice], str]] = {
    "dynament": (lambda v: DynamentDevice(reading=v), "reading in the sensor's unit"),
    "cubic-sjh5": (lambda v: CubicDevice(percent_vol=v), "%vol"),
    "winsen-mh440d": (lambda v: WinsenDevice(raw=int(v)), "raw counts"),
    "inir": (lambda v: InirDevice(ppm=int(v), interval_s=1.0), "ppm"),
    "nmea-gps": (lambda v: NmeaDevice(interval_s=1.0), "(ignored)"),
    "modbus-rtu": (lambda v: ModbusRtuDevice(holding={0: int(v)}), "holding register 0 of slave 1 (u16)"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.devices.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("device", choices=sorted(DEVICES))
    p.add_argument("--link", type=Path, required=True, help="symlink to create for the pty slave")
    p.add_argument("--value", type=float, default=0.0, help="reading to serve; unit depends on the device")
    args = p.parse_args(argv)
    factory, _unit = DEVICES[args.device]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with PtyHost(factory(args.value), link=args.link) as host:
        print(f"{args.device} emulator on {host.slave_name} via {args.link}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
