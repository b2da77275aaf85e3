"""Admin requests reach the RUNNING emulator through a Unix socket next to its state: the services
own the state and must publish what an admin change causes (delta, notify), so the CLI never
touches the SQLite files itself. One JSON request per line, one JSON reply per line; the socket
is owner-only (0600 in a 0700 directory when it cannot live in the state dir)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import socketserver
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOCKET_NAME = "services.sock"
MAX_SUN_PATH = 100  # sockaddr_un holds 108 bytes; keep a margin
MAX_REQUEST_BYTES = 1 << 20

Handler = Callable[[dict[str, Any]], Any]


class AdminRequestError(Exception):
    """A refused admin request: ``code`` is machine-readable, ``message`` says what was wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def socket_path(state_dir: Path | str) -> Path:
    """Where the admin socket of the emulator using ``state_dir`` lives. Deep test directories
    overflow sockaddr_un, so then a private directory named after the state dir is used."""
    state = Path(state_dir).resolve()
    path = state / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_SUN_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(state)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"methane-emu-{os.getuid()}-{digest}" / SOCKET_NAME


class AdminServer:
    def __init__(self, state_dir: Path | str, handlers: dict[str, Handler]) -> None:
        self.path = socket_path(state_dir)
        self.handlers = handlers
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.path.parent.name.startswith("methane-emu-"):
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            if self.path.parent.stat().st_uid != os.getuid():
                raise AdminRequestError("Unsafe", f"{self.path.parent} belongs to another user")
        self.path.unlink(missing_ok=True)
        server = socketserver.ThreadingUnixStreamServer(str(self.path), self._handler_class())
        server.daemon_threads = True
        os.chmod(self.path, 0o600)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="emulator-admin", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.path.unlink(missing_ok=True)

    def dispatch(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return _fail("InvalidRequest", "request must be an object with an 'op' string")
        handler = self.handlers.get(request["op"])
        if handler is None:
            return _fail("InvalidRequest", f"unknown op {request['op']!r}; known: {', '.join(sorted(self.handlers))}")
        args = request.get("args", {})
        if not isinstance(args, dict):
            return _fail("InvalidRequest", "'args' must be an object")
        try:
            return {"ok": True, "result": handler(args)}
        except AdminRequestError as exc:
            return _fail(exc.code, exc.message)

    def _handler_class(self) -> type[socketserver.StreamRequestHandler]:
        outer = self

        class _Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(MAX_REQUEST_BYTES + 1)
                if len(line) > MAX_REQUEST_BYTES:
                    reply = _fail("InvalidRequest", f"request exceeds {MAX_REQUEST_BYTES} bytes")
                else:
                    try:
                        reply = outer.dispatch(json.loads(line))
                    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                        reply = _fail("InvalidJson", f"request is not JSON: {exc}")
                    except Exception as exc:
                        log.exception("admin request failed")
                        reply = _fail("InternalError", f"{type(exc).__name__}: {exc}")
                self.wfile.write(json.dumps(reply).encode() + b"\n")

        return _Handler


def _fail(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def request(state_dir: Path | str, op: str, args: dict[str, Any], timeout_s: float = 15.0) -> Any:
    """Send one admin request to the running emulator; its result, or AdminRequestError."""
    path = socket_path(state_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise AdminRequestError(
                "NotRunning", f"no emulator services at {path} (is `methane-agent emulator serve` running?)"
            ) from exc
        sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
        with sock.makefile("rb") as f:
            line = f.readline()
    if not line:
        raise AdminRequestError("InternalError", "the emulator closed the admin connection without a reply")
    reply = json.loads(line)
    if reply.get("ok"):
        return reply.get("result")
    err = reply.get("error", {})
    raise AdminRequestError(str(err.get("code", "Error")), str(err.get("message", "unknown error")))
