"""The real agent (``methane-agent run`` as a subprocess) against the real emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]


class AgentProc:
    """``methane-agent run`` as a subprocess; ``prefix`` runs it under another command (the link-fault
    harness uses ``ip netns exec <ns>``). ``status()`` talks to its Unix socket, a filesystem path
    reachable from any network namespace."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None,
                 prefix: list[str] | None = None, cwd: Path = ROOT, module: str = "agent") -> None:
        self.config = config
        self.log = log
        self.env = env or {}
        self.prefix = prefix or []
        self.cwd = cwd  # `python -m agent` imports the agent package found here first
        self.module = module  # or a wrapper with the same command line (bench.footprint_probe)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProc:
        env = {**os.environ, **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", self.module, "run", "--config", str(self.config)],
                cwd=self.cwd, env=env, stderr=log, stdout=subprocess.DEVNULL,
            )
        return self

    def status(self) -> dict[str, Any] | None:
        r = subprocess.run(
            [sys.executable, "-m", "agent", "status", "--config", str(self.config), "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=20,
        )
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30, every: float = 0.2
    ) -> dict[str, Any]:
        last: dict[str, Any] | None = None

        def met() -> dict[str, Any] | None:
            nonlocal last
            assert self.proc is not None and self.proc.poll() is None, f"agent exited: {self.log.read_text()[-2000:]}"
            last = self.status()
            return last if last is not None and predicate(last) else None

        return eventually(met, timeout, every, what=lambda: f"last status: {last}")

    def terminate(self, timeout: float = 10) -> tuple[int, float]:
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def write_config(path: Path, info: Any, state: Path, **over: Any) -> Path:
    """A small, fast agent config for tests: 4 simulated channels at ``interval`` s. The site is the
    one the emulator registers its ready-made device at (the device policy binds topics to it)."""
    interval = over.get("interval", 0.05)
    text = f"""
state_dir = "{state}"
[device]
thing_name = "{info.device.thing_name}"
site_id = "site-1"
[connection]
endpoint = "{info.endpoint}"
port = {info.port}
ca_file = "{info.ca_file}"
cert_file = "{info.device.cert_file}"
key_file = "{info.device.key_file}"
keep_alive_s = 30
min_reconnect_delay_ms = 200
max_reconnect_delay_ms = 2000
[spool]
commit_interval_s = {over.get("commit_interval_s", 0.2)}
min_free_disk_bytes = 1048576
[uplink]
encoding = "{over.get("encoding", "compact")}"
batch_max_age_s = {over.get("batch_max_age_s", 0.5)}
ack_timeout_s = 5
retry_max_delay_s = 2
[logging]
level = "INFO"
[[sensors]]
id = "sim-1"
driver = "simulated"
interval_s = {interval}
settings = {{ seed = 3 }}
"""
    path.write_text(text)
    return path


@pytest.fixture
def agent_factory(tmp_path) -> Iterator[Callable[..., AgentProc]]:
    procs: list[AgentProc] = []

    def make(config: Path, env: dict[str, str] | None = None) -> AgentProc:
        p = AgentProc(config, tmp_path / "agent.log", env)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.kill()
