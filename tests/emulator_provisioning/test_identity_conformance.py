"""AWS's own IotIdentityClientV2 on awscrt MQTT5 against the emulator's fleet provisioning."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from awscrt import mqtt5
from awsiot import iotidentity
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from emulator import Emulator
from tests.emulator_provisioning.conftest import Device, rejected
from tests.eventually import eventually

TEMPLATE = "methane-fleet"
DELIVERED = (mqtt5.PubackReasonCode.SUCCESS, mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS)


def register(ident, token, params, template=TEMPLATE):
    return ident.register_thing(iotidentity.RegisterThingRequest(
        template_name=template, certificate_ownership_token=token, parameters=params)).result(20)


def provision(claim: Device, serial: str, site: str = "s1"):
    ident = claim.identity()
    keys = ident.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(20)
    reg = register(ident, keys.certificate_ownership_token, {"SerialNumber": serial, "SiteId": site})
    return keys, reg


def test_keys_register_then_device_uses_only_its_topics(fleet_emulator, claim, connect):
    keys, reg = provision(claim, "A1")
    assert len(keys.certificate_id) == 64 and "PRIVATE KEY" in keys.private_key
    assert reg.thing_name == "methane-A1"
    assert reg.device_configuration == {"thingName": "methane-A1", "siteId": "s1",
                                        "telemetryTopic": "dt/methane/s1/methane-A1/telemetry",
                                        "sampleIntervalS": "1"}
    registry = fleet_emulator.fleet.registry
    cert = registry.certificate(keys.certificate_id)
    assert cert.status == "ACTIVE" and cert.things == ("methane-A1",) and cert.policies == ("methane-device",)
    assert registry.thing("methane-A1").attributes == {"site": "s1", "serial": "A1", "model": "generic"}

    dev = connect(None, None, client_id="methane-A1", cert_bytes=keys.certificate_pem.encode(),
                  key_bytes=keys.private_key.encode())
    assert dev.connected.result()
    # mosquitto says "no matching subscribers" (0x10, a success code) where IoT Core says 0x00.
    assert dev.publish("dt/methane/s1/methane-A1/telemetry").reason_code in DELIVERED
    assert dev.publish("dt/methane/s1/gw-0001/telemetry").reason_code == mqtt5.PubackReasonCode.NOT_AUTHORIZED
    assert dev.publish("$aws/things/gw-0001/shadow/get").reason_code == mqtt5.PubackReasonCode.NOT_AUTHORIZED
    assert dev.subscribe("$aws/things/methane-A1/shadow/update/delta") == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
    assert dev.subscribe("$aws/things/gw-0001/shadow/update/delta") == [mqtt5.SubackReasonCode.NOT_AUTHORIZED]
    assert dev.subscribe("#") == [mqtt5.SubackReasonCode.NOT_AUTHORIZED]


def test_new_certificate_must_use_its_thing_name_as_client_id(fleet_emulator, claim, connect):
    keys, _ = provision(claim, "B2")
    dev = connect(None, None, client_id="someone-else", cert_bytes=keys.certificate_pem.encode(),
                  key_bytes=keys.private_key.encode())
    assert dev.connected.result() is False


def test_csr_flow(fleet_emulator, claim, connect):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
           .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    ident = claim.identity()
    resp = ident.create_certificate_from_csr(
        iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request=csr)).result(20)
    assert fleet_emulator.fleet.registry.certificate(resp.certificate_id).status == "PENDING_ACTIVATION"
    reg = register(ident, resp.certificate_ownership_token, {"SerialNumber": "C3"})
    assert reg.device_configuration["siteId"] == "site-1"  # the template's default
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    dev = connect(None, None, client_id="methane-C3", cert_bytes=resp.certificate_pem.encode(), key_bytes=key_pem)
    assert dev.connected.result()


def test_bad_csr_rejected(claim):
    err = rejected(claim.identity().create_certificate_from_csr(
        iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request="not a csr")))
    assert (err.status_code, err.error_code) == (400, "InvalidCSR")


def test_unknown_template_rejected(fleet_emulator, claim):
    # The claim policy allows only its own template, as on IoT Core: allow this one for the test.
    registry = fleet_emulator.fleet.registry
    doc = registry.policy("methane-claim")
    for st in doc["Statement"]:
        if isinstance(st["Resource"], list):
            st["Resource"] = [r.replace("methane-fleet", "*") for r in st["Resource"]]
    registry.put_policy("methane-claim", doc)
    ident = claim.identity()
    keys = ident.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(20)
    err = rejected(ident.register_thing(iotidentity.RegisterThingRequest(
        template_name="no-such-template", certificate_ownership_token=keys.certificate_ownership_token,
        parameters={"SerialNumber": "X"})))
    assert (err.status_code, err.error_code) == (404, "ResourceNotFound")
    assert "no-such-template" in err.error_message


def test_empty_reused_and_expired_tokens(fleet_emulator, claim):
    ident = claim.identity()
    err = rejected(ident.register_thing(iotidentity.RegisterThingRequest(
        template_name=TEMPLATE, certificate_ownership_token="", parameters={"SerialNumber": "E"})))
    assert (err.status_code, err.error_code, err.error_message) == (
        400, "InvalidCertificateOwnershipToken", "Certificate ownership token cannot be empty.")

    keys = ident.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(20)
    register(ident, keys.certificate_ownership_token, {"SerialNumber": "R1"})
    err = rejected(ident.register_thing(iotidentity.RegisterThingRequest(
        template_name=TEMPLATE, certificate_ownership_token=keys.certificate_ownership_token,
        parameters={"SerialNumber": "R1"})))
    assert (err.status_code, err.error_code) == (400, "InvalidCertificateOwnershipToken")
    assert "already been used" in err.error_message

    keys2 = ident.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(20)
    db = sqlite3.connect(fleet_emulator.fleet.registry.state_dir / "registry.db")
    with db:  # an hour and a second later
        db.execute("UPDATE certificates SET token_expires=? WHERE id=?", (time.time() - 1, keys2.certificate_id))
    db.close()
    err = rejected(ident.register_thing(iotidentity.RegisterThingRequest(
        template_name=TEMPLATE, certificate_ownership_token=keys2.certificate_ownership_token,
        parameters={"SerialNumber": "R2"})))
    assert (err.status_code, err.error_code) == (400, "InvalidCertificateOwnershipToken")
    assert "expired" in err.error_message


@pytest.mark.parametrize("params, status, fragment", [
    # The pre-provisioning hook runs before the template and refuses a serial it cannot check.
    ({}, (403, "AccessDenied"), "hook"),
    ({"SerialNumber": "has space"}, (403, "AccessDenied"), "hook"),
    ({"SerialNumber": "A", "Bogus": "1"}, (400, "InvalidParameters"), "unknown parameter 'Bogus'"),
    ({"SerialNumber": "A", "Model": "unknown-model"}, (400, "InvalidParameters"), "Mappings"),
])
def test_bad_parameters_rejected_and_token_still_usable(claim, params, status, fragment):
    ident = claim.identity()
    keys = ident.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(20)
    err = rejected(ident.register_thing(iotidentity.RegisterThingRequest(
        template_name=TEMPLATE, certificate_ownership_token=keys.certificate_ownership_token, parameters=params)))
    assert (err.status_code, err.error_code) == status
    assert fragment in err.error_message
    # The device corrects its request and retries with the same token.
    assert register(ident, keys.certificate_ownership_token, {"SerialNumber": "OK1"}).thing_name == "methane-OK1"


def test_malformed_json_rejected_and_service_keeps_serving(claim):
    topic = f"$aws/provisioning-templates/{TEMPLATE}/provision/json"
    assert claim.subscribe(topic + "/rejected") == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
    claim.publish(topic, b"{not json")
    eventually(lambda: claim.messages, what="no rejection arrived")
    got_topic, payload = claim.messages[0]
    assert got_topic == topic + "/rejected"
    assert json.loads(payload) == {"statusCode": 400, "errorCode": "InvalidPayload", "errorMessage": "Invalid JSON"}
    _keys, reg = provision(claim, "AfterBad")
    assert reg.thing_name == "methane-AfterBad"


def test_claim_certificate_cannot_publish_telemetry_or_touch_things(claim):
    assert claim.publish("dt/methane/s1/gw-0001/telemetry").reason_code == mqtt5.PubackReasonCode.NOT_AUTHORIZED
    assert claim.subscribe("$aws/things/gw-0001/shadow/#") == [mqtt5.SubackReasonCode.NOT_AUTHORIZED]


def test_requesters_do_not_see_each_others_keys(fleet_emulator, claim, connect):
    info = fleet_emulator.info
    other = connect(info.claim_cert_file, info.claim_key_file)
    assert other.subscribe("$aws/certificates/create/json/accepted") == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
    provision(claim, "Private1")
    time.sleep(0.5)  # a leak would arrive within this window; absence cannot be polled
    assert other.messages == []


def test_pending_certificate_refused(fleet_emulator, claim, connect):
    keys = claim.identity().create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(20)
    dev = connect(None, None, client_id="pending-1", cert_bytes=keys.certificate_pem.encode(),
                  key_bytes=keys.private_key.encode())
    assert dev.connected.result() is False


def test_revocation_disconnects_and_refuses_without_restart(fleet_emulator, claim, connect, devices):
    keys, _ = provision(claim, "Rev1")
    pid = fleet_emulator.broker.pid
    dev = connect(None, None, client_id="methane-Rev1", cert_bytes=keys.certificate_pem.encode(),
                  key_bytes=keys.private_key.encode())
    assert dev.connected.result()
    fleet_emulator.fleet.registry.revoke(keys.certificate_id)
    eventually(lambda: dev.disconnects, what="revoked certificate stayed connected")
    again = Device(fleet_emulator, None, None, "methane-Rev1", cert_bytes=keys.certificate_pem.encode(),
                   key_bytes=keys.private_key.encode())
    devices.append(again)
    assert again.connect() is False
    assert fleet_emulator.broker.pid == pid
    # Everyone else is still served.
    assert provision(claim, "Rev2")[1].thing_name == "methane-Rev2"


def test_hook_denies_and_overrides(tmp_path):
    seen = []

    def hook(event):
        seen.append(event)
        if event["parameters"].get("SerialNumber") == "deny-me":
            return {"allowProvisioning": False}
        return {"allowProvisioning": True, "parameterOverrides": {"SiteId": "from-hook"}}

    emu = Emulator(tmp_path / "emu", fleet_provisioning=True, provisioning_hook=hook)
    emu.start()
    claim = Device(emu, emu.info.claim_cert_file, emu.info.claim_key_file)
    try:
        assert claim.connect()
        ident = claim.identity()
        keys = ident.create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest()).result(20)
        err = rejected(ident.register_thing(iotidentity.RegisterThingRequest(
            template_name=TEMPLATE, certificate_ownership_token=keys.certificate_ownership_token,
            parameters={"SerialNumber": "deny-me"})))
        assert (err.status_code, err.error_code) == (403, "AccessDenied")
        reg = register(ident, keys.certificate_ownership_token, {"SerialNumber": "H1", "SiteId": "orig"})
        assert reg.device_configuration["siteId"] == "from-hook"
        assert seen[-1]["clientId"] == claim.client_id
        assert seen[-1]["certificateId"] == keys.certificate_id
        assert len(seen[-1]["claimCertificateId"]) == 64
    finally:
        claim.stop()
        emu.stop()


def test_device_publishes_only_under_its_own_site_and_only_to_the_projects_ingest_rule(fleet_emulator, claim,
                                                                                      connect):
    """The device policy binds the site level to the thing's `site` attribute (a `*` there would span
    `/` and any site) and Basic Ingest to the project's rule `methane_ingest`."""
    keys, _ = provision(claim, "Site1", site="north")
    dev = connect(None, None, client_id="methane-Site1", cert_bytes=keys.certificate_pem.encode(),
                  key_bytes=keys.private_key.encode())
    assert dev.connected.result()
    refused = mqtt5.PubackReasonCode.NOT_AUTHORIZED
    assert dev.publish("dt/methane/north/methane-Site1/telemetry").reason_code in DELIVERED
    assert dev.publish("$aws/rules/methane_ingest/dt/methane/north/methane-Site1/telemetry").reason_code in DELIVERED
    for topic in ("dt/methane/south/methane-Site1/telemetry",
                  "dt/methane/north/x/methane-Site1/telemetry",
                  "$aws/rules/methane_ingest/dt/methane/south/methane-Site1/telemetry",
                  "$aws/rules/someone_elses_rule/dt/methane/north/methane-Site1/telemetry"):
        assert dev.publish(topic).reason_code == refused, topic
    assert dev.subscribe("dt/methane/north/methane-Site1/doctor") == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
    assert dev.subscribe("dt/methane/south/methane-Site1/doctor") == [mqtt5.SubackReasonCode.NOT_AUTHORIZED]
    # The operator moves the thing to another site: the policy follows the attribute at once.
    registry = fleet_emulator.fleet.registry
    registry.put_thing("methane-Site1", {**registry.thing("methane-Site1").attributes, "site": "south"})
    eventually(lambda: dev.publish("dt/methane/south/methane-Site1/telemetry").reason_code in DELIVERED, 10, 0.2,
               what="the new site was never allowed")
    assert dev.publish("dt/methane/north/methane-Site1/telemetry").reason_code == refused
