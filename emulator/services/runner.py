"""Bridge between the broker and the pure services: one admin MQTT5 connection, one worker thread.

Everything a service does — answering a request, an admin call, a timer — runs on the worker, one
at a time, so services need no locking of their own and the awscrt callbacks only enqueue. The
runner is an ``emulator.Component`` (``start(info)`` / ``stop()``).

How a reply reaches its client is decided in one place, ``ServiceRunner.deliver``: with the broker's
authz plugin, Jobs replies go to the requesting connection alone (as on IoT Core); without it, and
for everything else, messages are published on their topics."""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from awscrt import mqtt5

from emulator.admin_client import admin_client
from emulator.authz import DELIVER_TOPIC, encode_delivery
from emulator.broker import BrokerError
from emulator.services.outgoing import Outgoing
from emulator.services.provisioning_runner import PROP_CLIENT
from emulator.state import EmulatorInfo
from iotmqtt import Lifecycle

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_FILTERS_PER_SUBSCRIBE = 8  # IoT Core's limit, kept here too so the runner is a fair client
START_TIMEOUT_S = 15.0
Call = Callable[[float], tuple[Any, list[Outgoing]]]


class Service(Protocol):
    subscriptions: tuple[str, ...]

    def handle(self, topic: str, payload: bytes, now: float) -> list[Outgoing]: ...


@runtime_checkable
class TimedService(Protocol):
    def next_deadline(self) -> float | None: ...

    def tick(self, now: float) -> list[Outgoing]: ...


class RunnerError(BrokerError):
    """The services could not connect or subscribe to the broker."""


class ServiceRunner:
    def __init__(self, services: Sequence[Service], clock: Callable[[], float] = time.time) -> None:
        self.services = list(services)
        self.clock = clock
        self.client_id = f"emulator-services-{uuid.uuid4().hex[:12]}"
        self.handled = 0
        self.published = 0
        self.delivered_direct = 0  # of ``published``: handed to one connection via the plugin
        # Set from EmulatorInfo at start: can the broker name requesters and address one client?
        self.direct_delivery = False
        self._queue: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._client: mqtt5.Client | None = None
        self._worker: threading.Thread | None = None
        self._subscribed = threading.Event()
        self._stopped = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, info: EmulatorInfo) -> None:
        self.direct_delivery = info.authz_plugin
        self._stopped.clear()
        self._subscribed.clear()
        self._worker = threading.Thread(target=self._run, name="emulator-services", daemon=True)
        self._worker.start()
        self._client = admin_client(
            info, self.client_id, Lifecycle(on_publish=self._on_publish, on_success=self._on_connected),
            min_reconnect_delay_ms=200, max_reconnect_delay_ms=5000,
        )
        self._client.start()
        if not self._subscribed.wait(START_TIMEOUT_S):
            self.stop()
            raise RunnerError(f"services did not connect and subscribe to the broker on port {info.port}")

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._queue.put(("stop", None, None))
        if self._worker is not None:
            self._worker.join(timeout=10)
        if self._client is not None:
            self._client.stop()
            self._client = None

    @property
    def ready(self) -> bool:
        return self._subscribed.is_set()

    # ---- the API admin front-ends use ------------------------------------------------------

    def call(self, fn: Call, timeout: float = 10.0) -> Any:
        """Run ``fn(now)`` on the worker; publish the messages it returns; give back its result
        (or raise its exception here)."""
        if self._stopped.is_set() or self._worker is None:
            raise RunnerError("services are not running")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._queue.put(("call", fn, fut))
        return fut.result(timeout)

    # ---- awscrt callbacks: enqueue only ----------------------------------------------------

    def _on_publish(self, data: mqtt5.PublishReceivedData) -> None:
        packet = data.publish_packet
        # The authz plugin stamps device requests with the requester's client id (devices cannot
        # set it themselves); without the plugin there is none.
        requester = next((p.value for p in packet.user_properties or [] if p.name == PROP_CLIENT), None)
        self._queue.put(("msg", (packet.topic, requester), bytes(packet.payload or b"")))

    def _on_connected(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        self._queue.put(("subscribe", None, None))

    # ---- worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                kind, a, b = self._queue.get(timeout=self._wait_s())
            except queue.Empty:
                kind, a, b = "tick", None, None
            if kind == "stop":
                return
            try:
                if kind == "msg":
                    topic, requester = a
                    self._dispatch(topic, requester, b)
                elif kind == "call":
                    self._call(a, b)
                elif kind == "subscribe":
                    self._subscribe()
                self._tick()
            except Exception:
                log.exception("service failed", extra={"item": kind})

    def _dispatch(self, topic: str, requester: str | None, payload: bytes) -> None:
        now = self.clock()
        self.handled += 1
        for service in self.services:
            for out in service.handle(topic, payload, now):
                self.deliver(out, requester)

    def _call(self, fn: Call, fut: concurrent.futures.Future[Any]) -> None:
        try:
            result, outgoing = fn(self.clock())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who reports it
            fut.set_exception(exc)
            return
        for out in outgoing:
            self.deliver(out)
        fut.set_result(result)

    def _tick(self) -> None:
        now = self.clock()
        for service in self.services:
            if isinstance(service, TimedService):
                deadline = service.next_deadline()
                if deadline is not None and deadline <= now:
                    for out in service.tick(now):
                        self.deliver(out)

    def _wait_s(self) -> float:
        deadlines = [
            d for s in self.services if isinstance(s, TimedService) and (d := s.next_deadline()) is not None
        ]
        if not deadlines:
            return 1.0
        return min(1.0, max(0.0, min(deadlines) - self.clock()))

    def _subscribe(self) -> None:
        client = self._client
        if client is None:
            return
        filters = [f for s in self.services for f in s.subscriptions]
        for i in range(0, len(filters), MAX_FILTERS_PER_SUBSCRIBE):
            chunk = filters[i : i + MAX_FILTERS_PER_SUBSCRIBE]
            subs = [mqtt5.Subscription(f, mqtt5.QoS.AT_LEAST_ONCE, no_local=True) for f in chunk]
            suback = client.subscribe(mqtt5.SubscribePacket(subs)).result(START_TIMEOUT_S)
            bad = [
                (f, code) for f, code in zip(chunk, suback.reason_codes, strict=False)
                if code not in (mqtt5.SubackReasonCode.GRANTED_QOS_0, mqtt5.SubackReasonCode.GRANTED_QOS_1)
            ]
            if bad:
                raise RunnerError(f"broker refused subscriptions: {bad}")
        self._subscribed.set()

    def deliver(self, out: Outgoing, requester: str | None = None) -> None:
        """The one place messages leave the services, and the one place that decides how.

        A ``direct`` reply (Jobs accepted/rejected) to a request the authz plugin attributed to
        ``requester`` is handed to that connection alone through ``$emulator/deliver``: it arrives
        whether or not the client subscribed, once even if it did, and no other subscriber of the
        topic sees it (IoT Core: such replies bypass the broker, reference §4.1). Everything else
        is published on its topic: events, Shadow replies (IoT Core requires a subscription for
        those), and direct replies when the broker has no plugin (plain mosquitto cannot address
        one client) or the request came from an admin connection, which the plugin does not stamp.
        """
        client = self._client
        if client is None:
            return
        if out.direct and self.direct_delivery and requester:
            try:
                payload = encode_delivery(requester, out.topic, out.payload)
            except ValueError:  # a client id no delivery request can carry; never fall back to a broadcast
                log.warning("direct reply not deliverable", extra={"topic": out.topic, "client_id": requester})
                return
            packet = mqtt5.PublishPacket(topic=DELIVER_TOPIC, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE)
            self.delivered_direct += 1
        else:
            packet = mqtt5.PublishPacket(topic=out.topic, payload=out.payload, qos=mqtt5.QoS.AT_LEAST_ONCE)
        self.published += 1
        future = client.publish(packet)
        future.add_done_callback(_log_publish_failure(out.topic))


def _log_publish_failure(topic: str) -> Callable[[concurrent.futures.Future[Any]], None]:
    def done(fut: concurrent.futures.Future[Any]) -> None:
        exc = fut.exception()
        if exc is not None:
            log.warning("service publish failed", extra={"topic": topic, "error": str(exc)})

    return done
