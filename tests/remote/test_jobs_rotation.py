"""rotate-certificate end to end: a gateway provisioned by claim (fleet provisioning emulator with
Shadow/Jobs and the telemetry recorder), the job rotates its certificate over IoT Core, reports
SUCCEEDED, and the agent restarts (as systemd's Restart=always does) onto the NEW certificate;
telemetry carries on without a gap."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.remote.jobs.actions import ActionEnv
from agent.remote.jobs.journal import Journal
from agent.runtime import Agent, load_config
from emulator import Emulator
from emulator import authz as emu_authz
from emulator.admin import Admin
from emulator.recorder import TelemetryRecorder
from emulator.services.device_services import DeviceServices
from provisioning import identity as ident_mod
from provisioning.rotation import rotate_certificate
from tests.eventually import eventually as eventually_sync
from tests.remote.conftest import eventually, eventually_async, jobs_or_none, running, shadow_of

SERIAL = "10000000feed0006"
THING = f"methane-{SERIAL}"


@pytest.fixture
def fleet_emulator(tmp_path) -> Iterator[tuple[Emulator, TelemetryRecorder]]:
    recorder = TelemetryRecorder()
    emu = Emulator(tmp_path / "emu", fleet_provisioning=True, components=[DeviceServices(), recorder])
    emu.start()
    try:
        yield emu, recorder
    finally:
        emu.stop()


def _write_config(path: Path, emu: Emulator, state: Path, *, reconnect_ms: int = 100, remote: str = "") -> Path:
    info = emu.info
    assert info is not None and info.claim_cert_file and info.claim_key_file and info.template_name
    serial = state.parent / "serial"
    serial.write_text(SERIAL + "\n")
    path.write_text(f"""
state_dir = "{state}"
[device]
site_id = "site-6"
[connection]
endpoint = "{info.endpoint}"
port = {info.port}
ca_file = "{info.ca_file}"
min_reconnect_delay_ms = {reconnect_ms}
max_reconnect_delay_ms = {max(1000, reconnect_ms)}
[provisioning]
enabled = true
claim_cert_file = "{info.claim_cert_file}"
claim_key_file = "{info.claim_key_file}"
template_name = "{info.template_name}"
serial_source = "file:{serial}"
[uplink]
batch_max_age_s = 0.3
[remote]
reported_min_interval_s = 1.0
request_timeout_s = 10
{remote}
[[sensors]]
id = "sim-1"
driver = "simulated"
interval_s = 0.2
settings = {{ seed = 6 }}
""")
    return path


def test_rotate_certificate_succeeds_and_the_agent_comes_back_on_the_new_certificate(fleet_emulator):
    emu, recorder = fleet_emulator
    admin = Admin(emu.state_dir)
    registry = emu.fleet.registry
    root = Path(tempfile.mkdtemp(prefix="rot-"))  # short: the status socket path is limited
    state = root / "state"
    path = _write_config(root / "agent.toml", emu, state)

    async def scenario() -> None:
        # First start: no identity yet, so the start-up step provisions by claim.
        conf = await asyncio.to_thread(load_config, path)
        old = ident_mod.load(state)
        assert old is not None and old.thing_name == THING and conf.connection.cert_file == old.cert_file
        agent = Agent(conf, path)
        task = asyncio.get_running_loop().create_task(agent.run())
        await eventually(lambda: jobs_or_none(agent) is not None)
        await eventually(lambda: recorder.received(THING), 20)
        assert emu.fleet is not None
        stats_file = emu.fleet.plugin.stats_file

        def broker_cert(cert_id: str) -> bool:
            return (emu_authz.read_stats(stats_file).get(THING) or {}).get("cert") == cert_id

        assert await eventually_async(lambda: asyncio.to_thread(broker_cert, old.certificate_id), 15, 0.2)

        job_id = f"rot-{uuid.uuid4().hex[:10]}"
        await asyncio.to_thread(admin.job_create, {"action": "rotate-certificate"}, [THING], job_id)
        # The action reports SUCCEEDED and then stops the agent so the next process uses the new
        # pair (restart_after); under systemd Restart=always starts it again.
        assert await asyncio.wait_for(task, 20) == 0
        ex = (await asyncio.to_thread(admin.job_describe, job_id))["executions"][0]
        assert ex["status"] == "SUCCEEDED", ex
        new = ident_mod.load(state)
        assert new is not None and new.certificate_id != old.certificate_id and new.thing_name == THING
        assert ex["statusDetails"]["new_certificate_id"] == new.certificate_id
        assert Journal(state).read() is None
        assert not old.cert_file.exists() and not old.key_file.exists()
        cert = registry.certificate(new.certificate_id)
        assert cert is not None and cert.status == "ACTIVE" and THING in cert.things
        sent_before = max(recorder.received(THING))

        # The restart: the same start-up path (file + identity), no re-provisioning.
        conf2 = await asyncio.to_thread(load_config, path)
        assert conf2.connection.cert_file == new.cert_file and conf2.connection.key_file == new.key_file
        assert ident_mod.load(state) == new
        again = Agent(conf2, path)
        task2 = asyncio.get_running_loop().create_task(again.run())
        try:
            await eventually(lambda: again.conn is not None and again.conn.connected.is_set(), 20)
            # The broker sees this client on the new certificate (its stats file is rewritten
            # about once a second, so the previous connection may show first).
            assert await eventually_async(lambda: asyncio.to_thread(broker_cert, new.certificate_id), 15, 0.2)
            # Status and the shadow's reported status name the new certificate.
            sync = shadow_of(again)
            assert sync is not None and _status_cert(sync.status_source.build()) == new.certificate_id

            def reported_cert() -> str | None:
                doc = admin.shadow_get(THING, "methane-agent")
                return _status_cert(doc.get("state", {}).get("reported", {}).get("status", {}))

            assert await eventually_async(
                lambda: asyncio.to_thread(lambda: reported_cert() == new.certificate_id), 15)
            # Telemetry keeps flowing, gapless across the rotation and the restart.
            await eventually(lambda: max(recorder.received(THING)) > sent_before + 3, 20)
            top = max(recorder.received(THING))
            assert recorder.gaps(THING, upto=top) == []
            link = again.status().uplink.link
            assert link is not None and link.failures == 0
        finally:
            again.request_stop()
            await asyncio.wait_for(task2, 15)

    try:
        asyncio.run(scenario())
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _status_cert(status: dict[str, Any]) -> str | None:
    cert = status.get("cert")
    return cert.get("certificate_id") if isinstance(cert, dict) else None


def test_a_timed_out_rotation_never_switches_the_identity(fleet_emulator):
    """The rotation runs in a thread a timeout cannot stop. Here its proof of the new pair is held
    until IoT Core shows the job FAILED (timed out); the thread then proves the pair and reaches
    the switch, which must not happen: the old identity stays, the new files go."""
    emu, _recorder = fleet_emulator
    admin = Admin(emu.state_dir)
    root = Path(tempfile.mkdtemp(prefix="rto-"))
    state = root / "state"
    # A long reconnect delay: the late proof (same client id) takes the agent's session over and
    # must not be taken over back before it is done.
    path = _write_config(root / "agent.toml", emu, state, reconnect_ms=5000,
                         remote='action_timeouts_s = { "rotate-certificate" = 6.0 }')
    job_id = f"rot-{uuid.uuid4().hex[:10]}"
    finished = threading.Event()
    reached_proof: list[str] = []

    def job_failed() -> bool:
        return bool(admin.job_describe(job_id)["executions"][0]["status"] == "FAILED")

    def late_rotation(*args: Any, before_verify: Any, **kw: Any) -> Any:
        def pause_then_wait_for_failed(candidate: Any) -> None:
            before_verify(candidate)
            reached_proof.append(candidate.certificate_id)
            eventually_sync(job_failed, 30, 0.2)  # in the rotation's thread: the loop goes on
        try:
            return rotate_certificate(*args, before_verify=pause_then_wait_for_failed, **kw)
        finally:
            finished.set()

    async def scenario() -> None:
        conf = await asyncio.to_thread(load_config, path)
        old = ident_mod.load(state)
        assert old is not None
        agent = Agent(conf, path, action_env=ActionEnv(rotate=late_rotation))
        async with running(agent):
            await eventually(lambda: agent.conn is not None and agent.conn.connected.is_set(), 20)
            await asyncio.to_thread(admin.job_create, {"action": "rotate-certificate"}, [THING], job_id)
            assert await asyncio.to_thread(finished.wait, 60)
            ex = (await asyncio.to_thread(admin.job_describe, job_id))["executions"][0]
            assert ex["status"] == "FAILED" and "timed out" in ex["statusDetails"]["reason"], ex
            assert reached_proof, "the rotation ended before the proof: nothing was tested"
        assert ident_mod.load(state) == old
        assert old.cert_file.exists() and old.key_file.exists()
        names = {p.name for p in old.cert_file.parent.iterdir()}
        assert not any(reached_proof[0] in n for n in names), names
        assert "rotation.json" not in names

    try:
        asyncio.run(scenario())
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
