"""Publishes stored events at once, QoS 1, strictly in ``event_id`` order, one at a time: the next
event goes only after the previous one's PUBACK, so the cloud receives transitions in the order they
happened even across broker outages. An event leaves the unsent set only on a successful PUBACK;
anything else is retried after a short backoff and at once after a reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from agent.alarms.store import EventStore, EventStoreError
from agent.connection import Connection, PublishError

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
RETRY_MAX_S = 10.0


@dataclass
class PublisherStats:
    published: int = 0
    failures: int = 0
    last_error: str | None = None
    last_publish_wall: float | None = None


class EventPublisher:
    def __init__(self, store: EventStore, conn: Connection, topics: dict[str, str], ack_timeout_s: float) -> None:
        self.store = store
        self.conn = conn
        self.topics = topics  # kind -> topic
        self.ack_timeout_s = ack_timeout_s
        self.stats = PublisherStats()
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="alarm-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def notify(self) -> None:
        self.wake.set()

    async def _run(self) -> None:
        delay = 0.5
        while True:
            await self.conn.connected.wait()
            self.wake.clear()  # cleared before looking, so a notify during the look is not lost
            try:
                rows = self.store.unsent(100)
            except EventStoreError as exc:
                self.stats.last_error = str(exc)
                rows = []
            if not rows:
                await self._wait(None)
                continue
            for event_id, kind, body in rows:
                if not await self._publish(event_id, kind, body):
                    if self.conn.connected.is_set():  # refused while connected: back off
                        await self._wait(delay)
                        delay = min(RETRY_MAX_S, delay * 2)
                    break  # offline: the loop resends as soon as the connection is back
                delay = 0.5

    async def _wait(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wake.wait()

    async def _publish(self, event_id: int, kind: str, body: str) -> bool:
        topic = self.topics.get(kind)
        if topic is None:
            log.error("event of unknown kind kept unsent", extra={"event_id": event_id, "kind": kind})
            return False
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                await self.conn.publish(topic, body.encode(), content_type=CONTENT_TYPE)
        except (PublishError, TimeoutError) as exc:
            self.stats.failures += 1
            self.stats.last_error = str(exc) or type(exc).__name__
            log.warning("event not acknowledged; will resend", extra={"event_id": event_id,
                                                                      "error": self.stats.last_error})
            return False
        self.stats.published += 1
        try:
            self.store.mark_sent(event_id)
        except EventStoreError as exc:
            # Delivered, but not marked: it is sent again later (the cloud de-duplicates on event_id).
            self.stats.last_error = str(exc)
            log.error("event delivered but not marked sent", extra={"event_id": event_id, "error": str(exc)})
            return False
        self.stats.last_publish_wall = time.time()
        return True
