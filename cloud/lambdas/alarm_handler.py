"""The alarm Lambda behind the IoT rule ``methane_alarm`` on ``dt/methane/+/+/alarm`` (issue 12's
event JSON: ``type``, ``level``, ``sensor_id``, ``quantity``, ``value``, ``threshold``, ``ts_ms``,
``seq``). Rule SQL: ``SELECT *, topic() AS topic, timestamp() AS received_ms``.

It pages first (SNS: an e-mail / SMS subscriber reads the subject), then stores the event in the
time-series store for the dashboard's alarm annotations. A malformed event is dead-lettered and
still paged as "unreadable alarm event", because a gas detector that tried to say something must
not go unheard; an SNS failure raises (Lambda retries, then the on-failure destination)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from cloud.deadletter import Message
from cloud.ingest import Ingestor, parse_topic
from cloud.lambdas import aws
from cloud.schema import ALARM_TYPES

log = logging.getLogger(__name__)
META_KEYS = ("topic", "received_ms")
SUBJECT_MAX = 100  # SNS subject limit


@dataclass
class Deps:
    ingestor: Ingestor
    sns: Any
    topic_arn: str


_deps: Deps | None = None


def build() -> Deps:
    ingestor = Ingestor(aws.influx_client(), aws.SqsDeadLetter(aws.client("sqs"), aws.env("DEAD_LETTER_QUEUE_URL")),
                        cache_ledger=False)
    return Deps(ingestor, aws.client("sns"), aws.env("ALARM_TOPIC_ARN"))


def render(event: dict[str, Any], site: str, thing: str) -> tuple[str, str]:
    """The page: a subject a phone shows, and a body with everything the event said."""
    kind = event.get("type")
    level = str(event.get("level", "?")).upper()
    sensor = event.get("sensor_id", "?")
    value, threshold = event.get("value"), event.get("threshold")
    if kind not in ALARM_TYPES:
        subject = f"Methane {thing}: unreadable alarm event"
    elif kind == "fault":
        subject = f"Methane FAULT {site}/{thing} {sensor}: detector not measuring"
    else:
        subject = f"Methane {level} {kind} {site}/{thing} {sensor}: {value} (threshold {threshold})"
    when = event.get("ts_ms")
    stamp = datetime.fromtimestamp(when / 1000, UTC).isoformat() if isinstance(when, int | float) else "unknown"
    body = "\n".join([subject, "", f"site: {site}", f"device: {thing}", f"time (UTC): {stamp}", "",
                      json.dumps(event, indent=2, sort_keys=True)])
    return subject[:SUBJECT_MAX], body


def handler(event: dict[str, Any], context: Any = None, deps: Deps | None = None) -> dict[str, Any]:
    global _deps
    if deps is None:
        _deps = _deps or build()
        deps = _deps
    topic = str(event.get("topic") or "")
    received_ms = int(event.get("received_ms") or 0)
    body_doc = {k: v for k, v in event.items() if k not in META_KEYS}
    try:
        where = parse_topic(topic)
        site, thing = where.site, where.thing
    except ValueError:
        site, thing = "?", "?"
    subject, text = render(body_doc, site, thing)
    deps.sns.publish(TopicArn=deps.topic_arn, Subject=subject, Message=text,
                     MessageAttributes={"level": {"DataType": "String", "StringValue": str(body_doc.get("level", "?"))},
                                        "site": {"DataType": "String", "StringValue": site}})
    msg = Message(topic, json.dumps(body_doc, sort_keys=True).encode(), "application/json", received_ms * 1_000_000)
    result = deps.ingestor.ingest_alarm(msg)
    log.info("alarm paged", extra={"subject": subject, "result": asdict(result)})
    return {"paged": subject, **asdict(result)}
