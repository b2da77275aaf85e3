"""The agent's one MQTT5 connection to IoT Core. It owns the awscrt client; everyone else asks it.

awscrt calls back on its own event-loop threads, where blocking can deadlock the client, so every
callback only hands its data to the asyncio loop with ``call_soon_threadsafe``.

Publishes are failed, not queued, while offline (``FAIL_ALL_ON_DISCONNECT``): the durable spool is
the only queue, so nothing lives twice and nothing is retried behind the uplink's back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from awscrt import mqtt5
from awscrt.exceptions import AwsCrtError
from awsiot import mqtt5_client_builder

from agent.config import ConnectionConfig
from provisioning.session import describe_failure, is_refusal

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, mqtt5.PublishPacket], None]


class PublishError(Exception):
    """A publish was not acknowledged with success. ``retryable`` is False for a refusal that will
    repeat identically (not authorised, topic invalid); ``too_large`` asks the caller to split."""

    def __init__(self, message: str, *, retryable: bool = True, too_large: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.too_large = too_large


@dataclass
class ConnectionStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    last_error: str | None = None
    refused: bool = False  # the broker refused our certificate/client id: an operator must act
    last_connected_wall: float | None = None
    publishes: int = 0
    subscriptions_refused: int = 0
    publish_times: list[float] = field(default_factory=list)


def _awaitable(fut: concurrent.futures.Future[Any]) -> asyncio.Future[Any]:
    """Await an awscrt operation without ever cancelling its future: a cancelled wait (shutdown,
    a timeout) must leave awscrt to complete the operation itself, or its callback thread hits
    InvalidStateError on a future we cancelled under it."""
    return asyncio.shield(asyncio.wrap_future(fut))


def _topic_matches(filter_: str, topic: str) -> bool:
    f_parts, t_parts = filter_.split("/"), topic.split("/")
    for i, f in enumerate(f_parts):
        if f == "#":
            return len(t_parts) > i  # IoT Core: "a/#" does not match "a"
        if i >= len(t_parts) or (f != "+" and f != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


_TOO_LARGE = {mqtt5.PubackReasonCode.PAYLOAD_FORMAT_INVALID}
_NOT_RETRYABLE = {
    mqtt5.PubackReasonCode.NOT_AUTHORIZED,
    mqtt5.PubackReasonCode.TOPIC_NAME_INVALID,
}


class Connection:
    def __init__(
        self,
        conf: ConnectionConfig,
        client_id: str,
        loop: asyncio.AbstractEventLoop,
        *,
        ack_timeout_s: float = 30.0,
    ) -> None:
        if not conf.endpoint:
            raise ValueError("connection.endpoint is empty: the agent runs offline")
        if conf.cert_file is None or conf.key_file is None:
            raise ValueError("connection.cert_file and connection.key_file are required to connect")
        self.conf = conf
        self.client_id = client_id
        self._loop = loop
        self.stats = ConnectionStats()
        self.connected = asyncio.Event()
        self._handlers: list[tuple[str, MessageHandler]] = []
        self._on_connect: list[Callable[[bool], None]] = []
        self._kept: list[str] = []
        self._background: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()
        self.client = self._build(Path(conf.cert_file), Path(conf.key_file), ack_timeout_s)

    def _build(self, cert: Path, key: Path, ack_timeout_s: float) -> mqtt5.Client:
        c = self.conf
        flow = (
            mqtt5.ExtendedValidationAndFlowControlOptions.AWS_IOT_CORE_DEFAULTS
            if c.iot_core_limits
            else mqtt5.ExtendedValidationAndFlowControlOptions.NONE
        )
        return mqtt5_client_builder.mtls_from_path(
            cert_filepath=str(cert),
            pri_key_filepath=str(key),
            endpoint=c.endpoint,
            port=c.port,
            ca_filepath=str(c.ca_file) if c.ca_file else None,
            client_id=self.client_id,
            keep_alive_interval_sec=c.keep_alive_s,
            min_reconnect_delay_ms=c.min_reconnect_delay_ms,
            max_reconnect_delay_ms=c.max_reconnect_delay_ms,
            retry_jitter_mode=mqtt5.ExponentialBackoffJitterMode.FULL,
            session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
            offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
            extended_validation_and_flow_control_options=flow,
            connack_timeout_ms=c.connect_timeout_ms,
            ack_timeout_sec=max(1, int(ack_timeout_s)),
            on_publish_received=self._cb_publish,
            on_lifecycle_connection_success=self._cb_success,
            on_lifecycle_connection_failure=self._cb_failure,
            on_lifecycle_disconnection=self._cb_disconnect,
            on_lifecycle_stopped=self._cb_stopped,
        )

    # --- awscrt callbacks: hand over to the loop, never block -------------------------------
    def _post(self, fn: Callable[..., None], *args: object) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _cb_publish(self, data: mqtt5.PublishReceivedData) -> None:
        p = data.publish_packet
        self._post(self._dispatch, p.topic, bytes(p.payload or b""), p)

    def _cb_success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        present = bool(data.connack_packet and data.connack_packet.session_present)
        self._post(self._connected, present)

    def _cb_failure(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        self._post(self._failed, describe_failure(data.exception, data.connack_packet))

    def _cb_disconnect(self, data: mqtt5.LifecycleDisconnectData) -> None:
        self._post(self._disconnected, describe_failure(data.exception, data.disconnect_packet))

    def _cb_stopped(self, data: mqtt5.LifecycleStoppedData) -> None:
        self._post(self._stopped.set)

    # --- on the loop ----------------------------------------------------------------------------
    def _connected(self, session_present: bool) -> None:
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.last_error = None
        self.stats.refused = False
        self.stats.last_connected_wall = time.time()
        self.connected.set()
        log.info("connected", extra={"endpoint": self.conf.endpoint, "session_present": session_present})
        if self._kept and not session_present:
            self._resubscribe(list(self._kept))
        for cb in list(self._on_connect):
            cb(session_present)

    def _failed(self, why: str) -> None:
        self.stats.connect_failures += 1
        self.stats.last_error = why
        refused = is_refusal(why)
        if refused and not self.stats.refused:
            log.error(
                "broker refused the certificate (revoked, inactive or not allowed by its policy?); "
                "retrying with backoff",
                extra={"endpoint": self.conf.endpoint, "error": why, "cert_file": str(self.conf.cert_file)},
            )
        elif not refused:
            log.warning("connect failed", extra={"endpoint": self.conf.endpoint, "error": why})
        self.stats.refused = refused

    def _disconnected(self, why: str) -> None:
        if self.stats.connected:
            self.stats.disconnects += 1
        self.stats.connected = False
        self.stats.last_error = why
        self.connected.clear()
        log.warning("disconnected", extra={"error": why})

    def _dispatch(self, topic: str, payload: bytes, packet: mqtt5.PublishPacket) -> None:
        for filter_, handler in list(self._handlers):
            if _topic_matches(filter_, topic):
                handler(topic, payload, packet)

    # --- API ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting in the background; the client keeps retrying with full-jitter backoff,
        so an agent that boots with no network simply starts offline. Also restarts a stopped
        client (certificate rotation pauses it); a later ``stop`` then waits for the new stop."""
        self._stopped.clear()
        self.client.start()

    async def stop(self) -> None:
        self.client.stop()
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout=3)
        except TimeoutError:
            log.warning("mqtt client did not report stopped within 3 s")
        self.connected.clear()
        self.stats.connected = False

    def on_connect(self, cb: Callable[[bool], None]) -> None:
        """``cb(session_present)`` runs on the loop after every successful connect."""
        self._on_connect.append(cb)

    def add_handler(self, topic_filter: str, handler: MessageHandler) -> None:
        self._handlers.append((topic_filter, handler))

    def keep_subscribed(self, topic_filter: str, handler: MessageHandler) -> None:
        """Route messages on ``topic_filter`` to ``handler`` and hold the subscription: it is made
        now if connected, and again after every connect whose session was not present (the agent
        uses clean sessions, and IoT Core drops sessions after an hour offline anyway)."""
        self.add_handler(topic_filter, handler)
        self._kept.append(topic_filter)
        if self.connected.is_set():
            self._resubscribe([topic_filter])

    def _resubscribe(self, filters: list[str]) -> None:
        task = self._loop.create_task(self._subscribe_logged(filters), name="resubscribe")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _subscribe_logged(self, filters: list[str]) -> None:
        try:
            refused = await self.subscribe(filters)
        except AwsCrtError as exc:  # e.g. disconnected meanwhile: the next connect resubscribes
            log.warning("resubscribe failed", extra={"topic_filters": ",".join(filters), "error": exc.name})
            return
        self.stats.subscriptions_refused = len(refused)

    async def subscribe(self, topic_filters: list[str], qos: int = 1) -> list[str]:
        """Subscribe (at most 8 filters per SUBSCRIBE, as IoT Core allows); returns filters refused."""
        refused: list[str] = []
        for i in range(0, len(topic_filters), 8):
            chunk = topic_filters[i : i + 8]
            packet = mqtt5.SubscribePacket(
                subscriptions=[mqtt5.Subscription(f, mqtt5.QoS(qos)) for f in chunk]
            )
            suback = await _awaitable(self.client.subscribe(packet))
            for f, code in zip(chunk, suback.reason_codes, strict=False):
                if int(code) >= 0x80:
                    refused.append(f)
                    log.error("subscription refused", extra={"topic_filter": f, "reason": code.name})
        return refused

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        content_type: str | None = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> None:
        """Publish QoS1 and return once PUBACKed with success; raise PublishError otherwise."""
        packet = mqtt5.PublishPacket(
            topic=topic,
            payload=payload,
            qos=mqtt5.QoS.AT_LEAST_ONCE,
            content_type=content_type,
            user_properties=[mqtt5.UserProperty(k, v) for k, v in (user_properties or [])],
        )
        try:
            result = await _awaitable(self.client.publish(packet))
        except AwsCrtError as exc:
            too_large = "PACKET_SIZE" in exc.name or "PAYLOAD" in exc.name
            raise PublishError(f"{exc.name}: {exc.message}", too_large=too_large) from None
        self.stats.publishes += 1
        now = time.monotonic()
        self.stats.publish_times.append(now)
        if len(self.stats.publish_times) > 200:
            del self.stats.publish_times[:100]
        puback = result.puback
        if puback is None:
            raise PublishError("no PUBACK for a QoS1 publish")
        code = puback.reason_code
        if code is None:
            # awscrt maps reason codes MQTT5 does not define for PUBACK to None; the one brokers
            # send in practice is 0x95 "packet too large" (mosquitto's message_size_limit).
            raise PublishError("PUBACK with a reason code outside MQTT5's PUBACK set (packet too large?)",
                               too_large=True)
        if int(code) >= 0x80:
            msg = f"PUBACK {code.name} ({int(code):#x}) {puback.reason_string or ''}".strip()
            raise PublishError(msg, retryable=code not in _NOT_RETRYABLE, too_large=code in _TOO_LARGE)

    def publish_rate(self, window_s: float = 10.0) -> float:
        now = time.monotonic()
        recent = [t for t in self.stats.publish_times if now - t <= window_s]
        return len(recent) / window_s
