"""What the device writes to ``reported`` besides its config: a compact status built from the
agent's one status builder (``Agent.status``, agent/status_model.py), kept well under the 8 KB shadow limit,
and the rate gate that decides when it is worth a (billed) update."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
import time
from pathlib import Path
from typing import Any

from agent.status_model import AgentStatus

SIOCGIFADDR = 0x8915
MAX_SENSORS_REPORTED = 32
MAX_ERROR_CHARS = 120


def _ipv4(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(res[20:24])


def network(proc: Path = Path("/proc/net/if_inet6")) -> dict[str, dict[str, Any]]:
    """Interface addresses (IPv4 by ioctl, global IPv6 from /proc), loopback left out. Cheap: no
    subprocess, no netlink."""
    out: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(OSError):
        for _, name in socket.if_nameindex():
            if name == "lo":
                continue
            entry: dict[str, Any] = {}
            v4 = _ipv4(name)
            if v4:
                entry["ipv4"] = v4
            out[name] = entry
    with contextlib.suppress(OSError, ValueError):
        for line in proc.read_text().splitlines():
            parts = line.split()
            if len(parts) < 6 or parts[5] == "lo" or parts[3] != "00":  # scope 00 = global
                continue
            addr = str(ipaddress.IPv6Address(bytes.fromhex(parts[0])))
            out.setdefault(parts[5], {}).setdefault("ipv6", []).append(addr)
    return {k: v for k, v in out.items() if v}


def _short(text: Any) -> Any:
    if isinstance(text, str) and len(text) > MAX_ERROR_CHARS:
        return text[: MAX_ERROR_CHARS - 1] + "…"
    return text


def status_doc(status: AgentStatus, net: dict[str, Any] | None, cert: dict[str, Any] | None) -> dict[str, Any]:
    """The ``reported.status`` object from ``Agent.status()``."""
    a, sp, link = status.agent, status.spool, status.uplink.link
    sensors: dict[str, Any] = {
        s.id: {"state": s.state, "errors": s.errors, "last_error": _short(s.last_error)}
        for s in status.sensors[:MAX_SENSORS_REPORTED]
    }
    doc: dict[str, Any] = {
        "agent_version": a.version,
        "config_hash": a.config_hash,
        "uptime_s": int(a.uptime_s or 0),
        "clock_synced": status.clock_synced,
        "sensors": sensors,
        "spool": {"depth": sp.readings, "bytes": sp.bytes, "oldest_unsent_age_s": sp.oldest_age_s},
        "uplink": {"connected": link.connected if link else None, "last_publish_ts": link.last_ack_ts if link else None,
                   "encoding": link.encoding if link else None},
    }
    alarms = status.features.get("alarms") or {}
    doc["alarms"] = {
        f"{al['sensor_id']}/{al['quantity']}" + ("" if al.get("direction", "rising") == "rising" else "/falling"): {
            "level": al.get("level"), "latched": al.get("latched"), "acknowledged": al.get("acknowledged"),
            "since_ts_ms": al.get("since_ts_ms"), "fault_reason": _short(al.get("fault_reason")),
        }
        for al in alarms.get("states", [])[:MAX_SENSORS_REPORTED]
    }
    if net is not None:
        doc["network"] = net
    if cert is not None:
        doc["cert"] = {k: cert.get(k) for k in ("certificate_id", "not_after", "days_left", "expired")}
    return doc


# Fields that drift all the time: a change in them alone is routine and waits for the rate gate.
_VOLATILE = ("uptime_s",)


def fingerprint(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in _VOLATILE}


class ReportGate:
    """Routine status goes out at most once per ``min_interval_s`` and only when it changed;
    config results bypass the gate (the operator is waiting for them)."""

    def __init__(self, min_interval_s: float, clock: Any = time.monotonic) -> None:
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last_sent: float | None = None
        self._last_doc: dict[str, Any] | None = None

    def elapsed(self) -> bool:
        """The minimum interval has passed: only then can a status drift be due (checked before
        building the status document, which is the expensive part of an idle agent's second)."""
        return self._last_sent is None or self._clock() - self._last_sent >= self.min_interval_s

    def due(self, doc: dict[str, Any]) -> bool:
        if self._last_doc is not None and fingerprint(doc) == fingerprint(self._last_doc):
            return False
        if self._last_doc is not None and doc.get("alarms") != self._last_doc.get("alarms"):
            return True  # an alarm state change is never held back by the rate gate
        return self._last_sent is None or self._clock() - self._last_sent >= self.min_interval_s

    def sent(self, doc: dict[str, Any]) -> None:
        self._last_sent = self._clock()
        self._last_doc = doc

    def reset(self) -> None:
        """After a reconnect the next report goes out regardless (the cloud may have missed one)."""
        self._last_doc = None
        self._last_sent = None
