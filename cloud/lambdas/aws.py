"""The AWS side of the handlers: the dead-letter queue, the raw-batch archive, the last-seen table,
the thing registry check and the store's token, each a small class over a boto3 client. Environment
(set by cloud/template.yaml):

| variable | meaning |
|---|---|
| `INFLUX_URL`, `INFLUX_DATABASE` | the store's v1 API base URL and database (bucket, mapped by DBRP) |
| `INFLUX_TOKEN_SECRET_ARN` | secret holding the API token (plain, or JSON with `token`); empty = no auth |
| `DEAD_LETTER_QUEUE_URL` | SQS queue for messages the ingest cannot store |
| `ARCHIVE_BUCKET` | S3 bucket for every raw batch, keyed by batch id |
| `LAST_SEEN_TABLE` | DynamoDB table `device` -> `last_seen_ms`, `site` (the silence check reads it) |
| `CHECK_REGISTRY` | `true`: a batch from a thing missing in the IoT registry is dead-lettered |
| `LEL_VOL_PERCENT` | LEL basis for the derived `lel_pct` field (default 5.0) |
| `ALARM_TOPIC_ARN` | SNS topic the alarm handler publishes to |
| `SILENT_AFTER_S`, `METRIC_NAMESPACE` | the silence check's threshold and CloudWatch namespace |
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

from cloud.influx import InfluxClient

CLIENT_CONFIG = {"connect_timeout": 2.0, "read_timeout": 5.0, "retries": {"max_attempts": 3, "mode": "standard"}}


def client(service: str) -> Any:
    import boto3  # provided by the Lambda runtime; a dev dependency here
    from botocore.config import Config

    return boto3.client(service, config=Config(**CLIENT_CONFIG))


def env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"environment variable {name} is not set (see cloud/template.yaml)")
    return value


def influx_client(secrets: Any | None = None) -> InfluxClient:
    token = None
    arn = env("INFLUX_TOKEN_SECRET_ARN", "")
    if arn:
        raw = (secrets or client("secretsmanager")).get_secret_value(SecretId=arn)["SecretString"]
        try:
            doc = json.loads(raw)
            token = str(doc["token"]) if isinstance(doc, dict) else raw
        except ValueError:
            token = raw.strip()
    return InfluxClient(env("INFLUX_URL"), env("INFLUX_DATABASE", "methane"), token=token)


class SqsDeadLetter:
    """The dead-letter document as one SQS message (stage and device also as attributes, so an
    operator can filter in the console). SQS takes 256 KiB; IoT Core's 128 KB payload in base64
    (~171 KB) plus the reason fits."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url

    def put(self, doc: dict[str, Any]) -> None:
        attrs = {"stage": {"DataType": "String", "StringValue": str(doc["stage"])}}
        if doc.get("device"):
            attrs["device"] = {"DataType": "String", "StringValue": str(doc["device"])}
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(doc, sort_keys=True),
                              MessageAttributes=attrs)


_UNSAFE = re.compile(r"[^A-Za-z0-9!_.*'()/:=-]")


def archive_key(batch_id: str | None, sha256: str, encoding: str | None) -> str:
    """``raw/<device>/<epoch>/<first>-<last>.<encoding>`` from the batch id (a resend overwrites the
    same key with the same bytes: idempotent), or ``undecodable/<sha256>`` for a payload without one."""
    if batch_id is None:
        return f"undecodable/{sha256}"
    device, _, rest = batch_id.partition("/")
    epoch, _, rng = rest.rpartition(":")
    key = f"raw/{device}/{epoch or 'none'}/{rng}.{encoding or 'bin'}"
    return _UNSAFE.sub("_", key)


class S3Archive:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def put(self, key: str, payload: bytes, metadata: dict[str, str]) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=payload, Metadata=metadata)


class LastSeen:
    """``device`` -> newest ``last_seen_ms`` (a conditional update never moves it backwards, so
    out-of-order Lambda invocations are harmless)."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self.db = dynamodb
        self.table = table

    def touch(self, device: str, site: str, ms: int) -> None:
        from botocore.exceptions import ClientError

        try:
            self.db.update_item(
                TableName=self.table, Key={"device": {"S": device}},
                UpdateExpression="SET last_seen_ms = :t, site = :s",
                ConditionExpression="attribute_not_exists(last_seen_ms) OR last_seen_ms < :t",
                ExpressionAttributeValues={":t": {"N": str(ms)}, ":s": {"S": site}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def all(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.db.get_paginator("scan").paginate(TableName=self.table):
            for item in page.get("Items", []):
                out.append({"device": item["device"]["S"], "last_seen_ms": int(item["last_seen_ms"]["N"]),
                            "site": item.get("site", {}).get("S", "")})
        return out


class ThingRegistry:
    """Is this thing in the IoT registry? Answers are cached for ``ttl_s`` per Lambda instance."""

    def __init__(self, iot: Any, ttl_s: float = 300.0) -> None:
        self.iot = iot
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[bool, float]] = {}

    def __call__(self, thing: str) -> bool:
        from botocore.exceptions import ClientError

        hit = self._cache.get(thing)
        if hit is not None and time.monotonic() - hit[1] < self.ttl_s:
            return hit[0]
        try:
            self.iot.describe_thing(thingName=thing)
            known = True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            known = False
        self._cache[thing] = (known, time.monotonic())
        return known


def flag(name: str) -> bool:
    return env(name, "false").strip().lower() in ("1", "true", "yes")
