"""Rotation over the device's own connection, rollback, expiry status, the agent's start-up
identity step and the CLI, against the local emulator."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent import config as cfg
from agent.identity_setup import IdentitySetupError, prepare_identity, run_provisioning
from provisioning import identity, keys
from provisioning.expiry import expiry_status
from provisioning.flow import provision
from provisioning.rotation import ROTATION_FILE, RotationFailed, discard_pending, rotate_certificate
from provisioning.session import IdentityClient, MqttSession
from tests.eventually import eventually
from tests.provisioning.conftest import THING, make_settings

ROOT = Path(__file__).resolve().parents[2]


def pem_names(state_dir: Path) -> list[str]:
    return sorted(p.name for p in identity.identity_dir(state_dir).glob("*.pem"))


def test_rotation_success_switches_identity_and_removes_old_pair(fleet, settings):
    s = settings()
    old = provision(s).identity
    res = rotate_certificate(s.state_dir, s.endpoint, max_connect_attempts=3, request_timeout_s=10)
    new = identity.load(s.state_dir)
    assert new is not None
    assert res.thing_name == THING == new.thing_name
    assert res.old_certificate_id == old.certificate_id and res.new_certificate_id == new.certificate_id
    assert new.certificate_id != old.certificate_id and new.key_file != old.key_file
    assert pem_names(s.state_dir) == sorted([new.cert_file.name, new.key_file.name])
    assert not (identity.identity_dir(s.state_dir) / ROTATION_FILE).exists()
    assert keys.matches(keys.load_key(new.key_file), keys.load_cert(new.cert_file))
    reg = fleet.fleet.registry
    assert reg.certificate(new.certificate_id).status == "ACTIVE"
    assert THING in reg.certificate(new.certificate_id).things
    with MqttSession(s.endpoint, new.cert_file, new.key_file, THING) as sess:
        sess.publish(f"$aws/things/{THING}/shadow/get", b"{}")


def test_rotation_over_an_existing_connection(fleet, settings):
    """The function API a rotate-certificate job uses: the agent hands its live client in."""
    s = settings()
    old = provision(s).identity
    with MqttSession(s.endpoint, old.cert_file, old.key_file, THING) as live:
        # As the agent's job does: the live session (same client id) steps aside while the new
        # certificate is proven, or the two connections take each other over.
        res = rotate_certificate(s.state_dir, s.endpoint, identity_client=IdentityClient(live.client, 10),
                                 before_verify=lambda _candidate: live.close(),
                                 max_connect_attempts=3, request_timeout_s=10)
    assert identity.load(s.state_dir).certificate_id == res.new_certificate_id


def test_rotation_rolls_back_when_new_certificate_fails_verification(fleet, settings):
    s = settings()
    old = provision(s).identity
    before = pem_names(s.state_dir)
    revoked = []

    def revoke_new(candidate):
        revoked.append(candidate.certificate_id)
        fleet.fleet.registry.revoke(candidate.certificate_id)

    with pytest.raises(RotationFailed) as e:
        rotate_certificate(s.state_dir, s.endpoint, before_verify=revoke_new, max_connect_attempts=2,
                           request_timeout_s=10)
    assert e.value.rolled_back and "refused certificate" in str(e.value) and "still using the old" in str(e.value)
    assert identity.load(s.state_dir) == old
    assert pem_names(s.state_dir) == before
    assert not (identity.identity_dir(s.state_dir) / ROTATION_FILE).exists()
    assert revoked and fleet.fleet.registry.certificate(revoked[0]).status == "REVOKED"
    with MqttSession(s.endpoint, old.cert_file, old.key_file, THING) as sess:  # old one still works
        sess.publish(f"$aws/things/{THING}/shadow/get", b"{}")


def test_rotation_with_revoked_current_certificate_is_clear_and_bounded(fleet, settings):
    s = settings()
    old = provision(s).identity
    fleet.fleet.registry.revoke(old.certificate_id)
    with pytest.raises(RotationFailed) as e:
        rotate_certificate(s.state_dir, s.endpoint, max_connect_attempts=2, request_timeout_s=10)
    assert "refused certificate" in str(e.value) and "gave up after 2 attempt" in str(e.value)
    assert not e.value.transient
    assert identity.load(s.state_dir) == old
    assert len(pem_names(s.state_dir)) == 2


def test_interrupted_rotation_is_discarded(fleet, settings):
    s = settings()
    old = provision(s).identity
    d = identity.identity_dir(s.state_dir)
    stray = keys.write_key(d / "key-stray.pem", keys.generate())
    (d / ROTATION_FILE).write_text(json.dumps({"key_file": stray.name, "cert_file": old.cert_file.name}))
    assert discard_pending(s.state_dir) == ["key-stray.pem"]
    assert identity.load(s.state_dir) == old and old.cert_file.exists()  # in-use files never removed


def test_rotation_without_identity(tmp_path, fleet, settings):
    s = settings()
    with pytest.raises(RotationFailed, match="no identity"):
        rotate_certificate(s.state_dir, s.endpoint)


def test_expiry_status(fleet, settings):
    ident = provision(settings()).identity
    not_after = keys.load_cert(ident.cert_file).not_valid_after_utc
    fine = expiry_status(ident, now=not_after - dt.timedelta(days=100))
    assert not fine.warning and not fine.expired and "valid until" in fine.message
    soon = expiry_status(ident, now=not_after - dt.timedelta(days=10))
    assert soon.warning and not soon.expired and "expires in 10 days" in soon.message
    assert soon.as_dict()["days_left"] == 10.0
    gone = expiry_status(ident, now=not_after + dt.timedelta(hours=1))
    assert gone.expired and "EXPIRED" in gone.message
    # The date comes from identity.json, recorded with the certificate: no certificate parser needed
    # at run time; an identity written before the field existed still gets it from the file.
    assert identity.load(settings().state_dir).not_after == not_after.isoformat()
    legacy = dataclasses.replace(ident, not_after="")
    assert expiry_status(legacy, now=not_after).not_after == not_after


def test_the_daemon_does_not_load_what_it_does_not_run(fleet, settings, tmp_path):
    """What ``methane-agent run`` imports for a provisioned gateway, its start-up identity step and
    its status (certificate expiry included): no emulator, no provisioning flow, no certificate
    parser, no unused payload encoder (issue 11: the footprint)."""
    ident = provision(settings()).identity
    code = f"""
import sys, json, logging
from agent import cli
cli.build_parser(["run", "--config", "x"])
import agent.runtime
from agent import config as cfg
from agent.identity_setup import prepare_identity
from agent.remote.shadow.status_source import cert_expiry
from agent.payload import codec
conf = cfg.validate({{"state_dir": {str(settings().state_dir)!r}, "device": {{"site_id": "site-7"}}}})
out = prepare_identity(conf)
assert out.device.thing_name == {ident.thing_name!r}
assert cert_expiry(conf.state_dir)["days_left"] > 300
codec.encode
print(json.dumps(sorted(sys.modules)))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.splitlines()[-1])
    for heavy in ("emulator", "cloud", "cryptography", "provisioning.flow", "provisioning.keys",
                  "provisioning.rotation", "tenacity", "agent.payload.jsonfmt"):
        assert heavy not in loaded, heavy


# --- agent start-up ---------------------------------------------------------------------------------
def agent_conf(fleet, tmp_path: Path, hardware_root: Path, **prov) -> cfg.AgentConfig:
    info = fleet.info
    return cfg.validate({
        "state_dir": str(tmp_path / "state"),
        "device": {"site_id": "site-7"},
        "connection": {"endpoint": info.endpoint, "port": info.port, "ca_file": str(info.ca_file)},
        "provisioning": {"enabled": True, "claim_cert_file": str(info.claim_cert_file),
                         "claim_key_file": str(info.claim_key_file), "template_name": info.template_name,
                         "serial_source": "cpuinfo", **prov},
    })


def test_prepare_identity_provisions_and_fills_config(fleet, tmp_path, hardware_root):
    conf = agent_conf(fleet, tmp_path, hardware_root)
    beats: list[str] = []
    out = prepare_identity(conf, heartbeat=beats.append, hardware_root=hardware_root)
    ident = identity.load(conf.state_dir)
    assert out.device.thing_name == THING == ident.thing_name
    assert out.connection.cert_file == ident.cert_file and out.connection.key_file == ident.key_file
    assert ident.device_configuration["siteId"] == "site-7"  # SiteId defaulted from device.site_id
    # second start: no network needed, same answer
    fleet.stop()
    assert prepare_identity(conf).connection.cert_file == ident.cert_file


def test_claim_key_in_the_state_claim_dir_is_deleted_once_provisioned(fleet, tmp_path, hardware_root, caplog):
    info = fleet.info
    claim_dir = tmp_path / "state" / "claim"
    claim_dir.mkdir(parents=True)
    for src in (info.claim_cert_file, info.claim_key_file):
        (claim_dir / src.name).write_bytes(src.read_bytes())
        os.chmod(claim_dir / src.name, 0o600)
    conf = agent_conf(fleet, tmp_path, hardware_root, claim_cert_file=str(claim_dir / info.claim_cert_file.name),
                      claim_key_file=str(claim_dir / info.claim_key_file.name))
    out = prepare_identity(conf, hardware_root=hardware_root)
    assert out.device.thing_name == THING
    assert list(claim_dir.iterdir()) == []  # the fleet's secret is gone from this gateway
    assert prepare_identity(conf, hardware_root=hardware_root).device.thing_name == THING  # later starts do not need it

    # A claim key kept anywhere else is left alone, with a warning naming it.
    other = agent_conf(fleet, tmp_path / "b", hardware_root)
    before = info.claim_key_file.read_bytes()
    caplog.set_level("WARNING", logger="agent.identity_setup")
    from agent.identity_setup import retire_claim_key

    retire_claim_key(other)
    assert info.claim_key_file.read_bytes() == before
    assert any("claim key is still readable" in r.getMessage() for r in caplog.records)


def test_unset_site_id_follows_the_site_the_thing_was_registered_with(tmp_path, hardware_root):
    from cloud.preprovision.allowlist import FileAllowlist
    from tests.provisioning.conftest import SERIAL, start_emulator

    allow = tmp_path / "serials.json"
    allow.write_text(json.dumps([{"serial": SERIAL, "site": "pinned-9"}]))
    emu = start_emulator(tmp_path / "emu", serial_allowlist=FileAllowlist(allow))
    try:
        conf = agent_conf(emu, tmp_path, hardware_root)
        data = conf.model_dump(mode="json")
        del data["device"]["site_id"]  # not set in the file
        conf = cfg.validate(data)
        out = prepare_identity(conf, hardware_root=hardware_root)
        assert out.device.site_id == "pinned-9"
        # An explicit site_id still wins (with a warning): the operator's file is the last word.
        explicit = agent_conf(emu, tmp_path, hardware_root)
        assert prepare_identity(explicit, hardware_root=hardware_root).device.site_id == "site-7"
    finally:
        emu.stop()


def test_prepare_identity_refuses_loose_key_with_fix(fleet, tmp_path, hardware_root):
    s = make_settings(fleet, tmp_path / "state", hardware_root)
    ident = provision(s).identity
    conf = agent_conf(fleet, tmp_path, hardware_root, enabled=False)
    os.chmod(ident.key_file, 0o644)
    with pytest.raises(IdentitySetupError) as e:
        prepare_identity(conf)
    msg = str(e.value)
    assert "refusing to start" in msg and f"chmod 600 {ident.key_file}" in msg and "0644" in msg
    os.chmod(ident.key_file, 0o400)
    assert prepare_identity(conf).device.thing_name == THING


def test_explicit_config_wins_but_claim_cert_is_refused(fleet, tmp_path, hardware_root):
    s = make_settings(fleet, tmp_path / "state", hardware_root)
    provision(s)
    conf = agent_conf(fleet, tmp_path, hardware_root, enabled=False)
    pinned = conf.model_copy(update={"device": conf.device.model_copy(update={"thing_name": "pinned-name"})})
    assert prepare_identity(pinned).device.thing_name == "pinned-name"
    bad = conf.model_copy(update={"connection": conf.connection.model_copy(
        update={"cert_file": s.claim_cert_file, "key_file": s.claim_key_file})})
    with pytest.raises(IdentitySetupError, match="claim certificate"):
        prepare_identity(bad)


def test_run_provisioning_retries_while_broker_is_down(fleet, tmp_path, hardware_root):
    s = make_settings(fleet, tmp_path / "state", hardware_root, max_connect_attempts=1)
    fleet.broker.stop()
    beats: list[str] = []
    result: dict = {}

    def runner():
        try:
            result["identity"] = run_provisioning(s, heartbeat=beats.append, backoff_min_s=0.2, backoff_max_s=0.5)
        except IdentitySetupError as exc:
            result["error"] = exc

    t = threading.Thread(target=runner)
    t.start()
    eventually(lambda: any("retry" in b for b in beats), 60, what=lambda: beats)
    fleet.broker.start()  # the link comes back
    t.join(90)
    assert not t.is_alive()
    assert "identity" in result, result
    assert result["identity"].thing_name == THING


def test_run_provisioning_gives_up_at_once_on_a_refusal(fleet, tmp_path, hardware_root):
    s = make_settings(fleet, tmp_path / "state", hardware_root, parameters={"SiteId": "bad site!"})
    with pytest.raises(IdentitySetupError, match="methane-fleet"):
        run_provisioning(s, backoff_min_s=0.1, backoff_max_s=0.2, max_attempts=5)


# --- CLI --------------------------------------------------------------------------------------------
def write_toml(path: Path, fleet, state: Path, serial_file: Path) -> Path:
    info = fleet.info
    path.write_text(f"""
state_dir = "{state}"
[device]
site_id = "site-7"
[connection]
endpoint = "{info.endpoint}"
port = {info.port}
ca_file = "{info.ca_file}"
[provisioning]
enabled = true
claim_cert_file = "{info.claim_cert_file}"
claim_key_file = "{info.claim_key_file}"
template_name = "{info.template_name}"
serial_source = "file:{serial_file}"
""")
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_cli_provision_then_rotate(fleet, tmp_path):
    serial = tmp_path / "serial"
    serial.write_text("10000000c0ffee42\n")
    conf = write_toml(tmp_path / "agent.toml", fleet, tmp_path / "state", serial)
    r = cli("provision", "--config", str(conf), "--json")
    assert r.returncode == 0, r.stderr
    assert f"provisioned as {THING}" in r.stdout
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["thing_name"] == THING and doc["steps"][-1] == "verified"
    assert "BEGIN" not in r.stdout + r.stderr  # no key material, ever
    r2 = cli("provision", "--config", str(conf))
    assert r2.returncode == 0 and "already provisioned" in r2.stdout
    r3 = cli("rotate-cert", "--config", str(conf))
    assert r3.returncode == 0, r3.stderr
    assert "rotated" in r3.stdout
    assert identity.load(tmp_path / "state").certificate_id != doc["certificate_id"]


def test_cli_provision_rejected_exit_code(fleet, tmp_path):
    serial = tmp_path / "serial"
    serial.write_text("bad serial value\n")
    conf = write_toml(tmp_path / "agent.toml", fleet, tmp_path / "state", serial)
    r = cli("provision", "--config", str(conf))
    assert r.returncode == 3 and "not usable in a thing name" in r.stderr
