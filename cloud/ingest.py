"""The ingest: one MQTT message in, points in the store out, exactly once per reading.

Shared by the Lambda behind the IoT rule (cloud/lambdas/ingest_handler.py) and the emulator's local
twin (emulator/ingest.py). For a telemetry batch:

1. decode it with the agent's own decoder (``agent.payload``), check that the topic's thing is the
   batch's device and (when a registry is given) a known thing, and read the epoch from the batch id;
2. drop the readings whose (device, epoch, seq) already arrived (the ledger of seq ranges);
3. build every line first (a value InfluxDB cannot take fails here, before anything is written),
   then write the new readings and the batch's ledger point in one request;
4. if the store refuses the request after writing part of it (InfluxDB 1.x "partial write"), delete
   exactly the points this request wrote, so a batch is stored whole or not at all.

Anything refused (undecodable, wrong or unknown device, unwritable, refused by the store) goes to
the dead-letter path whole, with the stage and reason, and the run goes on with the next message.
A store that does not answer raises ``StoreUnavailable``: the caller retries later (nothing is
dead-lettered for an outage)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.payload import PayloadError, decode_columns, sniff
from agent.payload.columns import Columns
from cloud import schema
from cloud.deadletter import DeadLetter, Message, dead_letter_doc
from cloud.influx import InfluxClient, StoreError, StoreRejected, quote_string
from cloud.lineproto import LineProtocolError
from cloud.seqranges import SeqRanges, new_readings

log = logging.getLogger(__name__)

RULES_PREFIX = "$aws/rules/"
KINDS = ("telemetry", "alarm")


@dataclass(frozen=True)
class Topic:
    site: str
    thing: str
    kind: str


def parse_topic(topic: str) -> Topic:
    """``dt/methane/{site}/{thing}/{telemetry|alarm}``, also behind Basic Ingest's
    ``$aws/rules/<rule>/`` prefix."""
    t = topic
    if t.startswith(RULES_PREFIX):
        parts = t.split("/", 3)
        if len(parts) < 4 or not parts[2]:
            raise ValueError(f"topic {topic!r}: Basic Ingest topic without a rule name")
        t = parts[3]
    parts = t.split("/")
    if len(parts) != 5 or parts[:2] != ["dt", "methane"] or not parts[2] or not parts[3] or parts[4] not in KINDS:
        raise ValueError(f"topic {topic!r} is not dt/methane/<site>/<thing>/{{telemetry|alarm}}")
    return Topic(parts[2], parts[3], parts[4])


@dataclass
class IngestResult:
    status: str  # stored | duplicate | dead_letter
    device: str | None = None
    batch_id: str | None = None
    received: int = 0
    duplicates: int = 0
    stage: str | None = None
    reason: str | None = None


class Rejected(Exception):
    """Internal: the message goes to the dead-letter path at ``stage``."""

    def __init__(self, stage: str, reason: str, device: str | None = None) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason
        self.device = device


@dataclass
class Stats:
    batches: int = 0
    readings: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    alarms: int = 0
    by_stage: dict[str, int] = field(default_factory=dict)


class Ingestor:
    """``cache_ledger``: keep each device's seq ranges in memory after the first look-up (one
    writer per store, as in the local twin); off, every batch reads its window from the store (the
    Lambda, where several instances write concurrently)."""

    def __init__(self, client: InfluxClient, deadletter: DeadLetter,
                 known_device: Callable[[str], bool] | None = None,
                 lel_vol_percent: float = schema.DEFAULT_LEL_VOL_PERCENT, cache_ledger: bool = True,
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.client = client
        self.deadletter = deadletter
        self.known_device = known_device
        self.lel_vol_percent = lel_vol_percent
        self.cache_ledger = cache_ledger
        self._clock_ns = clock_ns
        self._ledger: dict[tuple[str, str], SeqRanges] = {}
        self._last_arrival_ns = 0
        self.sites: dict[str, str] = {}  # device -> site, learnt from telemetry topics
        self.stats = Stats()

    # ------------------------------------------------------------ entry points

    def handle(self, msg: Message) -> IngestResult:
        """Dispatch on the topic: telemetry batches and alarm events."""
        try:
            kind = parse_topic(msg.topic).kind
        except ValueError as exc:
            return self._dead_letter(msg, Rejected("topic", str(exc)))
        return self.ingest_alarm(msg) if kind == "alarm" else self.ingest(msg)

    def ingest(self, msg: Message) -> IngestResult:
        try:
            return self._ingest(msg)
        except Rejected as rej:
            return self._dead_letter(msg, rej)

    def ingest_alarm(self, msg: Message) -> IngestResult:
        try:
            topic = self._topic(msg)
            try:
                event = json.loads(msg.payload)
                line = schema.alarm_line(event, topic.site, topic.thing)
            except (ValueError, LineProtocolError) as exc:
                raise Rejected("decode", f"alarm event: {exc}", topic.thing) from None
            self._write([line], list, topic.thing)
        except Rejected as rej:
            return self._dead_letter(msg, rej)
        self.stats.alarms += 1
        return IngestResult("stored", topic.thing, received=1)

    def ingest_status(self, device: str, status: dict[str, Any], site: str | None = None,
                      ns: int | None = None) -> bool:
        """A ``reported.status`` document (fleet health); False when it holds nothing to store."""
        line = schema.status_line(status, site or self.sites.get(device, "unknown"), device,
                                  ns if ns is not None else self._clock_ns())
        if line is None:
            return False
        self.client.write([line])
        return True

    # ------------------------------------------------------------ telemetry

    def _topic(self, msg: Message) -> Topic:
        try:
            topic = parse_topic(msg.topic)
        except ValueError as exc:
            raise Rejected("topic", str(exc)) from None
        if self.known_device is not None and not self.known_device(topic.thing):
            raise Rejected("device", f"unknown device {topic.thing!r}: no such thing in the registry", topic.thing)
        return topic

    def _ingest(self, msg: Message) -> IngestResult:
        topic = self._topic(msg)
        try:
            cols = decode_columns(msg.payload, msg.content_type)
            encoding = sniff(msg.payload)
        except PayloadError as exc:
            raise Rejected("decode", f"undecodable batch: {exc}", topic.thing) from None
        if cols.device != topic.thing:
            raise Rejected("device", f"batch from device {cols.device!r} published on {topic.thing!r}'s topic "
                           f"{msg.topic!r}", cols.device)
        try:
            epoch = schema.epoch_of(cols)
        except LineProtocolError as exc:
            raise Rejected("envelope", str(exc), cols.device) from None
        self.sites[cols.device] = topic.site
        try:
            seen = self._ranges(cols, epoch)
        except (StoreRejected, ValueError) as exc:  # the store refused the look-up, or holds a bad ledger row
            raise Rejected("store", f"ledger look-up failed: {exc}", cols.device) from None
        fresh, keep = new_readings(cols.seqs, seen)
        received = len(fresh)
        duplicates = len(cols) - received
        arrival = self._arrival_ns(msg)
        try:
            lines = schema.reading_lines(cols, topic.site, keep, self.lel_vol_percent) if received else []
            bline, bkey = schema.batch_line(cols, topic.site, epoch, fresh.text(), received, duplicates,
                                            len(msg.payload), encoding, arrival)
        except LineProtocolError as exc:
            raise Rejected("schema", str(exc), cols.device) from None
        lines.append(bline)
        self._write(lines, lambda: [*schema.reading_keys(cols, topic.site, keep), bkey], cols.device)
        seen.update(fresh)
        st = self.stats
        st.batches += 1
        st.readings += received
        st.duplicates += duplicates
        return IngestResult("stored" if received else "duplicate", cols.device, cols.batch_id, received, duplicates)

    def _arrival_ns(self, msg: Message) -> int:
        """Strictly increasing per ingestor: two batches in the same nanosecond stay two points."""
        ns = max(msg.received_ns or self._clock_ns(), self._last_arrival_ns + 1)
        self._last_arrival_ns = ns
        return ns

    def _ranges(self, batch: Columns, epoch: str) -> SeqRanges:
        key = (batch.device, epoch)
        if self.cache_ledger and key in self._ledger:
            return self._ledger[key]
        where = f'"device" = {quote_string(batch.device)} AND "epoch" = {quote_string(epoch)}'
        if not self.cache_ledger:
            where += f' AND "last_seq" >= {batch.first_seq} AND "first_seq" <= {batch.last_seq}'
        ranges = SeqRanges()
        query = f'SELECT "ranges" FROM "{schema.BATCH_MEASUREMENT}" WHERE {where}'  # noqa: S608 - quoted
        for s in self.client.query_one(query):
            for _t, text in s.values:
                ranges.update(SeqRanges.parse(text or ""))
        if self.cache_ledger:
            self._ledger[key] = ranges
        return ranges

    def _write(self, lines: list[str], keys: Callable[[], list[schema.PointKey]], device: str | None) -> None:
        try:
            self.client.write(lines)
        except StoreRejected as exc:
            if exc.partial:
                # Take back what this request wrote: a batch is stored whole or not at all. A
                # failure of the clean-up itself is an outage (StoreUnavailable) and is retried;
                # a refused clean-up is named in the dead letter (its points need deleting by hand).
                try:
                    self.client.delete_points(keys())
                except StoreRejected as again:
                    raise Rejected("store", f"store refused the write: {exc}; and refused deleting its partial "
                                   f"points: {again}", device) from None
            raise Rejected("store", f"store refused the write: {exc}", device) from None

    # ------------------------------------------------------------ dead letters

    def _dead_letter(self, msg: Message, rej: Rejected) -> IngestResult:
        doc = dead_letter_doc(msg, rej.stage, rej.reason, rej.device)
        self.deadletter.put(doc)
        self.stats.dead_letters += 1
        self.stats.by_stage[rej.stage] = self.stats.by_stage.get(rej.stage, 0) + 1
        log.warning("dead-lettered a message", extra={"stage": rej.stage, "reason": rej.reason, "topic": msg.topic})
        self._record_reject(msg, rej)
        return IngestResult("dead_letter", rej.device, stage=rej.stage, reason=rej.reason)

    def _record_reject(self, msg: Message, rej: Rejected) -> None:
        """Also count it in the store, so dashboards and the completeness report show it; the
        dead-letter copy above is what matters, so a store failure here is only logged."""
        try:
            site = parse_topic(msg.topic).site
        except ValueError:
            site = ""
        tag_pairs = {"stage": rej.stage, "device": rej.device or "", "site": site}
        try:
            line = schema.lineproto.line(schema.REJECT_MEASUREMENT, tag_pairs,
                                         {"reason": rej.reason[:1000].replace("\n", " "), "bytes": len(msg.payload)},
                                         self._arrival_ns(msg))
            self.client.write([line])
        except (StoreError, LineProtocolError) as exc:
            log.error("could not count a dead letter in the store", extra={"error": str(exc)})
