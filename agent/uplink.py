"""Spool -> IoT Core. Takes committed readings in sequence order, packs them into batches by size
and by age (whichever first; alarms go at once), publishes QoS1 over the one connection, and acks
the spool only when the PUBACK says success. Anything else leaves the readings in the spool, and
they are sent again: delivery is at-least-once, and the batch id and sequence numbers let the cloud
drop duplicates.

After every (re)connect the uplink starts again at once from the oldest unacknowledged reading:
publishes in flight on the old connection are abandoned (awscrt fails them at the disconnect), and
any retry wait ends. The only retry wait is a full-jitter backoff after the broker itself refused a
batch on a live connection; a link that was down, or a PUBACK that did not come in time, resends
without waiting (the connection's own ping timeout and reconnect schedule pace those).

Backlog drains are paced by awscrt's IoT Core flow control (100 publishes/s, 512 KiB/s) when
``connection.iot_core_limits`` is on, and by ``max_inflight`` always."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent import payload
from agent.config import UplinkConfig
from agent.connection import Connection, PublishError
from agent.reading import Reading
from agent.spool import Spool

log = logging.getLogger(__name__)

# MQTT5 properties count towards IoT Core's billed size (payload + topic + content type + user
# properties); this covers their length prefixes and identifiers with room to spare.
_PROPERTY_OVERHEAD = 16
MAX_READ = 50_000
MIN_PAYLOAD_CAP = 1024  # a learned cap never goes below this: one reading always fits
# Bytes per reading that the estimate gating encodes starts from (about twice what a compact batch
# of slowly changing values needs; a JSON reading's size), and the least it ever learns.
FIRST_BYTES_PER_READING = {"compact": 2.0, "json": 160.0}
MIN_BYTES_PER_READING = 0.5


@dataclass
class UplinkStats:
    batches_acked: int = 0
    readings_acked: int = 0
    bytes_acked: int = 0
    failures: int = 0
    splits: int = 0
    last_ack_wall: float | None = None
    last_error: str | None = None
    inflight: int = 0


class Uplink:
    def __init__(self, spool: Spool, conn: Connection, conf: UplinkConfig, device: str, site: str,
                 clock: Callable[[], float] = time.monotonic, on_acked: Callable[[], None] | None = None) -> None:
        """``clock`` is the monotonic clock batch ages and retry waits are measured on; a test
        passes its own to reach a batch's age without waiting for it. ``on_acked`` runs after each
        acknowledged batch (the runtime gives the batch's encoding memory back, agent/heap.py)."""
        self.spool = spool
        self._clock = clock
        self.on_acked = on_acked
        self.conn = conn
        self.device = device
        self.site = site
        self.stats = UplinkStats()
        self.wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        # Publishes sent on an earlier connection: not counted, not waited for (see _reconnected).
        self._abandoned: set[asyncio.Task[None]] = set()
        self._retry_at = 0.0  # monotonic; no batch before this (the broker refused one)
        self._hooked = False
        self._cursor = 0  # highest seq handed to a publish since the last rewind
        self._ahead: list[Reading] = []  # committed readings after the cursor, read but not yet sent
        self._rewind = False
        self._failures_in_row = 0
        # Learned from a broker that refused a batch as too large: payloads stay under it from then
        # on (until reconfigured), instead of every large batch being refused once first.
        self._refused_cap: int | None = None
        self._first_pending_seen: float | None = None
        self._read_hint = 1024
        self.reconfigure(conf)

    def reconfigure(self, conf: UplinkConfig) -> None:
        self.conf = conf
        self.topic = conf.topic.format(site=self.site, thing=self.device)
        self.content_type = payload.content_type(conf.encoding)
        self.user_properties: list[tuple[str, str]] = [("encoding", str(conf.encoding))]
        props = sum(len(k.encode()) + len(v.encode()) for k, v in self.user_properties)
        overhead = len(self.topic.encode()) + len(self.content_type.encode()) + props + _PROPERTY_OVERHEAD
        self.max_payload = max(128, conf.batch_max_bytes - overhead)
        self._refused_cap = None
        self._bytes_per_reading = FIRST_BYTES_PER_READING.get(str(conf.encoding), 2.0)  # then as encodes see it
        self.wake.set()

    def notify(self) -> None:
        """New readings were committed (or an alarm arrived): look again."""
        self.wake.set()

    def _reconnected(self, _session_present: bool) -> None:
        """A new connection: what was in flight died with the old one, so rewind now and resend
        from the oldest unacknowledged reading, with no retry wait."""
        self._abandoned |= self._inflight
        self._inflight.clear()
        self.stats.inflight = 0
        self._rewind = True
        self._retry_at = 0.0
        self._failures_in_row = 0
        self.wake.set()

    async def run(self) -> None:
        if not self._hooked:
            self.conn.on_connect(self._reconnected)
            self._hooked = True
        while True:
            await self.conn.connected.wait()
            if self._rewind and not self._inflight:
                self._cursor = 0
                self._ahead.clear()
                self._rewind = False
            # Cleared before looking, so a notify that arrives while we look is not lost.
            self.wake.clear()
            if self._rewind or len(self._inflight) >= self.conf.max_inflight:
                await self._wait(None)
                continue
            hold = self._retry_at - self._clock()
            if hold > 0:
                await self._wait(hold)
                continue
            delay = await self.send_due()
            if delay != 0.0:
                await self._wait(delay)  # None: until woken

    async def _wait(self, timeout: float | None) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives as the wait completes, and this loop would then never stop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wake.wait()

    async def send_due(self) -> float | None:
        """One look at the spool, as ``run`` makes after each wake: send one batch if one is due and
        return 0.0 when another may be due at once, else how long until the pending batch is due
        (None = until woken). Public so a test can step the uplink without its loop."""
        limit = min(MAX_READ, max(256, 2 * self._read_hint))
        budget = min(self.max_payload, self._refused_cap or self.max_payload)
        if len(self._ahead) < limit:
            # Read only what is new since the last look: each reading leaves the spool file once.
            after = self._ahead[-1].seq if self._ahead else self._cursor
            self._ahead += self.spool.read_after(after, limit - len(self._ahead))
        readings = self._ahead[:limit]
        if not readings:
            self._first_pending_seen = None
            return None
        now = self._clock()
        if self._first_pending_seen is None:
            self._first_pending_seen = now
        age = now - self._first_pending_seen
        # The oldest reading may have waited in the spool before this process started.
        wall_age = time.time() - readings[0].ts_ms / 1000
        due = (len(readings) == limit or age >= self.conf.batch_max_age_s or any(r.alarm for r in readings)
               or (readings[0].clock_synced and wall_age >= self.conf.batch_max_age_s))
        # Encoding is most of an uplink's CPU: a batch that is not due and, at the bytes per reading
        # the last encode saw, cannot be near full is not encoded yet. Without this every commit
        # (once a second) re-encoded the whole growing batch: quadratic in the batch age, 44 % of
        # a 500-gateway fleet's CPU. The estimate only decides when to look; fit decides the batch.
        if not due and len(readings) * self._bytes_per_reading < budget / 2:
            return max(0.05, self.conf.batch_max_age_s - age)
        encoded, n = payload.fit(self.device, readings, self.conf.encoding, budget, self.spool.epoch)
        self._bytes_per_reading = max(len(encoded) / n, MIN_BYTES_PER_READING)
        full = n < len(readings) or len(readings) == limit
        if not (due or full):
            return max(0.05, self.conf.batch_max_age_s - age)
        self._read_hint = n
        first, last = readings[0].seq, readings[n - 1].seq
        del self._ahead[:n]
        self._cursor = last
        self._first_pending_seen = now if full else None
        # The task holds the encoded bytes and the range only, not the readings.
        task = asyncio.get_running_loop().create_task(self._publish(first, last, n, encoded))
        self._inflight.add(task)
        self.stats.inflight = len(self._inflight)
        task.add_done_callback(self._done)
        return 0.0 if full else None

    def _done(self, task: asyncio.Task[None]) -> None:
        if task in self._abandoned:
            self._abandoned.discard(task)
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("publish task failed unexpectedly", exc_info=exc)
            return
        self._inflight.discard(task)
        self.stats.inflight = len(self._inflight)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # A bug, not a network problem: say so loudly, and send the readings again rather than
            # leaving them behind the cursor until the next restart.
            log.error("publish task failed unexpectedly", exc_info=exc)
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self._rewind = True
        self.wake.set()

    async def _publish(self, first: int, last: int, count: int, encoded: bytes) -> None:
        try:
            async with asyncio.timeout(self.conf.ack_timeout_s):
                await self.conn.publish(
                    self.topic, encoded, content_type=self.content_type, user_properties=self.user_properties
                )
        except TimeoutError:
            self._failed(first, last, count, len(encoded),
                         PublishError(f"no PUBACK within {self.conf.ack_timeout_s:g} s", offline=True))
            return
        except PublishError as exc:
            self._failed(first, last, count, len(encoded), exc)
            return
        self.spool.ack(first, last)
        self._failures_in_row = 0
        s = self.stats
        s.batches_acked += 1
        s.readings_acked += count
        s.bytes_acked += len(encoded)
        s.last_ack_wall = time.time()
        log.debug("batch acked", extra={"first_seq": first, "last_seq": last, "bytes": len(encoded)})
        if self.on_acked is not None:
            self.on_acked()

    def _failed(self, first: int, last: int, count: int, size: int, exc: PublishError) -> None:
        """Never sleeps: a failed batch leaves the in-flight count at once. The readings stay in the
        spool and are sent again after the rewind."""
        why = str(exc) or type(exc).__name__
        self.stats.failures += 1
        self.stats.last_error = why
        self._rewind = True
        if exc.offline:
            # The link was down or silent: the connection notices and reconnects, and the reconnect
            # rewinds; waiting here as well would only hold readings back once it is up again.
            log.info("batch not acknowledged; will resend", extra={"first_seq": first, "last_seq": last,
                                                                   "error": why})
            return
        self._failures_in_row += 1
        if exc.too_large and count > 1:
            self._refused_cap = max(MIN_PAYLOAD_CAP, size // 2)
            self.stats.splits += 1
            log.warning(
                "batch refused as too large; splitting",
                extra={"first_seq": first, "readings": count, "bytes": size, "new_cap": self._refused_cap},
            )
            return
        log.warning("batch refused by the broker", extra={"first_seq": first, "last_seq": last, "error": why})
        # Full-jitter backoff, capped: a broker that refuses everything is not hammered. A reconnect
        # ends the wait.
        cap = min(self.conf.retry_max_delay_s, 0.5 * 2 ** min(self._failures_in_row, 12))
        self._retry_at = self._clock() + random.uniform(0, cap)

    async def settle(self) -> None:
        """Wait until every batch in flight on this connection was acknowledged or failed."""
        if self._inflight:
            await asyncio.wait(set(self._inflight))

    async def stop(self, grace_s: float = 2.0) -> None:
        """Give in-flight batches a moment to be acknowledged, then cancel (they stay spooled)."""
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=grace_s)
        for t in [*self._inflight, *self._abandoned]:
            t.cancel()
