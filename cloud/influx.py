"""The InfluxDB v1 HTTP API (``/write``, ``/query``): what InfluxDB 1.x serves, what InfluxDB 2 and
Amazon Timestream for InfluxDB accept for compatibility, and so what the local twin and the Lambda
share. Standard library only, so the Lambda package needs nothing beyond the agent's decoder.

Two kinds of failure are kept apart because they need opposite handling: ``StoreRejected`` (HTTP
4xx: the store looked at the data and refused it, sending it again changes nothing, it belongs in
the dead-letter path) and ``StoreUnavailable`` (no answer, 5xx, timeout: try again later)."""

from __future__ import annotations

import hmac
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cloud.schema import PointKey

DEFAULT_TIMEOUT_S = 10.0


class StoreError(RuntimeError):
    pass


class StoreRejected(StoreError):
    """The store refused the request (4xx); ``partial`` when InfluxDB wrote some points of it."""

    def __init__(self, message: str, partial: bool = False) -> None:
        super().__init__(message)
        self.partial = partial


class StoreUnavailable(StoreError):
    """No usable answer: connection refused, timeout, 5xx."""


@dataclass(frozen=True)
class Series:
    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, v, strict=True)) for v in self.values]


def _quote_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxClient:
    """One keep-alive connection per thread (the local twin's MQTT callbacks and a dashboard
    poller may share a client): a new TCP (and TLS) connection per write cost more than writing a
    small batch."""

    def __init__(self, url: str, database: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"influx url must be http(s)://host:port, got {url!r}")
        if not database:
            raise ValueError("database must not be empty")
        self.url = url.rstrip("/")
        self.database = database
        self.timeout = timeout
        self._https = parsed.scheme == "https"
        self._netloc = parsed.netloc
        self._base_path = parsed.path.rstrip("/")
        self._local = threading.local()
        # Timestream for InfluxDB / InfluxDB 2 take "Authorization: Token <token>" on the v1 API.
        self._headers = {"Authorization": f"Token {token}"} if token else {}

    def sends_token(self, token: str) -> bool:
        """Whether requests carry ``token`` (a deployment check that the secret reached the client,
        without a way to read the secret back)."""
        return hmac.compare_digest(self._headers.get("Authorization", ""), f"Token {token}")

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """(this thread's connection, whether it was used before)."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        # HTTPSConnection's default context verifies the certificate and the host name.
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = self._local.conn = cls(self._netloc, timeout=self.timeout)
        return conn, False

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _request(self, path: str, params: dict[str, str], body: bytes, content_type: str) -> bytes:
        target = f"{self._base_path}{path}?{urllib.parse.urlencode(params)}"
        headers = {**self._headers, "Content-Type": content_type}
        while True:
            conn, reused = self._connection()
            try:
                conn.request("POST", target, body, headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (ConnectionResetError, BrokenPipeError, http.client.BadStatusLine) as exc:
                self._drop()
                if reused:  # the server closed an idle keep-alive connection: once more on a new one
                    continue  # (a write repeated lands on the very same points: no double)
                raise StoreUnavailable(f"{self.url}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise StoreUnavailable(f"{self.url}: {getattr(exc, 'reason', exc)}") from None
            if resp.will_close:
                self._drop()
            break
        if resp.status < 300:
            return bytes(raw)
        detail = _error_text(raw)
        if 400 <= resp.status < 500:
            raise StoreRejected(f"HTTP {resp.status}: {detail}", partial="partial write" in detail)
        raise StoreUnavailable(f"HTTP {resp.status}: {detail}")

    def write(self, lines: Iterable[str]) -> None:
        """One POST of line protocol (ns precision); raises StoreRejected / StoreUnavailable."""
        body = "\n".join(lines).encode()
        if body:
            self._request("/write", {"db": self.database, "precision": "ns"}, body, "text/plain; charset=utf-8")

    def query(self, influxql: str, epoch: str = "ns") -> list[list[Series]]:
        """Per statement, its series; a statement error raises StoreRejected with InfluxDB's text."""
        # POST with the statement in a form body: DELETE/CREATE need POST, and a long statement
        # list must not end up in a URL.
        form = urllib.parse.urlencode({"q": influxql}).encode()
        raw = self._request("/query", {"db": self.database, "epoch": epoch}, form, "application/x-www-form-urlencoded")
        doc = json.loads(raw)
        if "error" in doc:
            raise StoreRejected(str(doc["error"]))
        out: list[list[Series]] = []
        for res in doc.get("results", []):
            if "error" in res:
                raise StoreRejected(f"query {influxql!r}: {res['error']}")
            out.append([Series(s.get("name", ""), s.get("tags") or {}, s["columns"], s["values"])
                        for s in res.get("series", [])])
        return out

    def query_one(self, influxql: str, epoch: str = "ns") -> list[Series]:
        res = self.query(influxql, epoch)
        return res[0] if res else []

    def create_database(self) -> None:
        self.query(f"CREATE DATABASE {_quote_ident(self.database)}")

    def delete_points(self, keys: Iterable[PointKey]) -> None:
        """Delete exactly these points (the compensation after a partial write)."""
        stmts = []
        for k in keys:
            cond = " AND ".join(f"{_quote_ident(t)} = {quote_string(v)}" for t, v in k.tags)
            where = f"{cond} AND time = {k.ns}" if cond else f"time = {k.ns}"
            stmts.append(f"DELETE FROM {_quote_ident(k.measurement)} WHERE {where}")  # noqa: S608 - quoted
        for i in range(0, len(stmts), 500):
            self.query(";".join(stmts[i : i + 500]))


def _error_text(raw: bytes) -> str:
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:500]
    return str(doc.get("error", doc))[:500] if isinstance(doc, dict) else str(doc)[:500]
