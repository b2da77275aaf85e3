"""The ingest Lambda behind the IoT rules ``methane_ingest`` (telemetry, both encodings, also as
Basic Ingest on ``$aws/rules/methane_ingest/...``) and ``methane_status`` (shadow documents).

Rules SQL cannot read a compact (binary) batch and the Lambda action does not take binary, so the
rule wraps it: ``SELECT encode(*, 'base64') AS data, topic() AS topic, timestamp() AS received_ms``.
The handler archives the raw bytes to S3 under the batch id (a resend overwrites the same object
with the same bytes), runs the shared ingest (``cloud/ingest.py``: de-duplicate, write whole or not
at all, dead-letter to SQS with the reason) and stamps the device's last-seen time for the silence
check. A store outage raises, so Lambda's asynchronous retries (and then the function's on-failure
destination, the same dead-letter queue) take over; nothing is acknowledged that was not stored."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from agent.payload import PayloadError, decode_columns, sniff
from cloud.deadletter import Message, dead_letter_doc
from cloud.ingest import Ingestor, parse_topic
from cloud.lambdas import aws
from cloud.schema import DEFAULT_LEL_VOL_PERCENT

log = logging.getLogger(__name__)


@dataclass
class Deps:
    ingestor: Ingestor
    archive: aws.S3Archive
    last_seen: aws.LastSeen


_deps: Deps | None = None


def build() -> Deps:
    """From the environment (cloud/lambdas/aws.py lists the variables)."""
    sqs = aws.client("sqs")
    known = aws.ThingRegistry(aws.client("iot")) if aws.flag("CHECK_REGISTRY") else None
    ingestor = Ingestor(aws.influx_client(), aws.SqsDeadLetter(sqs, aws.env("DEAD_LETTER_QUEUE_URL")),
                        known_device=known, cache_ledger=False,
                        lel_vol_percent=float(aws.env("LEL_VOL_PERCENT", str(DEFAULT_LEL_VOL_PERCENT))))
    return Deps(ingestor, aws.S3Archive(aws.client("s3"), aws.env("ARCHIVE_BUCKET")),
                aws.LastSeen(aws.client("dynamodb"), aws.env("LAST_SEEN_TABLE")))


def handler(event: dict[str, Any], context: Any = None, deps: Deps | None = None) -> dict[str, Any]:
    global _deps
    if deps is None:
        _deps = _deps or build()
        deps = _deps
    if "status" in event:
        return _status(event, deps)
    topic = str(event.get("topic") or "")
    received_ms = int(event.get("received_ms") or 0)
    try:
        raw = base64.b64decode(str(event["data"]), validate=True)
    except (KeyError, binascii.Error, ValueError) as exc:
        # Not what the rule sends: keep the whole event as the payload so nothing is lost.
        msg = Message(topic, json.dumps(event, sort_keys=True).encode(), None, received_ms * 1_000_000)
        deps.ingestor.deadletter.put(dead_letter_doc(msg, "event", f"rule event without base64 'data': {exc}"))
        return {"status": "dead_letter", "stage": "event"}
    msg = Message(topic, raw, None, received_ms * 1_000_000)
    _archive(deps, msg)
    result = deps.ingestor.handle(msg)
    if result.status != "dead_letter" and result.device:
        deps.last_seen.touch(result.device, parse_topic(topic).site, received_ms)
    log.info("ingested", extra={"result": asdict(result)})
    return asdict(result)


def _archive(deps: Deps, msg: Message) -> None:
    digest = hashlib.sha256(msg.payload).hexdigest()
    try:  # columns: the batch id without building an object per reading (the ingest decodes again)
        batch_id: str | None = decode_columns(msg.payload).batch_id
        encoding: str | None = sniff(msg.payload)
    except PayloadError:
        batch_id = encoding = None
    deps.archive.put(aws.archive_key(batch_id, digest, encoding), msg.payload,
                     {"topic": msg.topic[:512], "sha256": digest, "received-ms": str(msg.received_ns // 1_000_000)})


def _status(event: dict[str, Any], deps: Deps) -> dict[str, Any]:
    """``SELECT current.state.reported.status AS status, topic(3) AS thing, timestamp() AS received_ms``."""
    thing = str(event.get("thing") or "")
    status = event.get("status")
    if not thing or not isinstance(status, dict):
        return {"status": "ignored"}
    stored = deps.ingestor.ingest_status(thing, status, event.get("site") or None,
                                         int(event.get("received_ms") or 0) * 1_000_000 or None)
    return {"status": "stored" if stored else "ignored", "device": thing}
