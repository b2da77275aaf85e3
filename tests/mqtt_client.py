"""Blocking test helpers around the REAL awscrt MQTT5 client, built by the project's one client
factory (``iotmqtt.build_client``), as the agent builds it.

awscrt reports everything through callbacks on its own threads; this wrapper turns them into
waits with deadlines (connect, SUBACK, PUBACK) and a thread-safe queue of received messages, so
tests read top to bottom and never sleep for a fixed time.

    with MqttClient.for_device(info) as c:
        c.subscribe("dt/methane/site-1/gw-0001/#")
        ack = c.publish("dt/methane/site-1/gw-0001/telemetry", b"x")
        msg = c.expect(timeout=5)
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from awscrt import mqtt5

from iotmqtt import Lifecycle, Target, build_client


class ConnectFailed(Exception):
    """The client's first connection attempt failed. ``reason_code`` is the CONNACK reason when
    the broker sent one; ``error`` the awscrt exception (TLS failures land here)."""

    def __init__(self, error: Exception | None, reason_code: Any) -> None:
        self.error = error
        self.reason_code = reason_code
        super().__init__(f"connection failed: error={error!r} connack_reason={reason_code!r}")


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    qos: int
    content_type: str | None
    user_properties: dict[str, str]
    retain: bool


class MqttClient:
    def __init__(
        self,
        port: int,
        ca_file: Path | str,
        cert_file: Path | str | None = None,
        key_file: Path | str | None = None,
        client_id: str | None = None,
        endpoint: str = "localhost",
        iot_core_flow_control: bool = False,
        min_reconnect_delay_ms: int = 100,
        max_reconnect_delay_ms: int = 1000,
        session_expiry_s: int | None = None,
    ) -> None:
        """``session_expiry_s``: a persistent session the broker keeps that long (else clean).
        Without ``cert_file``/``key_file`` no client certificate is offered (a broker must refuse)."""
        self.client_id = client_id or f"test-{uuid.uuid4().hex[:12]}"
        self.messages: queue.Queue[Received] = queue.Queue()
        self._cond = threading.Condition()
        self.connections = 0  # successful connects so far (reconnects count)
        self.failures: list[tuple[Exception | None, Any]] = []
        self.disconnections: list[tuple[Exception | None, Any]] = []
        self._stopped = threading.Event()
        self.client = build_client(
            Target(endpoint, port, Path(ca_file), Path(cert_file) if cert_file is not None else None,
                   Path(key_file) if key_file is not None else None, self.client_id),
            Lifecycle(on_publish=self._on_publish, on_success=self._on_success, on_failure=self._on_failure,
                      on_disconnect=self._on_disconnect, on_stopped=self._on_stopped),
            keep_alive_s=30,
            connect_timeout_ms=5000,
            ack_timeout_s=20,
            min_reconnect_delay_ms=min_reconnect_delay_ms,
            max_reconnect_delay_ms=max_reconnect_delay_ms,
            iot_core_limits=iot_core_flow_control,
            session_expiry_s=session_expiry_s,
            keep_qos1_while_offline=True,
            sdk_metrics=False,
        )
        self._started = False

    @classmethod
    def for_device(cls, info: Any, **kwargs: Any) -> MqttClient:
        """Connects as the emulator's ready-made device (``info``: emulator.EmulatorInfo)."""
        kwargs.setdefault("client_id", info.device.thing_name)
        return cls(info.port, info.ca_file, info.device.cert_file, info.device.key_file, **kwargs)

    @classmethod
    def for_admin(cls, info: Any, **kwargs: Any) -> MqttClient:
        return cls(info.port, info.ca_file, info.admin_cert_file, info.admin_key_file, **kwargs)

    # -- callbacks (awscrt threads: record and notify, never block) --------------------------------
    def _on_publish(self, data: mqtt5.PublishReceivedData) -> None:
        p = data.publish_packet
        props = {u.name: u.value for u in (p.user_properties or [])}
        self.messages.put(
            Received(p.topic, bytes(p.payload or b""), int(p.qos), p.content_type, props, bool(p.retain))
        )

    def _on_success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        with self._cond:
            self.connections += 1
            self._cond.notify_all()

    def _on_failure(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        reason = data.connack_packet.reason_code if data.connack_packet else None
        with self._cond:
            self.failures.append((data.exception, reason))
            self._cond.notify_all()

    def _on_disconnect(self, data: mqtt5.LifecycleDisconnectData) -> None:
        reason = data.disconnect_packet.reason_code if data.disconnect_packet else None
        with self._cond:
            self.disconnections.append((data.exception, reason))
            self._cond.notify_all()

    def _on_stopped(self, data: mqtt5.LifecycleStoppedData) -> None:
        self._stopped.set()

    # -- blocking API ------------------------------------------------------------------------------
    def connect(self, timeout: float = 15.0) -> None:
        """Start the client and wait for the first connection success; raise ConnectFailed on the
        first failure (the client is then stopped so it does not retry forever)."""
        self.client.start()
        self._started = True
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.connections == 0 and not self.failures:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no connection result within {timeout}s")
                self._cond.wait(left)
            if self.connections == 0:
                error, reason = self.failures[0]
        if self.connections == 0:
            self.close()
            raise ConnectFailed(error, reason)

    def wait_connections(self, n: int, timeout: float = 30.0) -> None:
        """Wait until the client has connected ``n`` times in total (reconnects included)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.connections < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"connected {self.connections} times, wanted {n} within {timeout}s")
                self._cond.wait(left)

    def wait_disconnections(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.disconnections) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.disconnections)} disconnections, wanted {n}")
                self._cond.wait(left)

    def subscribe(self, *filters: str, qos: int = 1, timeout: float = 10.0) -> list[mqtt5.SubackReasonCode]:
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=f, qos=mqtt5.QoS(qos)) for f in filters]
        )
        suback: mqtt5.SubackPacket = self.client.subscribe(packet).result(timeout)
        return list(suback.reason_codes)

    def publish_async(self, topic: str, payload: bytes | str, qos: int = 1, **props: Any) -> Any:
        """Returns awscrt's future (of PublishCompletionData) without waiting."""
        data = payload.encode() if isinstance(payload, str) else payload
        return self.client.publish(mqtt5.PublishPacket(topic=topic, payload=data, qos=mqtt5.QoS(qos), **props))

    def publish(
        self, topic: str, payload: bytes | str, qos: int = 1, timeout: float = 10.0, **props: Any
    ) -> mqtt5.PubackPacket | None:
        """Publish and, for QoS 1, wait for the PUBACK and return it (check ``reason_code``)."""
        result = self.publish_async(topic, payload, qos, **props).result(timeout)
        return result.puback if qos else None

    def expect(self, timeout: float = 10.0) -> Received:
        """The next received message, or queue.Empty after ``timeout``."""
        return self.messages.get(timeout=timeout)

    def drain(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Exactly ``count`` messages, waiting up to ``timeout`` overall."""
        deadline = time.monotonic() + timeout
        out: list[Received] = []
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"received {len(out)} of {count} messages within {timeout}s")
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                continue
        return out

    def close(self, timeout: float = 10.0) -> None:
        if self._started:
            self._started = False
            self.client.stop()
            self._stopped.wait(timeout)

    def __enter__(self) -> MqttClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
