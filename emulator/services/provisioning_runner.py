"""Runs the fleet provisioning service behind the broker: one admin MQTT5 connection, one worker
thread. Requests carry the requester's client id and certificate id as user properties stamped by
the authz plugin (devices cannot forge them); replies go back to that one client through the
plugin's ``$emulator/deliver`` (``deliver`` below), since they hold private keys."""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import sqlite3
import threading
import uuid

from awscrt import mqtt5
from awscrt.exceptions import AwsCrtError

from emulator.admin_client import admin_client
from emulator.authz import DELIVER_TOPIC, encode_delivery
from emulator.registry import RegistryError
from emulator.services.provisioning import ProvisioningService
from emulator.state import EmulatorInfo
from iotmqtt import Lifecycle

log = logging.getLogger(__name__)
START_TIMEOUT_S = 15.0
PROP_CLIENT = "emu-client-id"
PROP_CERT = "emu-cert-id"


def deliver(client: mqtt5.Client, client_id: str, topic: str, payload: bytes, timeout_s: float = 10.0) -> None:
    """Deliver ``payload`` on ``topic`` to the connection ``client_id`` only, whether or not it
    subscribed (as IoT Core does for Jobs replies). ``client`` must be connected with the admin
    identity of a broker running the authz plugin."""
    packet = mqtt5.PublishPacket(topic=DELIVER_TOPIC, payload=encode_delivery(client_id, topic, payload),
                                 qos=mqtt5.QoS.AT_LEAST_ONCE)
    client.publish(packet).result(timeout_s)


class ProvisioningRunner:
    """An ``emulator`` component (``start(info)`` / ``stop()``)."""

    def __init__(self, service: ProvisioningService) -> None:
        self.service = service
        self.client_id = f"emulator-provisioning-{uuid.uuid4().hex[:12]}"
        self.handled = 0
        self._queue: queue.Queue[tuple[str, bytes, str, str] | None] = queue.Queue()
        self._client: mqtt5.Client | None = None
        self._worker: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self, info: EmulatorInfo) -> None:
        self._ready.clear()  # a restart (Emulator.restart_broker) waits for the new subscription
        self._worker = threading.Thread(target=self._run, name="emulator-provisioning", daemon=True)
        self._worker.start()
        self._client = admin_client(
            info, self.client_id, Lifecycle(on_publish=self._on_publish, on_success=self._on_connected),
            min_reconnect_delay_ms=200, max_reconnect_delay_ms=5000,
        )
        self._client.start()
        if not self._ready.wait(START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"provisioning service did not subscribe on port {info.port}")

    def stop(self) -> None:
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout=10)
            self._worker = None
        if self._client is not None:
            self._client.stop()
            self._client = None

    def _on_connected(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        threading.Thread(target=self._subscribe, daemon=True).start()  # never block a callback

    def _subscribe(self) -> None:
        client = self._client
        if client is None:
            return
        subs = [mqtt5.Subscription(f, mqtt5.QoS.AT_LEAST_ONCE) for f in self.service.subscriptions]
        try:
            client.subscribe(mqtt5.SubscribePacket(subs)).result(START_TIMEOUT_S)
        except (AwsCrtError, concurrent.futures.TimeoutError):  # start() then reports the timeout
            log.exception("provisioning service could not subscribe")
            return
        self._ready.set()

    def _on_publish(self, data: mqtt5.PublishReceivedData) -> None:
        p = data.publish_packet
        props = {u.name: u.value for u in (p.user_properties or [])}
        self._queue.put((p.topic, bytes(p.payload or b""), props.get(PROP_CLIENT, ""), props.get(PROP_CERT, "")))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            topic, payload, client_id, cert_id = item
            if not client_id:
                log.warning("provisioning request without requester (is the authz plugin loaded?)",
                            extra={"topic": topic})
                continue
            self.handled += 1
            try:
                replies = self.service.handle(topic, payload, client_id, cert_id)
            except (sqlite3.Error, RegistryError, OSError):  # one broken request must not stop the service
                log.exception("provisioning request failed", extra={"topic": topic, "client_id": client_id})
                continue
            for out in replies:
                client = self._client
                if client is None:
                    return
                try:
                    deliver(client, client_id, out.topic, out.payload)
                except (AwsCrtError, concurrent.futures.TimeoutError, ValueError):
                    log.exception("provisioning reply not delivered", extra={"topic": out.topic})
