"""The gateway's hardware serial number, sent as the ``SerialNumber`` template parameter so each
device gets its own, stable thing name without anyone typing it in.

Order for ``auto``: the Raspberry Pi CPU serial (``Serial`` line of /proc/cpuinfo), the device-tree
serial (/proc/device-tree/serial-number, /sys/firmware/devicetree/base/serial-number), then
/etc/machine-id. An all-zero serial (containers, some non-Pi boards) counts as absent. ``root`` is
injectable so tests can point at a fake file system.
"""

from __future__ import annotations

import re
from pathlib import Path

SOURCES = ("auto", "cpuinfo", "device-tree", "machine-id")
DT_PATHS = ("proc/device-tree/serial-number", "sys/firmware/devicetree/base/serial-number")
# Thing names allow [a-zA-Z0-9:_-]; the template prefixes the serial, so keep room for that.
VALID = re.compile(r"^[A-Za-z0-9_-]{4,64}$")
_CPUINFO_SERIAL = re.compile(r"^Serial\s*:\s*(\S+)\s*$", re.M)


class SerialError(ValueError):
    """No usable serial number; the message lists where it looked."""


def _clean(raw: str) -> str | None:
    value = raw.replace("\x00", "").strip().lower()
    if not value or set(value) <= {"0"}:
        return None
    return value


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError):
        return None


def from_cpuinfo(root: Path) -> str | None:
    text = _read(root / "proc/cpuinfo")
    if text is None:
        return None
    m = _CPUINFO_SERIAL.search(text)
    return _clean(m.group(1)) if m else None


def from_device_tree(root: Path) -> str | None:
    for rel in DT_PATHS:
        text = _read(root / rel)
        if text is not None and (value := _clean(text)):
            return value
    return None


def from_machine_id(root: Path) -> str | None:
    text = _read(root / "etc/machine-id")
    return _clean(text) if text is not None else None


def read_serial(source: str = "auto", root: Path = Path("/")) -> str:
    """The serial number from ``source`` (see module doc, or ``file:/path`` for a value written at
    manufacturing). Raises SerialError naming what was tried and why it failed."""
    if source.startswith("file:"):
        path = Path(source[5:])
        text = _read(path)
        tried = [(str(path), None if text is None else _clean(text))]
    else:
        readers = {
            "cpuinfo": [("/proc/cpuinfo Serial", from_cpuinfo)],
            "device-tree": [("device-tree serial-number", from_device_tree)],
            "machine-id": [("/etc/machine-id", from_machine_id)],
        }
        if source == "auto":
            chain = readers["cpuinfo"] + readers["device-tree"] + readers["machine-id"]
        elif source in readers:
            chain = readers[source]
        else:
            raise SerialError(f"unknown serial source {source!r}; use {', '.join(SOURCES)} or file:/path")
        tried = [(name, fn(root)) for name, fn in chain]
    for name, value in tried:
        if value is None:
            continue
        if not VALID.fullmatch(value):
            raise SerialError(
                f"serial number from {name} is not usable in a thing name: {value!r} "
                "(need 4-64 characters of [A-Za-z0-9_-])"
            )
        return value
    where = ", ".join(name for name, _ in tried)
    raise SerialError(f"no serial number found (looked at: {where}); set provisioning.serial_source = \"file:/path\"")
