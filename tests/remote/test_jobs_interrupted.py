"""The journal's "interrupted" path: the agent is stopped while an action runs (an upload to an
HTTPS server that takes the request and never answers). The stop stays within the agent's stop
budget and drops the upload, and the next process ends the job FAILED "interrupted: ..." exactly
once. Also: where the journal and the remote overlay live under the hardened systemd unit."""

from __future__ import annotations

import asyncio
import http.server
import ssl
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import config as cfg
from agent.remote import overlay
from agent.remote.jobs.actions import ActionEnv
from agent.remote.jobs.journal import Journal
from agent.runtime import STOP_BUDGET_S, Agent
from tests.remote.conftest import (
    eventually,
    eventually_async,
    https_upload_server,
    jobs_of,
    jobs_or_none,
    running,
    upload_allowed,
)

REPO = Path(__file__).resolve().parents[2]
INTERRUPTED = "interrupted: the agent stopped while the action ran"


class _Stall(http.server.BaseHTTPRequestHandler):
    """Reads the PUT, then says nothing until the client goes away (or the test ends)."""

    got: threading.Event
    client_gone: threading.Event
    release: threading.Event

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).got.set()
        self.connection.settimeout(0.05)
        while not type(self).release.is_set():
            try:
                if not self.connection.recv(1):
                    break
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except OSError:
                break
        type(self).client_gone.set()
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stalling_server(remote_emulator) -> Iterator[tuple[str, ssl.SSLContext, type[_Stall]]]:
    handler: type[_Stall] = type("Stall", (_Stall,), {"got": threading.Event(), "client_gone": threading.Event(),
                                        "release": threading.Event()})
    with https_upload_server(remote_emulator, handler, "/diag?X-Amz-Signature=x") as (url, client_ctx):
        try:
            yield url, client_ctx, handler
        finally:
            handler.release.set()  # before the server shuts down: let the stalled handler finish


def test_agent_stopped_mid_upload_ends_the_job_failed_interrupted_exactly_once(gateway, admin, stalling_server):
    url, ctx, handler = stalling_server
    job_id = f"job-{uuid.uuid4().hex[:10]}"

    def execution() -> dict[str, Any]:
        return dict(admin.job_describe(job_id)["executions"][0])

    async def scenario() -> None:
        agent = Agent(gateway.conf(remote=upload_allowed(url)), action_env=ActionEnv(https_context=ctx))
        async with running(agent):
            await asyncio.to_thread(admin.job_create, {"action": "upload-diagnostics", "params": {"url": url}},
                                    [gateway.thing], job_id)
            await eventually(handler.got.is_set)
            entry = Journal(gateway.state_dir).read()
            assert entry is not None and entry.job_id == job_id and entry.phase == "running"
            assert jobs_of(agent).status()["current_job"] == job_id
            stop_started = time.monotonic()
        # The upload does not hold the stop up (SIGTERM must be done within systemd's budget),
        # and its connection is dropped rather than left to its 30 s timeout.
        assert time.monotonic() - stop_started < STOP_BUDGET_S + 1
        await eventually(handler.client_gone.is_set, 5)
        assert (await asyncio.to_thread(execution))["status"] == "IN_PROGRESS"
        entry = Journal(gateway.state_dir).read()
        assert entry is not None and entry.job_id == job_id and entry.phase == "running"

        again = Agent(gateway.conf())
        async with running(again):
            def final() -> dict[str, Any] | None:
                ex = execution()
                return ex if ex["status"] != "IN_PROGRESS" else None

            ex = await eventually_async(lambda: asyncio.to_thread(final), 20)
            assert ex["status"] == "FAILED", ex
            assert ex["statusDetails"] == {"action": "upload-diagnostics", "reason": INTERRUPTED}, ex
            await eventually(lambda: Journal(gateway.state_dir).read() is None)
            assert jobs_of(again).history == [{"job_id": job_id, "outcome": "FAILED"}]
            version = ex["versionNumber"]

        # A third process has nothing left to report: the status was sent once.
        third = Agent(gateway.conf())
        async with running(third):
            await eventually(lambda: jobs_or_none(third) is not None and third.conn is not None
                             and third.conn.connected.is_set())
            await asyncio.sleep(0.5)
            assert jobs_of(third).history == []
        ex = await asyncio.to_thread(execution)
        assert ex["status"] == "FAILED" and ex["versionNumber"] == version, ex

    asyncio.run(scenario())


def test_journal_and_overlay_live_in_the_units_state_directory(tmp_path):
    """Under ProtectSystem=strict only StateDirectory (and the logs/config dirs) are writable: the
    files remote management writes at run time must be there, with their temp files beside them."""
    unit: dict[str, str] = {}
    for line in (REPO / "systemd" / "methane-agent.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            unit.setdefault(k.strip(), v.strip())
    assert unit["ProtectSystem"] == "strict"
    state = Path("/var/lib") / unit["StateDirectory"]
    assert unit["WorkingDirectory"] == str(state)

    example = tomllib.loads((REPO / "config" / "agent.example.toml").read_text())
    conf = cfg.validate({k: v for k, v in example.items() if k == "state_dir"})
    assert conf.state_dir == state == cfg.AgentConfig().state_dir
    for path in (Journal(conf.state_dir).path, overlay.path_in(conf.state_dir)):
        assert path.parent == state, path

    # The writes are atomic temp-file-and-rename in the same directory (nothing in /tmp or /etc).
    before = set(tmp_path.iterdir())
    from agent.remote.jobs.journal import Entry

    Journal(tmp_path).write(Entry("j", "reboot", "running", "b", 0.0))
    overlay.save(tmp_path, {"shadow": {"logging": {"level": "DEBUG"}}}, 3)
    written = {Journal(tmp_path).path, overlay.path_in(tmp_path)}
    assert set(tmp_path.iterdir()) - before == written
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in written)
