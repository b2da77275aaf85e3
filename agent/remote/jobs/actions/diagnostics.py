"""``upload-diagnostics``: a bounded bundle (status + recent log lines from the in-memory ring,
already redacted by the log formatter) PUT to a presigned HTTPS URL from the job. Only to a host
of the local allowlist, on 443, at an address checked after resolution and connected to as
checked (agent/egress.py); TLS verified against the host name (system trust store unless a
context is injected), a size cap, a timeout; no redirects are followed for the PUT. A failure
reaches the cloud as a generic reason: the details (which would tell a closed port from an open
one) go to the local log only."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

import agent
from agent import egress
from agent.remote.jobs.actions.base import Action, ActionContext, Failed, Params, Progress, Rejected, Result

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 30.0


class UploadParams(Params):
    url: str = Field(..., min_length=9, max_length=4096, description="presigned HTTPS PUT URL")

    @field_validator("url")
    @classmethod
    def _https(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials in the authority")
        if any(c in v for c in "\r\n\x00 "):
            raise ValueError("must not contain whitespace or control characters")
        return v


def bundle(status: dict[str, Any], lines: list[str], max_bytes: int) -> bytes:
    """JSON with the status and as many of the NEWEST log lines as fit in ``max_bytes``."""
    head = {"agent_version": agent.__version__, "created_ts": time.time(), "status": status}
    # The budget counts the "logs_dropped" tail too, at its widest (every line dropped).
    base = json.dumps({**head, "logs": [], "logs_dropped": len(lines)}, default=str).encode()
    if len(base) > max_bytes:
        head["status"] = {"truncated": True}
        base = json.dumps({**head, "logs": [], "logs_dropped": len(lines)}, default=str).encode()
    budget = max_bytes - len(base)
    kept: list[str] = []
    for line in reversed(lines):
        cost = len(json.dumps(line).encode()) + 2
        if cost > budget:
            break
        kept.append(line)
        budget -= cost
    kept.reverse()
    return json.dumps({**head, "logs": kept, "logs_dropped": len(lines) - len(kept)}, default=str).encode()


class _PinnedHTTPS(http.client.HTTPSConnection):
    """Connects to already checked addresses (first that answers), never to a fresh lookup of
    the host name, and verifies TLS against the host name."""

    def __init__(self, host: str, port: int, addresses: list[str], context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.addresses = addresses
        self.tls = context

    def connect(self) -> None:
        last: OSError | None = None
        for address in self.addresses:
            try:
                sock = socket.create_connection((address, self.port), self.timeout)
            except OSError as exc:
                last = exc
                continue
            try:
                self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
            return
        raise last or OSError("no address to connect to")


class _Put:
    """One PUT over http.client: https only (checked again here), no redirects, no proxies, to
    the addresses ``resolve`` returns for the URL's host (called once, in the upload thread).

    It runs in a daemon thread of its own, and ``abort`` shuts its socket down: an agent stopped
    mid-upload (SIGTERM, restart-agent) neither waits for the 30 s socket timeout nor is held at
    exit by an executor thread still blocked in a read."""

    def __init__(self, url: str, body: bytes, context: ssl.SSLContext, resolve: Callable[[], list[str]]) -> None:
        self.url, self.body, self.context, self.resolve = url, body, context, resolve
        self._conn: http.client.HTTPSConnection | None = None
        self._lock = threading.Lock()
        self._aborted = False

    def run(self) -> int:
        parts = urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("not an https URL")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn = _PinnedHTTPS(parts.hostname, parts.port or egress.HTTPS_PORT, self.resolve(), self.context,
                            HTTP_TIMEOUT_S)
        with self._lock:
            if self._aborted:
                raise ConnectionAbortedError("upload cancelled")
            self._conn = conn
        try:
            conn.request("PUT", path, body=self.body, headers={"Content-Type": "application/json",
                                                               "Content-Length": str(len(self.body))})
            resp = conn.getresponse()
            resp.read(65536)
            return int(resp.status)
        finally:
            conn.close()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            sock = self._conn.sock if self._conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown: wakes a read blocked in the other thread (TLS
                # handshake or response) without touching the SSL object it is using.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    async def start(self) -> int:
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()

        def work() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(self.run())
            except BaseException as exc:  # noqa: BLE001 - not swallowed: re-raised in the awaiting task
                fut.set_exception(exc)

        threading.Thread(target=work, name="diagnostics-upload", daemon=True).start()
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            self.abort()
            raise


async def run(ctx: ActionContext, params: UploadParams, progress: Progress) -> Result:
    remote = ctx.remote
    try:
        host, port = egress.allowed_target(params.url, remote.diagnostics_upload_hosts)
    except egress.EgressRefused as exc:
        raise Rejected(str(exc)) from None
    body = bundle(ctx.ports.status().as_dict(), ctx.logring.lines(), remote.diagnostics_max_bytes)
    context = ctx.env.https_context or ssl.create_default_context()

    def resolve() -> list[str]:
        return egress.resolve(host, port, remote.diagnostics_upload_networks, ctx.env.getaddrinfo)

    await progress({"step": "uploading", "bytes": str(len(body))})
    try:
        code = await _Put(params.url, body, context, resolve).start()
    except (OSError, http.client.HTTPException, ValueError, egress.EgressRefused) as exc:  # SSLError is an OSError
        log.warning("upload-diagnostics failed", extra={"host": host, "port": port,
                                                        "error": f"{type(exc).__name__}: {exc}"})
        raise Failed("upload failed (details in the device log)") from None
    if not 200 <= code < 300:
        raise Failed(f"upload refused: HTTP {code}")
    return Result({"bytes": str(len(body)), "http_status": str(code)})


ACTION = Action("upload-diagnostics", UploadParams, run)
