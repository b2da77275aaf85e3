"""The provisioning flow against the local emulator: real mosquitto with mutual TLS and the authz
plugin, the emulator's fleet provisioning service, the real awscrt client and awsiotsdk's
IotIdentityClientV2."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from provisioning import identity, keys
from provisioning.flow import (
    STATE_FILE,
    TOKEN_MAX_AGE_S,
    Provisioner,
    RegistrationRejected,
    VerificationFailed,
    provision,
)
from provisioning.session import ConnectFailed, MqttSession
from tests.provisioning.conftest import THING, fingerprint, make_settings, start_emulator

ROOT = Path(__file__).resolve().parents[2]


def id_dir(s) -> Path:
    return identity.identity_dir(s.state_dir)


def state_of(s) -> dict:
    return json.loads((id_dir(s) / STATE_FILE).read_text())


def assert_clean_identity(s, ident: identity.Identity) -> None:
    """One key and one certificate, matching each other and identity.json, all 0600."""
    names = sorted(p.name for p in id_dir(s).iterdir() if p.suffix == ".pem")
    assert names == sorted([ident.cert_file.name, ident.key_file.name])
    cert = keys.load_cert(ident.cert_file)
    assert keys.matches(keys.load_key(ident.key_file), cert)
    assert keys.certificate_id(cert) == ident.certificate_id
    for p in [*ident.files(), id_dir(s) / "identity.json", id_dir(s) / STATE_FILE]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    identity.check_permissions([*ident.files(), id_dir(s) / "identity.json"])
    assert not [p for p in id_dir(s).iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("method, key_type", [("csr", "ec-p256"), ("csr", "rsa-2048"), ("create-keys", "ec-p256")])
def test_happy_path(fleet, settings, method, key_type):
    s = settings(method=method, key_type=key_type)
    claim_before = fingerprint(s.claim_cert_file, s.claim_key_file)
    out = provision(s)
    assert not out.already_provisioned
    assert out.steps[-1] == "verified" and "thing-registered" in out.steps
    ident = out.identity
    assert ident.thing_name == THING
    assert ident.device_configuration["siteId"] == "site-7"
    assert ident.device_configuration["telemetryTopic"] == f"dt/methane/site-7/{THING}/telemetry"
    assert ident.endpoint == "localhost" and ident.template_name == "methane-fleet"
    assert identity.load(s.state_dir) == ident
    assert_clean_identity(s, ident)
    assert state_of(s)["step"] == "verified" and state_of(s)["ownership_token"] is None
    if method == "csr":
        want = rsa.RSAPublicKey if key_type == "rsa-2048" else ec.EllipticCurvePublicKey
        assert isinstance(keys.load_cert(ident.cert_file).public_key(), want)
    # the emulator's registry agrees: thing exists with this certificate, ACTIVE
    reg = fleet.fleet.registry
    cert = reg.certificate(ident.certificate_id)
    assert cert is not None and cert.status == "ACTIVE" and THING in cert.things
    assert fingerprint(s.claim_cert_file, s.claim_key_file) == claim_before
    # the new identity works for the device's own topics
    with MqttSession(s.endpoint, ident.cert_file, ident.key_file, THING) as sess:
        sess.publish(f"dt/methane/site-7/{THING}/telemetry", b"x")


def test_second_run_does_nothing_even_offline_and_force_reprovisions(fleet, settings):
    s = settings()
    first = provision(s).identity
    fleet.stop()  # no broker: an already provisioned device must not need the network
    again = provision(s)
    assert again.already_provisioned and again.identity == first and again.steps == []
    fleet.start()
    s2 = make_settings(fleet, s.state_dir, s.hardware_root)  # same state, emulator's new port
    # The claim certificate may not take over a thing that exists (the pre-provisioning hook):
    # re-enrolment needs an operator to delete the thing first. The old identity stays in force.
    with pytest.raises(RegistrationRejected, match="AccessDenied"):
        provision(s2, force=True)
    assert identity.load(s.state_dir) == first and first.key_file.exists()
    fleet.fleet.registry.delete_thing(first.thing_name)
    forced = provision(s2, force=True)
    assert not forced.already_provisioned
    new = forced.identity
    assert new.thing_name == first.thing_name and new.certificate_id != first.certificate_id
    assert not first.key_file.exists() and not first.cert_file.exists()  # old key material removed
    assert_clean_identity(s2, new)


def test_expired_ownership_token_means_new_certificate(fleet, settings):
    s = settings()
    stop_at = {"certificate-created"}

    class Stop(Exception):
        pass

    def checkpoint(name):
        if name in stop_at:
            raise Stop(name)

    with pytest.raises(Stop):
        Provisioner(s, checkpoint=checkpoint).run()
    st = state_of(s)
    assert st["step"] == "certificate-created"
    old_cert = st["certificate_id"]
    stop_at.clear()
    later = time.time() + TOKEN_MAX_AGE_S + 60  # resumed more than 55 minutes later
    out = Provisioner(s, clock=lambda: later).run()
    assert out.identity.certificate_id != old_cert
    assert "certificate-created" in out.steps
    assert out.identity.key_file.name == st["key_file"]  # the key made on the device is reused
    assert_clean_identity(s, out.identity)
    assert fleet.fleet.registry.certificate(old_cert).status == "PENDING_ACTIVATION"


def test_token_refused_by_service_recreates_certificate(fleet, settings):
    """A token the service no longer accepts (it restarted, or its clock says expired) is not a
    stuck device: the flow creates a new certificate once and registers with that."""
    s = settings()

    class Stop(Exception):
        pass

    def stop_after_cert(name):
        if name == "certificate-created":
            raise Stop

    with pytest.raises(Stop):
        Provisioner(s, checkpoint=stop_after_cert).run()
    st = state_of(s)
    st["ownership_token"] = "bogus-token-not-issued"
    (id_dir(s) / STATE_FILE).write_text(json.dumps(st))
    out = provision(s)
    assert out.identity.certificate_id != st["certificate_id"]
    assert_clean_identity(s, out.identity)


def test_rejected_parameters_name_template_and_leave_claim_untouched(fleet, settings):
    s = settings(parameters={"SiteId": "bad site!"})
    claim_before = fingerprint(s.claim_cert_file, s.claim_key_file)
    with pytest.raises(RegistrationRejected) as e:
        provision(s)
    msg = str(e.value)
    assert "'methane-fleet'" in msg and "SiteId='bad site!'" in msg and "SerialNumber='10000000c0ffee42'" in msg
    # The pre-provisioning hook refuses a SiteId that is not one topic level before the template runs.
    assert e.value.cause.status_code == 403 and not e.value.transient
    assert fingerprint(s.claim_cert_file, s.claim_key_file) == claim_before
    assert identity.load(s.state_dir) is None
    # after the operator fixes the parameters, the same state resumes (same key, token still fresh)
    key_before = state_of(s)["key_file"]
    ok = provision(settings(parameters={"SiteId": "site-7"}))
    assert ok.identity.key_file.name == key_before


def test_template_the_claim_policy_does_not_allow(fleet, settings):
    s = settings(template_name="someone-elses")
    with pytest.raises(RegistrationRejected) as e:
        provision(s)
    assert "'someone-elses'" in str(e.value) and "NotAuthorized" in str(e.value)
    assert not e.value.transient


def test_pre_provisioning_hook_denies(tmp_path, hardware_root):
    seen = []

    def hook(event):
        seen.append(event)
        return {"allowProvisioning": False}

    emu = start_emulator(tmp_path / "emu", provisioning_hook=hook)
    try:
        s = make_settings(emu, tmp_path / "state", hardware_root)
        with pytest.raises(RegistrationRejected) as e:
            provision(s)
    finally:
        emu.stop()
    assert e.value.cause.status_code == 403 and "AccessDenied" in str(e.value)
    assert seen and seen[0]["parameters"]["SerialNumber"] == "10000000c0ffee42"
    assert identity.load(s.state_dir) is None


def test_claim_key_readable_by_others_is_refused(fleet, settings, tmp_path):
    s = settings()
    loose = tmp_path / "claim.key"
    loose.write_bytes(s.claim_key_file.read_bytes())
    os.chmod(loose, 0o644)
    from dataclasses import replace

    with pytest.raises(identity.PermissionProblem, match=r"chmod 600"):
        provision(replace(s, claim_key_file=loose))


def test_broker_down_is_transient_and_bounded(fleet, settings):
    s = settings(max_connect_attempts=2)
    fleet.broker.stop()
    t0 = time.monotonic()
    with pytest.raises(ConnectFailed) as e:
        provision(s)
    assert e.value.transient and not e.value.refused and e.value.attempts == 2
    assert time.monotonic() - t0 < 30


def test_revoked_identity_fails_verification_clearly_without_storm(fleet, settings):
    s = settings()
    ident = provision(s).identity
    fleet.fleet.registry.revoke(ident.certificate_id)
    from provisioning.flow import verify_identity

    t0 = time.monotonic()
    with pytest.raises(ConnectFailed) as e:
        verify_identity(ident, s.endpoint, max_attempts=3)
    elapsed = time.monotonic() - t0
    assert e.value.refused and not e.value.transient
    assert e.value.attempts == 3  # bounded: exactly the attempts allowed, then stop
    assert "refused certificate" in str(e.value)
    assert elapsed < 30


KILL_POINTS = [
    "new", "key-created", "certificate-received", "certificate-created", "registration-received",
    "thing-registered", "identity-written", "verified",
]


@pytest.mark.parametrize("kill_at", KILL_POINTS)
@pytest.mark.parametrize("method", ["csr", "create-keys"])
def test_sigkill_at_each_step_then_resume(fleet, settings, kill_at, method):
    if method == "create-keys" and kill_at == "key-created":
        pytest.skip("create-keys makes no key on the device")
    s = settings(method=method)
    proc = subprocess.run(
        [sys.executable, "-m", "tests.provisioning.flow_child", str(fleet.state_dir), str(s.state_dir),
         str(s.hardware_root), method, kill_at],
        cwd=ROOT, capture_output=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    out = provision(s)
    assert_clean_identity(s, out.identity)
    assert out.identity.thing_name == THING
    assert out.already_provisioned == (kill_at == "verified")
    cert = fleet.fleet.registry.certificate(out.identity.certificate_id)
    assert cert is not None and cert.status == "ACTIVE"
    # One live identity per thing: a registration whose answer the crash lost is found again,
    # not repeated with a second certificate (the hook would refuse that anyway).
    assert fleet.fleet.registry.thing(THING).principals == (out.identity.certificate_id,)
    x509.load_pem_x509_certificate(out.identity.cert_file.read_bytes())


def test_identity_written_but_unverified_is_verified_on_next_run(fleet, settings):
    s = settings()

    class Stop(Exception):
        pass

    def stop(name):
        if name == "identity-written":
            raise Stop

    with pytest.raises(Stop):
        Provisioner(s, checkpoint=stop).run()
    fleet.broker.stop()
    with pytest.raises(VerificationFailed) as e:
        Provisioner(make_settings(fleet, s.state_dir, s.hardware_root, max_connect_attempts=1)).run()
    assert e.value.transient
    fleet.broker.start()
    out = provision(s)
    assert out.steps == ["verified"]
