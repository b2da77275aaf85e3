"""Issue 10 item 1 over the wire: AWS's IotIdentityClientV2 against ``methane-agent emulator serve
--serial-allowlist FILE``, which runs the project's pre-provisioning hook (cloud/preprovision).

A gateway that holds its own certificate, or anyone holding the fleet's shared claim key, tries to
register another gateway's serial and so attach a certificate of their own to its thing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from awscrt import mqtt5
from awsiot import iotidentity
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from emulator.registry import Registry
from emulator.state import EmulatorInfo
from tests.emulator_provisioning.conftest import Device, rejected

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = "methane-fleet"
DELIVERED = (mqtt5.PubackReasonCode.SUCCESS, mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``emulator serve`` in a child process. Each test uses serials of its own (the module shares
    one emulator, and xdist may run the tests in any order or split them)."""
    base = tmp_path_factory.mktemp("takeover")
    allowlist = base / "serials.csv"
    allowlist.write_text("serial,site\nA1,\nB2,south\nC5,\nD6,\nN3,\n")
    state = base / "emu"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "emulator", "serve", "--state-dir", str(state),
         "--serial-allowlist", str(allowlist)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("emulator ready"), line + proc.stderr.read()
        info = EmulatorInfo.load(state)
        yield SimpleNamespace(info=info, registry=Registry(state / "registry"), proc=proc)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def connect(served, devices):
    def make(client_id=None, cert=None, key=None, cert_pem=None, key_pem=None) -> Device:
        d = Device(served, cert, key, client_id,
                   cert_bytes=None if cert_pem is None else cert_pem.encode(),
                   key_bytes=None if key_pem is None else key_pem.encode())
        devices.append(d)
        assert d.connect(), f"{client_id or cert} did not connect"
        return d

    return make


def new_csr() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return csr, pem


def register(dev: Device, params: dict[str, str]):
    """CreateCertificateFromCsr then RegisterThing over ``dev``'s own connection; returns
    (certificate response, key PEM, RegisterThing future)."""
    ident = dev.identity()
    csr, key_pem = new_csr()
    cert = ident.create_certificate_from_csr(
        iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request=csr)).result(20)
    fut = ident.register_thing(iotidentity.RegisterThingRequest(
        template_name=TEMPLATE, certificate_ownership_token=cert.certificate_ownership_token, parameters=params))
    return cert, key_pem, fut


def onboard(served, connect, serial: str, site: str = "north"):
    """A fresh gateway onboarding with the claim certificate; returns its connected Device."""
    claim = connect(cert=served.info.claim_cert_file, key=served.info.claim_key_file)
    cert, key_pem, fut = register(claim, {"SerialNumber": serial, "SiteId": site})
    reg = fut.result(20)
    claim.stop()
    dev = connect(client_id=reg.thing_name, cert_pem=cert.certificate_pem, key_pem=key_pem)
    return dev, cert.certificate_id, reg


def snapshot(registry: Registry, thing: str):
    t = registry.thing(thing)
    assert t is not None
    return t.principals, {c: registry.certificate(c).status for c in t.principals}, t.attributes


def test_foreign_device_cannot_register_another_gateways_serial(served, connect):
    attacker, _, _ = onboard(served, connect, "A1")
    _victim, victim_cert, reg_b = onboard(served, connect, "B2", site="north")
    assert reg_b.device_configuration["siteId"] == "south"  # the allowlist pins B2's site
    before = snapshot(served.registry, "methane-B2")

    cert, key_pem, fut = register(attacker, {"SerialNumber": "B2", "SiteId": "south"})
    err = rejected(fut)
    assert (err.status_code, err.error_code) == (403, "AccessDenied")
    assert snapshot(served.registry, "methane-B2") == before  # the victim's certificates unchanged
    assert served.registry.thing("methane-B2").principals == (victim_cert,)
    assert served.registry.certificate(cert.certificate_id).status == "PENDING_ACTIVATION"
    # The attacker's new certificate is worth nothing: it cannot connect as the victim.
    probe = Device(served, None, None, "methane-B2", cert_bytes=cert.certificate_pem.encode(),
                   key_bytes=key_pem.encode())
    try:
        assert probe.connect() is False
    finally:
        probe.stop()
    # Nor can a device create a thing for a serial that is allowlisted but not yet onboarded.
    err = rejected(register(attacker, {"SerialNumber": "D6"})[2])
    assert (err.status_code, err.error_code) == (403, "AccessDenied")
    assert served.registry.thing("methane-D6") is None


def test_claim_certificate_cannot_register_an_existing_serial(served, connect):
    onboard(served, connect, "C5")
    before = snapshot(served.registry, "methane-C5")
    claim = connect(cert=served.info.claim_cert_file, key=served.info.claim_key_file)
    err = rejected(register(claim, {"SerialNumber": "C5"})[2])
    assert (err.status_code, err.error_code) == (403, "AccessDenied")
    assert snapshot(served.registry, "methane-C5") == before
    # And a serial that is not on the allowlist cannot onboard at all.
    err = rejected(register(claim, {"SerialNumber": "Z9"})[2])
    assert (err.status_code, err.error_code) == (403, "AccessDenied")
    assert served.registry.thing("methane-Z9") is None


def test_device_rotates_its_own_certificate_but_not_its_site(served, connect):
    dev, old_cert, reg = onboard(served, connect, "N3", site="east")
    assert reg.device_configuration["siteId"] == "east"

    cert, key_pem, fut = register(dev, {"SerialNumber": "N3", "SiteId": "west"})  # asks to move
    reg2 = fut.result(20)
    assert reg2.thing_name == "methane-N3"
    assert reg2.device_configuration["siteId"] == "east"  # the hook kept the recorded site
    t = served.registry.thing("methane-N3")
    assert set(t.principals) == {old_cert, cert.certificate_id} and t.attributes["site"] == "east"
    assert served.registry.certificate(cert.certificate_id).status == "ACTIVE"
    dev.stop()
    rotated = connect(client_id="methane-N3", cert_pem=cert.certificate_pem, key_pem=key_pem)
    assert rotated.publish("dt/methane/east/methane-N3/telemetry").reason_code in DELIVERED


def test_serve_refuses_a_bad_allowlist_file(tmp_path):
    bad = tmp_path / "serials.json"
    bad.write_text(json.dumps({"A1": True}))
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "emulator", "serve", "--state-dir", str(tmp_path / "st"),
         "--serial-allowlist", str(bad)],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60,
    )
    assert proc.returncode == 2
    assert "--serial-allowlist" in proc.stderr and "JSON array" in proc.stderr
