"""The status a running agent reports: on its Unix socket (``methane-agent status``) and in
systemd's STATUS= line (the shadow's ``reported.status`` and the diagnostics bundle read the same
``AgentStatus``, agent/status_model.py). One builder (``Agent.status``), typed consumers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.status_model import AgentStatus, LinkHealth

log = logging.getLogger(__name__)


def _ago(wall: float | None, now: float) -> str:
    if wall is None:
        return "never"
    s = max(0.0, now - wall)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def summary_line(status: AgentStatus) -> str:
    """One line for ``systemctl status``: what a technician needs at a glance."""
    now = time.time()
    sp, up = status.spool, status.uplink
    link = up.link
    state = "offline-mode" if not up.enabled else ("connected" if link and link.connected else "disconnected")
    if link is not None and not link.connected and link.link is not None:
        state += _down_text(link.link, link.last_error)
    if link is not None and link.certificate_refused:
        state = "CERTIFICATE REFUSED by the broker"
    failing = [s.id for s in status.sensors if s.state not in ("ok", "starting")]
    alarms = status.features.get("alarms") or {}
    parts = [alarm_text(a) for a in alarms.get("active", [])]
    parts += [f"OUTPUT FAILED {o['name']}" for o in alarms.get("outputs", []) if not o.get("ok", True)]
    parts += [
        f"spool={sp.readings} readings",
        f"oldest={sp.oldest_age_s:.0f}s" if sp.oldest_age_s is not None else "oldest=-",
        f"last publish {_ago(link.last_ack_ts if link else None, now)}",
        state,
    ]
    if failing:
        parts.append("failing sensors: " + ",".join(failing))
    return "; ".join(parts)


def _down_text(h: LinkHealth, why: str | None) -> str:
    """`` 3m (PING_RESPONSE_TIMEOUT, network down), 4 attempts, next in 12s``."""
    reason = (why or "").split(":")[0].replace("AWS_ERROR_", "").replace("AWS_IO_", "").replace("MQTT5_", "")
    what = ", ".join(p for p in (reason, f"network {h.network}" if h.network != "unknown" else "") if p)
    out = f" {h.down_for_s:.0f}s" if h.down_for_s is not None else ""
    out += f" ({what})" if what else ""
    if h.connect_attempts:
        out += f", {h.connect_attempts} attempts"
    if h.next_attempt_in_s is not None:
        out += f", next in {h.next_attempt_in_s:.0f}s"
    return out


def alarm_text(a: dict[str, Any]) -> str:
    """One active alarm, loud enough to be read first: ``ALARM ch4-1/methane 23.1 %LEL (latched)``."""
    level = str(a.get("level", "?")).upper()
    what = f"{level} {a.get('sensor_id')}/{a.get('quantity')}"
    if a.get("level") == "fault":
        return f"{what} ({a.get('fault_reason')})"
    value = a.get("value")
    text = what if value is None else f"{what} {value:.4g} {a.get('unit') or ''}".rstrip()
    if a.get("latched"):
        text += " (latched, acknowledged)" if a.get("acknowledged") else " (latched)"
    return text


async def serve_unix(path: Path, handler: Any, limit: int = 2**16) -> asyncio.AbstractServer:
    """A Unix socket server born 0600 (the umask is set around the bind, so there is no window in
    which another user could connect); a stale socket file from a crashed run is replaced."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        return await asyncio.start_unix_server(handler, path=str(path), limit=limit)
    finally:
        os.umask(old)


async def close_unix(server: asyncio.AbstractServer | None, path: Path) -> None:
    """Stop a server made by ``serve_unix`` and remove its socket file, so the next start (or a
    client) never finds a socket nobody answers."""
    if server is not None:
        server.close()
        await server.wait_closed()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class StatusServer:
    """Serves one JSON document per connection on a Unix socket (0600 via the umask set here);
    cheap enough to poll, and it never writes to the SD card."""

    def __init__(self, path: Path, build: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.build = build
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await serve_unix(self.path, self._serve)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(self.build(), default=str).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("status client went away", extra={"error": str(exc)})
        finally:
            writer.close()

    async def stop(self) -> None:
        await close_unix(self._server, self.path)


def query(path: Path, timeout_s: float = 3.0) -> dict[str, Any]:
    """Ask a running agent; raises OSError when none listens on ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    result: dict[str, Any] = json.loads(b"".join(chunks))
    return result
