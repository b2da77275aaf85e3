"""One running emulator (broker + Shadow/Jobs services) per test module, and AWS's own V2 service
clients on the real awscrt MQTT5 client for a fresh thing per test, so tests share the broker but
never each other's state."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from awscrt import mqtt_request_response
from awsiot import iotjobs, iotshadow

from emulator import Emulator
from emulator.admin import Admin
from emulator.services.device_services import DeviceServices
from emulator.services.jobs import JobsSettings
from tests.mqtt_client import MqttClient


@dataclass
class Device:
    thing: str
    mqtt: MqttClient
    shadow: iotshadow.IotShadowClientV2
    jobs: iotjobs.IotJobsClientV2


@pytest.fixture(scope="module")
def services_emulator(tmp_path_factory) -> Iterator[Emulator]:
    # Fast step timers for the timeout tests: one "minute" lasts 0.05 s in this emulator.
    emu = Emulator(
        tmp_path_factory.mktemp("svc") / "emulator",
        components=[DeviceServices(jobs_settings=JobsSettings(seconds_per_minute=0.05))],
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


@pytest.fixture
def device(services_emulator) -> Iterator[Device]:
    thing = f"t-{uuid.uuid4().hex[:10]}"
    cert, key = services_emulator.issue_identity(thing)
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
