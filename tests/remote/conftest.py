"""A running emulator with the Shadow and Jobs services (one per module), a fresh thing per test,
and helpers to run the real Agent in-process on the test's own asyncio loop (main thread, so its
signal handlers install as in production)."""

from __future__ import annotations

import asyncio
import http.server
import shutil
import ssl
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from agent import config as cfg
from agent.remote.jobs import JobsFeature
from agent.remote.jobs.runner import JobRunner
from agent.remote.shadow import ShadowFeature
from agent.remote.shadow.sync import ShadowSync
from agent.runtime import Agent
from emulator import Emulator
from emulator.admin import Admin
from emulator.services.device_services import DeviceServices
from tests.eventually import eventually_async

T = TypeVar("T")


@pytest.fixture(scope="module")
def remote_emulator(tmp_path_factory) -> Iterator[Emulator]:
    emu = Emulator(tmp_path_factory.mktemp("remote") / "emulator", components=[DeviceServices()])
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def admin(remote_emulator) -> Admin:
    return Admin(remote_emulator.state_dir)


@dataclass
class Gateway:
    thing: str
    cert: Path
    key: Path
    state_dir: Path
    emu: Emulator

    def conf(
        self, remote: dict[str, Any] | None = None, port: int | None = None,
        connection_overrides: dict[str, Any] | None = None, **extra: Any,
    ) -> cfg.AgentConfig:
        info = self.emu.info
        assert info is not None
        data: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "device": {"thing_name": self.thing},
            "connection": {
                "endpoint": info.endpoint, "port": port or info.port, "ca_file": str(info.ca_file),
                "cert_file": str(self.cert), "key_file": str(self.key),
                "min_reconnect_delay_ms": 100, "max_reconnect_delay_ms": 1000, **(connection_overrides or {}),
            },
            "sensors": [{"id": "sim-1", "driver": "simulated", "interval_s": 0.5, "settings": {"seed": 1}}],
            "uplink": {"batch_max_age_s": 1.0},
            "remote": {"reported_min_interval_s": 1.0, "request_timeout_s": 5, **(remote or {})},
            **extra,
        }
        return cfg.validate(data)


@pytest.fixture
def gateway(remote_emulator) -> Iterator[Gateway]:
    thing = f"gw-{uuid.uuid4().hex[:10]}"
    cert, key = remote_emulator.issue_identity(thing)
    # Short path: the status socket lives in state_dir (Unix socket paths are limited to 107 bytes).
    state = Path(tempfile.mkdtemp(prefix="rm-"))
    try:
        yield Gateway(thing, cert, key, state, remote_emulator)
    finally:
        shutil.rmtree(state, ignore_errors=True)


@asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    """Run ``agent`` until the block ends (or it stops by itself, e.g. restart-agent). What the
    test needs to replace (actions' network and OS access) goes in through ``Agent(...,
    action_env=ActionEnv(...))``."""
    task = asyncio.get_running_loop().create_task(agent.run())
    try:
        await eventually(agent.running.is_set)
        yield agent
    finally:
        agent.request_stop()
        await asyncio.wait_for(task, 15)


def shadow_of(agent: Agent) -> ShadowSync | None:
    """The running shadow client, None while the feature is idle (offline, not yet started)."""
    feature = agent.feature("shadow")
    assert isinstance(feature, ShadowFeature)
    return feature.sync


def jobs_or_none(agent: Agent) -> JobRunner | None:
    feature = agent.feature("jobs")
    assert isinstance(feature, JobsFeature)
    return feature.runner


def jobs_of(agent: Agent) -> JobRunner:
    jobs = jobs_or_none(agent)
    assert jobs is not None
    return jobs


# One polling helper for the whole suite (tests/eventually.py); the async form serves both names here.
eventually = eventually_async


def create_job(admin: Admin, thing: str, document: Any) -> str:
    job_id = f"job-{uuid.uuid4().hex[:10]}"
    admin.job_create(document, [thing], job_id=job_id)
    return job_id


async def final_execution(admin: Admin, job_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """The job's execution once it left QUEUED/IN_PROGRESS."""

    def done() -> dict[str, Any] | None:
        ex: dict[str, Any] = admin.job_describe(job_id)["executions"][0]
        return ex if ex["status"] not in ("QUEUED", "IN_PROGRESS") else None

    result: dict[str, Any] = await eventually_async(lambda: asyncio.to_thread(done), timeout_s)
    return result


def upload_allowed(url: str) -> dict[str, Any]:
    """The LOCAL [remote] keys that let upload-diagnostics reach a test server on loopback (the
    default allowlist admits only S3 on 443 at public addresses)."""
    port = urlsplit(url).port
    return {"diagnostics_upload_hosts": [f"localhost:{port}"],
            "diagnostics_upload_networks": ["127.0.0.0/8", "::1/128"]}


@contextmanager
def https_upload_server(
    emulator: Emulator, handler: type[http.server.BaseHTTPRequestHandler], path: str
) -> Iterator[tuple[str, ssl.SSLContext]]:
    """A local HTTPS server (certificate from the emulator's CA) standing in for a presigned upload
    URL; yields the URL and a client context that trusts it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    assert emulator.ca is not None and emulator.info is not None
    cert, key = emulator.ca.ensure_server()
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    server.socket = sctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client_ctx = ssl.create_default_context(cafile=str(emulator.info.ca_file))
    try:
        yield f"https://localhost:{server.server_address[1]}{path}", client_ctx
    finally:
        server.shutdown()
        server.server_close()
