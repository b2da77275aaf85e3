"""The local control socket (``<state_dir>/control.sock``, 0600): the technician on site acknowledges
a latched alarm with ``methane-agent alarms ack`` while the cellular link is down. One JSON request
line in, one JSON reply line out; the only command is ``ack``. Separate from the read-only status
socket so that anything allowed to read status is not thereby allowed to acknowledge."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.status import close_unix, serve_unix

log = logging.getLogger(__name__)

MAX_REQUEST = 4096


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str = Field(..., pattern="^ack$")
    sensor_id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    quantity: str | None = Field(None, pattern=r"^[A-Za-z0-9_]{1,64}$")
    by: str | None = Field(None, max_length=64)


Ack = Callable[[str, str | None, str | None], list[dict[str, Any]]]


class ControlServer:
    def __init__(self, path: Path, ack: Ack, ack_error: type[Exception]) -> None:
        self.path = path
        self._ack = ack
        self._ack_error = ack_error
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await serve_unix(self.path, self._serve, MAX_REQUEST)

    def handle(self, raw: bytes) -> dict[str, Any]:
        try:
            req = AckRequest.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "request"
            return {"ok": False, "error": f"bad request: {where}: {first['msg']}"}
        try:
            events = self._ack(req.sensor_id, req.quantity, req.by or "local-cli")
        except self._ack_error as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "events": events}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                raw = await reader.readline()
            reply = self.handle(raw)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, OSError, ValueError) as exc:
            log.debug("control client went away", extra={"error": str(exc)})
        finally:
            writer.close()

    async def stop(self) -> None:
        await close_unix(self._server, self.path)


def request(path: Path, body: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to a running agent; raises OSError when none listens on ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(path))
        s.sendall(json.dumps(body).encode() + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    result: dict[str, Any] = json.loads(b"".join(chunks))
    return result
