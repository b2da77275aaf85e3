"""A private ``influxd`` (Debian's ``influxdb`` 1.x package) on free loopback ports, data under a
given folder: the store of the local twin (``emulator serve --ingest``, ``make demo``) and of the
tests. It never touches the package's own service, config or /var/lib/influxdb.

InfluxDB 1.x speaks the v1 HTTP API (``/write``, ``/query``, ``/ping``) that Amazon Timestream for
InfluxDB also accepts, so the same writer and queries run against both."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

START_TIMEOUT_S = 30.0
INFLUXD_PATHS = ("/usr/bin/influxd", "/usr/sbin/influxd")


class LocalStoreError(RuntimeError):
    """influxd is missing or did not come up; the message says where to look."""


def find_influxd() -> str:
    found = shutil.which("influxd") or next((p for p in INFLUXD_PATHS if Path(p).exists()), None)
    if found is None:
        raise LocalStoreError("influxd not found: run scripts/install-system-deps.sh (Debian package influxdb)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def render_config(data_dir: Path, http_port: int, rpc_port: int) -> str:
    """Everything on loopback, nothing phoned home, no ``_internal`` monitor database (it would
    write every 10 s and show up in every ``SHOW DATABASES``)."""
    return f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{data_dir / 'meta'}"
  logging-enabled = false

[data]
  dir = "{data_dir / 'data'}"
  wal-dir = "{data_dir / 'wal'}"
  query-log-enabled = false
  cache-snapshot-write-cold-duration = "30s"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  max-body-size = 0

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
"""


class LocalInflux:
    """``start()`` / ``stop()`` (or ``with``); ``url`` is ``http://127.0.0.1:PORT`` once started."""

    def __init__(self, data_dir: Path | str, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise LocalStoreError("local influxd not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "influxd.log"

    def start(self) -> str:
        influxd = find_influxd()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        conf = self.data_dir / "influxd.conf"
        conf.write_text(render_config(self.data_dir, self.port, free_port()))
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([influxd, "run", "-config", str(conf)], stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise LocalStoreError(f"influxd exited with {self.proc.returncode}; see {self.log_file}")
            if self.ping():
                return self.url
            time.sleep(0.05)
        self.stop()
        raise LocalStoreError(f"influxd did not answer /ping within {START_TIMEOUT_S:.0f}s; see {self.log_file}")

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:  # noqa: S310 - our own loopback URL
                return bool(resp.status == 204)
        except (urllib.error.URLError, OSError):
            return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    def __enter__(self) -> LocalInflux:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
