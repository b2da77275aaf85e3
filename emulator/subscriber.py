"""An emulator component that plays an IoT rule: an ``admin`` MQTT5 client subscribed to some topics
in a persistent session, whose awscrt callbacks only enqueue, and one worker thread that handles
the messages in order (so a slow disk or database never blocks awscrt's event loop). The telemetry
recorder and the local ingest are both built on it."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence

from awscrt import mqtt5

from emulator.admin_client import admin_client
from emulator.broker import BrokerError
from emulator.state import EmulatorInfo
from iotmqtt import Lifecycle

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
Item = tuple[str, bytes, str | None, float]  # topic, payload, content type, received at (time.time())


class SubscriberError(BrokerError):
    """The subscriber could not connect or subscribe."""


class QueuedSubscriber:
    """Subclasses set ``topics`` and ``name`` and implement ``handle(item)``; ``prepare(info)`` runs
    before the connection (open stores), ``close()`` after the worker ended."""

    topics: Sequence[str] = ()
    name = "subscriber"
    error: type[SubscriberError] = SubscriberError

    def __init__(self) -> None:
        self._queue: queue.Queue[Item | None] = queue.Queue()
        self._client: mqtt5.Client | None = None
        self._worker: threading.Thread | None = None
        self._connected = threading.Event()
        self._stopped = threading.Event()
        self.client_id = f"emulator-{self.name}-{uuid.uuid4().hex[:12]}"

    def prepare(self, info: EmulatorInfo) -> None:
        """Open what ``handle`` needs."""

    def handle(self, item: Item) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Close what ``prepare`` opened."""

    def start(self, info: EmulatorInfo) -> None:
        self.prepare(info)
        self._connected.clear()  # started again by Emulator.restart_broker: wait for the new connection
        self._stopped.clear()
        self._worker = threading.Thread(target=self._run, name=f"emulator-{self.name}", daemon=True)
        self._worker.start()
        self._client = admin_client(
            info,
            self.client_id,
            Lifecycle(on_publish=self._on_publish, on_success=self._on_connected,
                      on_stopped=lambda _data: self._stopped.set()),
            # A persistent session (the broker keeps it across its own restarts): messages published
            # while the subscriber reconnects are queued for it, not lost.
            session_expiry_s=3600,
            min_reconnect_delay_ms=100,
            max_reconnect_delay_ms=2000,
        )
        self._client.start()
        if not self._connected.wait(START_TIMEOUT_S):
            self.stop()
            raise self.error(f"{self.name} did not connect within {START_TIMEOUT_S:.0f}s")
        # Subscribe from here, not from the callback: a callback must never wait on awscrt. After a
        # broker restart the session (and its subscriptions) is restored from the broker's
        # persistence file; the worker resubscribes anyway in case it was not (_on_connected).
        self._subscribe(START_TIMEOUT_S)

    def _subscribe(self, timeout: float) -> None:
        assert self._client is not None
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(t, qos=mqtt5.QoS.AT_LEAST_ONCE) for t in self.topics]
        )
        suback = self._client.subscribe(packet).result(timeout)
        bad = [(t, c) for t, c in zip(self.topics, suback.reason_codes, strict=True) if int(c) >= 0x80]
        if bad:
            raise self.error(f"{self.name} subscriptions refused: {bad}")

    def _on_connected(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        first = not self._connected.is_set()
        self._connected.set()
        if not first:
            self._queue.put(None)  # ask the worker to resubscribe after a broker restart

    def _on_publish(self, data: mqtt5.PublishReceivedData) -> None:
        p = data.publish_packet
        self._queue.put((p.topic, bytes(p.payload or b""), p.content_type, time.time()))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    if self._stopped.is_set():
                        return
                    self._resubscribe()
                    continue
                self.handle(item)
            finally:
                self._queue.task_done()

    def _resubscribe(self) -> None:
        try:
            self._subscribe(START_TIMEOUT_S)
        except (SubscriberError, TimeoutError) as exc:
            log.error("%s could not resubscribe", self.name, extra={"error": str(exc)})

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every message received so far has been handled."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} still has {self._queue.unfinished_tasks} messages queued")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._stopped.wait(10)
            self._client = None
        self._stopped.set()
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(10)
            self._worker = None
        self.close()
