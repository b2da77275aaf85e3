"""Jobs against the emulator's Jobs service with the real agent: every action's success and
failure paths, reject, timeout, cancel, and jobs that span an agent restart or a reboot."""

from __future__ import annotations

import asyncio
import http.server
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from agent.remote.jobs.actions import ActionEnv
from agent.remote.jobs.journal import Journal
from agent.runtime import Agent
from tests.remote.conftest import (
    create_job,
    eventually,
    eventually_async,
    final_execution,
    https_upload_server,
    jobs_of,
    jobs_or_none,
    running,
    upload_allowed,
)


def _job(admin, gateway, document: Any) -> str:
    return create_job(admin, gateway.thing, document)


def _execution(admin, job_id: str) -> dict[str, Any]:
    return admin.job_describe(job_id)["executions"][0]


def test_config_update_success_and_invalid_patch_rejected(gateway, admin):
    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            ok = await asyncio.to_thread(_job, admin, gateway, {
                "action": "config-update", "params": {"patch": {"uplink": {"batch_max_age_s": 5}}}})
            ex = await final_execution(admin, ok)
            assert ex["status"] == "SUCCEEDED", ex
            assert ex["statusDetails"]["config_hash"] == agent.conf.digest()
            assert agent.conf.uplink.batch_max_age_s == 5
            before = agent.conf.digest()
            bad = await asyncio.to_thread(_job, admin, gateway, {
                "action": "config-update", "params": {"patch": {"spool": {"path": "/etc/passwd"}}}})
            ex = await final_execution(admin, bad)
            assert ex["status"] == "REJECTED" and "local only" in ex["statusDetails"]["reason"], ex
            assert agent.conf.digest() == before

    asyncio.run(scenario())


@pytest.mark.parametrize(("document", "reason"), [
    ({"action": "rm-rf", "params": {}}, "unknown action"),
    ({"action": "config-update", "params": {"patch": {}, "shell": "reboot"}}, "params"),
    ({"action": "calibrate-sensor", "params": {"sensor_id": "sim-1", "kind": "span"}}, "span calibration needs value"),
    ({"action": "reboot"}, "disabled"),
    ({"action": "upload-diagnostics", "params": {"url": "http://example.com/x"}}, "https"),
    ({"action": "calibrate-sensor", "params": {"sensor_id": "sim-1", "kind": "zero"}}, "does not support calibration"),
    ({"params": {}, "action": 7}, "action"),
])
def test_rejected_with_reason(gateway, admin, document, reason):
    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            before = agent.conf.digest()
            job = await asyncio.to_thread(_job, admin, gateway, document)
            ex = await final_execution(admin, job)
            assert ex["status"] == "REJECTED", ex
            assert reason in ex["statusDetails"]["reason"], ex
            assert all(len(v) <= 128 for v in ex["statusDetails"].values())
            assert agent.conf.digest() == before

    asyncio.run(scenario())


def test_restart_agent_spans_the_restart_exactly_once(gateway, admin):
    async def scenario() -> None:
        agent = Agent(gateway.conf())
        task = asyncio.get_running_loop().create_task(agent.run())
        await eventually(lambda: jobs_or_none(agent) is not None)
        job = await asyncio.to_thread(_job, admin, gateway, {"action": "restart-agent"})
        await asyncio.wait_for(task, 20)  # the action stopped the agent (systemd would restart it)
        journal = Journal(gateway.state_dir).read()
        assert journal is not None and journal.job_id == job and journal.phase == "restarting"
        assert (await asyncio.to_thread(_execution, admin, job))["status"] == "IN_PROGRESS"
        again = Agent(gateway.conf())
        async with running(again):
            ex = await final_execution(admin, job)
            assert ex["status"] == "SUCCEEDED" and ex["statusDetails"]["reason"] == "agent restarted", ex
            await eventually(lambda: Journal(gateway.state_dir).read() is None)
        # A third start has nothing left to report.
        third = Agent(gateway.conf())
        async with running(third):
            await eventually(lambda: jobs_or_none(third) is not None)
            await asyncio.sleep(0.5)
            assert jobs_of(third).history == []

    asyncio.run(scenario())


def test_reboot_runs_local_argv_and_finishes_after_the_reboot(gateway, admin):
    calls: list[list[str]] = []
    boot = {"id": "boot-a"}

    async def scenario() -> None:
        async def fake_reboot(argv: list[str]) -> tuple[int, str]:
            calls.append(argv)
            agent.request_stop()  # the system going down stops the agent
            return 0, ""

        agent = Agent(gateway.conf(remote={"allow_reboot": True, "reboot_command": ["/sbin/test-reboot", "now"]}),
                      action_env=ActionEnv(run_argv=fake_reboot, boot_id=lambda: boot["id"]))
        async with running(agent):
            job = await asyncio.to_thread(_job, admin, gateway, {"action": "reboot"})
            await eventually(lambda: calls)
        assert calls == [["/sbin/test-reboot", "now"]]
        boot["id"] = "boot-b"
        again = Agent(gateway.conf(remote={"allow_reboot": True}), action_env=ActionEnv(boot_id=lambda: boot["id"]))
        async with running(again):
            ex = await final_execution(admin, job)
            assert ex["status"] == "SUCCEEDED" and ex["statusDetails"]["reason"] == "device rebooted", ex

    asyncio.run(scenario())


def test_reboot_command_failure_and_no_reboot_fail(gateway, admin):
    async def scenario() -> None:
        refuse = [True]

        async def reboot_command(argv: list[str]) -> tuple[int, str]:
            # First refused; then it "succeeds" but the device never goes down.
            return (1, "Failed to reboot: Access denied") if refuse[0] else (0, "")

        agent = Agent(gateway.conf(remote={"allow_reboot": True, "action_timeouts_s": {"reboot": 1.0}}),
                      action_env=ActionEnv(run_argv=reboot_command, boot_id=lambda: "same"))
        async with running(agent):
            job = await asyncio.to_thread(_job, admin, gateway, {"action": "reboot"})
            ex = await final_execution(admin, job)
            assert ex["status"] == "FAILED" and "Access denied" in ex["statusDetails"]["reason"], ex

            # The command "succeeds" but the device never goes down: the action times out.
            refuse[0] = False
            job2 = await asyncio.to_thread(_job, admin, gateway, {"action": "reboot"})
            ex = await final_execution(admin, job2)
            assert ex["status"] == "FAILED" and "timed out after 1 s" in ex["statusDetails"]["reason"], ex

    asyncio.run(scenario())


def test_agent_stopped_mid_action_reports_failed_after_restart(gateway, admin):
    async def scenario() -> None:
        async def hangs(argv: list[str]) -> tuple[int, str]:
            await asyncio.Event().wait()
            return 0, ""

        agent = Agent(gateway.conf(remote={"allow_reboot": True}), action_env=ActionEnv(run_argv=hangs))
        async with running(agent):
            job = await asyncio.to_thread(_job, admin, gateway, {"action": "reboot"})
            await eventually(lambda: (e := Journal(gateway.state_dir).read()) is not None and e.phase == "rebooting")
        # journal says "rebooting" with this boot id and we come back on the same boot: FAILED
        again = Agent(gateway.conf())
        async with running(again):
            ex = await final_execution(admin, job)
            assert ex["status"] == "FAILED" and "did not reboot" in ex["statusDetails"]["reason"], ex

    asyncio.run(scenario())


def test_cancel_stops_the_action_and_the_next_job_runs(gateway, admin):
    async def scenario() -> None:
        started = asyncio.Event()
        cancelled: list[bool] = []

        async def hangs(argv: list[str]) -> tuple[int, str]:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise
            return 0, ""

        agent = Agent(gateway.conf(remote={"allow_reboot": True}), action_env=ActionEnv(run_argv=hangs))
        async with running(agent):
            job = await asyncio.to_thread(_job, admin, gateway, {"action": "reboot"})
            await asyncio.wait_for(started.wait(), 20)
            nxt = await asyncio.to_thread(_job, admin, gateway, {
                "action": "config-update", "params": {"patch": {"logging": {"format": "json"}}}})
            await asyncio.to_thread(admin.job_cancel, job, True)
            await eventually(lambda: cancelled)
            assert (await asyncio.to_thread(_execution, admin, job))["status"] == "CANCELED"
            ex = await final_execution(admin, nxt)
            assert ex["status"] == "SUCCEEDED", ex
            await eventually(lambda: Journal(gateway.state_dir).read() is None)

    asyncio.run(scenario())


def test_rotate_certificate_without_identity_fails_cleanly(gateway, admin):
    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            job = await asyncio.to_thread(_job, admin, gateway, {"action": "rotate-certificate"})
            ex = await final_execution(admin, job)
            assert ex["status"] == "FAILED" and "no identity" in ex["statusDetails"]["reason"], ex
            assert agent.conn is not None and agent.conn.connected.is_set()

    asyncio.run(scenario())


def _upload(url: str) -> dict[str, Any]:
    return {"action": "upload-diagnostics", "params": {"url": url}}


UPLOAD_FAILED = "upload failed (details in the device log)"


class _Upload(http.server.BaseHTTPRequestHandler):
    received: list[bytes] = []
    status = 200

    def do_PUT(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        type(self).received.append(self.rfile.read(n))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def https_server(remote_emulator) -> Iterator[tuple[str, ssl.SSLContext, type[_Upload]]]:
    handler = type("Upload", (_Upload,), {"received": [], "status": 200})
    with https_upload_server(remote_emulator, handler, "/bucket/diag?X-Amz-Signature=abc") as (url, client_ctx):
        yield url, client_ctx, handler


def test_upload_diagnostics_success_cap_and_refusal(gateway, admin, https_server, caplog):
    url, ctx, handler = https_server
    # The agent's INFO lines are what the ring keeps; the root logger's level would otherwise
    # depend on which test ran before in this worker (logs.setup is not called in-process).
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        import json

        agent = Agent(gateway.conf(remote={"diagnostics_max_bytes": 4096, **upload_allowed(url)}),
                      action_env=ActionEnv(https_context=ctx))
        async with running(agent):
            job = await asyncio.to_thread(_job, admin, gateway, _upload(url))
            ex = await final_execution(admin, job)
            assert ex["status"] == "SUCCEEDED", ex
            body = handler.received[-1]
            assert len(body) <= 4096
            bundle = json.loads(body)
            assert bundle["status"]["agent"]["thing_name"] == gateway.thing
            assert bundle["logs"] and "BEGIN" not in body.decode()
            handler.status = 403
            job = await asyncio.to_thread(_job, admin, gateway, _upload(url))
            ex = await final_execution(admin, job)
            assert ex["status"] == "FAILED" and "HTTP 403" in ex["statusDetails"]["reason"], ex

    asyncio.run(scenario())


def test_upload_diagnostics_untrusted_certificate_fails(gateway, admin, https_server, caplog):
    url, _ctx, handler = https_server

    async def scenario() -> None:
        agent = Agent(gateway.conf(remote=upload_allowed(url)))
        async with running(agent):  # system trust store: the test CA is not trusted
            job = await asyncio.to_thread(_job, admin, gateway, _upload(url))
            ex = await final_execution(admin, job)
            # The cloud gets a generic reason; the device log says what happened.
            assert ex["status"] == "FAILED" and ex["statusDetails"]["reason"] == UPLOAD_FAILED, ex
            assert handler.received == []
            assert any("CERTIFICATE_VERIFY_FAILED" in str(getattr(r, "error", "")) for r in caplog.records)

    asyncio.run(scenario())


def test_final_status_lost_in_transit_is_sent_again_not_reported_interrupted(gateway, admin):
    """The action succeeded but its final status did not reach IoT Core (the link dropped at that
    moment): the journal keeps the outcome and the next attempt reports SUCCEEDED, not FAILED."""

    async def scenario() -> None:
        agent = Agent(gateway.conf())
        async with running(agent):
            jobs = jobs_of(agent)
            real_update = jobs.update_execution
            dropped: list[str] = []

            async def flaky_update(job_id: str, status: str, info: dict[str, Any]) -> None:
                if status == "SUCCEEDED" and not dropped:
                    dropped.append(job_id)
                    raise TimeoutError("simulated: the link dropped as the final status was sent")
                await real_update(job_id, status, info)

            jobs.update_execution = flaky_update  # type: ignore[method-assign]
            job = await asyncio.to_thread(_job, admin, gateway, {
                "action": "config-update", "params": {"patch": {"uplink": {"batch_max_age_s": 7}}}})
            ex = await final_execution(admin, job)
            assert dropped == [job]
            assert ex["status"] == "SUCCEEDED", ex
            # The journal entry goes once IoT Core has accepted the status (just after it shows).
            await eventually_async(lambda: asyncio.to_thread(lambda: Journal(agent.conf.state_dir).read() is None
                                                             or None), 10)

    asyncio.run(scenario())
