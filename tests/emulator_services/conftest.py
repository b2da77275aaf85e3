"""One running emulator (broker + Shadow/Jobs services) per test module, and AWS's own V2 service
clients on the real awscrt MQTT5 client for a fresh thing per test, so tests share the broker but
never each other's state.

``services_emulator`` is the plain broker (ACL file) unless a test parametrises it indirectly with
``"fleet"``: then the broker runs the authz plugin (``Emulator(fleet_provisioning=True)``, as
``emulator serve`` does) and each test's thing is registered with the device policy."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from awscrt import mqtt_request_response
from awsiot import iotjobs, iotshadow

from emulator import Emulator
from emulator.admin import Admin
from emulator.fleet_setup import DEVICE_POLICY
from emulator.pki import cert_id
from emulator.services.device_services import DeviceServices
from emulator.services.jobs import JobsSettings
from tests.mqtt_client import MqttClient


@dataclass
class Device:
    thing: str
    mqtt: MqttClient
    shadow: iotshadow.IotShadowClientV2
    jobs: iotjobs.IotJobsClientV2


FLAVOURS = ("plain", "fleet")


@pytest.fixture(scope="module")
def services_emulator(request, tmp_path_factory) -> Iterator[Emulator]:
    flavour = getattr(request, "param", "plain")
    assert flavour in FLAVOURS, flavour
    # Fast step timers for the timeout tests: one "minute" lasts 0.05 s in this emulator.
    emu = Emulator(
        tmp_path_factory.mktemp(f"svc-{flavour}") / "emulator",
        components=[DeviceServices(jobs_settings=JobsSettings(seconds_per_minute=0.05))],
        fleet_provisioning=flavour == "fleet",
    )
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def admin(services_emulator) -> Admin:
    return Admin(services_emulator.state_dir)


def rr_options() -> mqtt_request_response.ClientOptions:
    return mqtt_request_response.ClientOptions(
        max_request_response_subscriptions=4, max_streaming_subscriptions=4, operation_timeout_in_seconds=10
    )


def register_device(emu: Emulator, thing: str, cert_pem: str) -> None:
    """What provisioning would have done: an ACTIVE certificate with the device policy, attached
    to ``thing``. Only the authz plugin consults the registry; the ACL file knows the CN."""
    if emu.fleet is None:
        return
    cid = cert_id(cert_pem)
    emu.fleet.registry.add_certificate(cid, cert_pem, "ACTIVE", policies=[DEVICE_POLICY])
    emu.fleet.registry.put_thing(thing, {"site": "site-1"}, principals=[cid])


@pytest.fixture
def device(services_emulator) -> Iterator[Device]:
    thing = f"t-{uuid.uuid4().hex[:10]}"
    cert, key = services_emulator.issue_identity(thing)
    register_device(services_emulator, thing, cert.read_text())
    info = services_emulator.info
    client = MqttClient(info.port, info.ca_file, cert, key, client_id=thing)
    client.connect()
    try:
        yield Device(
            thing,
            client,
            iotshadow.IotShadowClientV2(client.client, rr_options()),
            iotjobs.IotJobsClientV2(client.client, rr_options()),
        )
    finally:
        client.close()
