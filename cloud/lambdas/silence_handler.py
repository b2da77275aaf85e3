"""The silence check, run every few minutes by an EventBridge schedule: a gateway that stays
connected but sends nothing raises no IoT lifecycle event, so the ingest stamps each device's
last-seen time in DynamoDB and this function counts the devices silent for longer than
``SILENT_AFTER_S``. It publishes ``SilentDevices`` (and ``ReportingDevices``) to CloudWatch, where
one alarm (``TreatMissingData: breaching``, so a dead checker also alarms) pages through SNS,
and returns the silent devices (also in the log) so the page can be followed up."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from cloud.lambdas import aws

log = logging.getLogger(__name__)
DEFAULT_SILENT_AFTER_S = 900
DEFAULT_NAMESPACE = "MethaneAgent"


@dataclass
class Deps:
    last_seen: aws.LastSeen
    cloudwatch: Any
    namespace: str
    silent_after_s: float


_deps: Deps | None = None


def build() -> Deps:
    return Deps(aws.LastSeen(aws.client("dynamodb"), aws.env("LAST_SEEN_TABLE")), aws.client("cloudwatch"),
                aws.env("METRIC_NAMESPACE", DEFAULT_NAMESPACE),
                float(aws.env("SILENT_AFTER_S", str(DEFAULT_SILENT_AFTER_S))))


def handler(event: dict[str, Any] | None = None, context: Any = None, deps: Deps | None = None,
            now_ms: int | None = None) -> dict[str, Any]:
    global _deps
    if deps is None:
        _deps = _deps or build()
        deps = _deps
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    cutoff = now_ms - int(deps.silent_after_s * 1000)
    devices = deps.last_seen.all()
    silent = sorted((d for d in devices if d["last_seen_ms"] < cutoff), key=lambda d: d["last_seen_ms"])
    deps.cloudwatch.put_metric_data(Namespace=deps.namespace, MetricData=[
        {"MetricName": "SilentDevices", "Value": len(silent), "Unit": "Count"},
        {"MetricName": "ReportingDevices", "Value": len(devices) - len(silent), "Unit": "Count"},
    ])
    out = [{"device": d["device"], "site": d["site"], "silent_s": round((now_ms - d["last_seen_ms"]) / 1000)}
           for d in silent]
    if out:
        log.warning("devices silent", extra={"silent": out})
    return {"devices": len(devices), "silent": out}
