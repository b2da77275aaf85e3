"""Fixtures: an emulator with fleet provisioning and the authz plugin, and awscrt MQTT5 clients."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from awscrt import mqtt5, mqtt_request_response
from awsiot import V2ServiceException, iotidentity

from emulator import Emulator
from iotmqtt import Lifecycle, Target, build_client

CONNECT_TIMEOUT_S = 15


def _write_pair(folder: Path, name: str, cert: bytes, key: bytes) -> tuple[Path, Path]:
    """The client factory reads files, as the agent does: the key 0600 from its first byte."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert_file.write_bytes(cert)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return cert_file, key_file


class Device:
    """One awscrt MQTT5 connection; records what arrives and how the connection ends."""

    def __init__(self, emu: Emulator, cert: Path | str, key: Path | str, client_id: str | None = None,
                 cert_bytes: bytes | None = None, key_bytes: bytes | None = None) -> None:
        info = emu.info
        assert info is not None
        self.client_id = client_id or f"dev-{uuid.uuid4().hex[:10]}"
        self.connected: Future = Future()
        self.stopped = threading.Event()
        self.disconnects: list[int | None] = []
        self.messages: list[tuple[str, bytes]] = []
        self.got_message = threading.Condition()
        self._identity: iotidentity.IotIdentityClientV2 | None = None
        if cert_bytes is not None and key_bytes is not None:  # a pair fresh from CreateKeysAndCertificate
            cert, key = _write_pair(info.state_dir / "test-devices", self.client_id, cert_bytes, key_bytes)
        self.client = build_client(
            Target(info.endpoint, info.port, info.ca_file, Path(cert), Path(key), self.client_id),
            Lifecycle(on_publish=self._msg, on_success=self._ok, on_failure=self._fail, on_disconnect=self._disc,
                      on_stopped=lambda d: self.stopped.set()),
            keep_alive_s=1200, connect_timeout_ms=10_000, ack_timeout_s=30,
            # No jitter: a dropped test client waits the full minute before reconnecting, so it never
            # fights another connection for its client id during a test.
            min_reconnect_delay_ms=60_000, max_reconnect_delay_ms=60_000,
            jitter=mqtt5.ExponentialBackoffJitterMode.NONE, keep_qos1_while_offline=True,
        )

    def _ok(self, data) -> None:
        if not self.connected.done():
            self.connected.set_result(True)

    def _fail(self, data) -> None:
        if not self.connected.done():
            self.connected.set_result(False)

    def _disc(self, data) -> None:
        pkt = data.disconnect_packet
        self.disconnects.append(None if pkt is None else int(pkt.reason_code))

    def _msg(self, data) -> None:
        with self.got_message:
            self.messages.append((data.publish_packet.topic, bytes(data.publish_packet.payload or b"")))
            self.got_message.notify_all()

    def connect(self) -> bool:
        self.client.start()
        return bool(self.connected.result(CONNECT_TIMEOUT_S))

    def identity(self) -> iotidentity.IotIdentityClientV2:
        """One request/response client per connection, kept alive here: the SDK shuts a V2 client
        down (failing its requests) once it is garbage-collected."""
        if self._identity is not None:
            return self._identity
        opts = mqtt_request_response.ClientOptions(max_request_response_subscriptions=2,
                                                   max_streaming_subscriptions=2, operation_timeout_in_seconds=20)
        self._identity = iotidentity.IotIdentityClientV2(self.client, opts)
        return self._identity

    def publish(self, topic: str, payload: bytes = b"{}") -> mqtt5.PubackPacket:
        return self.client.publish(mqtt5.PublishPacket(topic=topic, payload=payload,
                                                       qos=mqtt5.QoS.AT_LEAST_ONCE)).result(10).puback

    def subscribe(self, topic_filter: str) -> list:
        sub = mqtt5.SubscribePacket([mqtt5.Subscription(topic_filter, mqtt5.QoS.AT_LEAST_ONCE)])
        return list(self.client.subscribe(sub).result(10).reason_codes)

    def stop(self) -> None:
        self.client.stop()
        self.stopped.wait(10)


def rejected(fut) -> iotidentity.V2ErrorResponse:
    """The service's modeled error of a request that must fail."""
    with pytest.raises(V2ServiceException) as exc:
        fut.result(20)
    err = exc.value.modeled_error
    assert isinstance(err, iotidentity.V2ErrorResponse), exc.value
    return err


@pytest.fixture
def devices() -> Iterator[list[Device]]:
    made: list[Device] = []
    yield made
    for d in made:
        d.stop()


@pytest.fixture
def connect(fleet_emulator, devices):
    def make(cert, key, client_id=None, **kw) -> Device:
        d = Device(fleet_emulator, cert, key, client_id, **kw)
        devices.append(d)
        d.connect()
        return d

    return make


@pytest.fixture
def claim(fleet_emulator, connect) -> Device:
    info = fleet_emulator.info
    d = connect(info.claim_cert_file, info.claim_key_file)
    assert d.connected.result(), "claim certificate must connect"
    return d
