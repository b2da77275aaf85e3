"""The local twin of the cloud side (``emulator serve --ingest``, ``make demo``): a private influxd
with its data under the emulator's state dir, and the same ingest code the Lambda runs
(``cloud/ingest.py``) fed by an ``admin`` subscription, as the IoT rules feed the Lambda in AWS.

It subscribes to telemetry (both encodings, and Basic Ingest's ``$aws/rules/...``), the alarm topic,
and the shadow ``/update/documents`` (the fleet-health numbers in ``reported.status``). Undecodable or
foreign messages go to ``<state_dir>/ingest/deadletter/``; a store that stops answering is retried
with backoff while messages queue (none is dropped). It adds
``"ingest": {"influx_url": ..., "database": ...}`` to ``emulator.json``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from cloud.deadletter import DirDeadLetter, Message
from cloud.influx import InfluxClient, StoreRejected, StoreUnavailable
from cloud.ingest import Ingestor
from cloud.lineproto import LineProtocolError
from cloud.localstore import LocalInflux, LocalStoreError
from emulator.pki import write_public
from emulator.registry import Registry
from emulator.state import STATE_FILE, EmulatorInfo
from emulator.subscriber import Item, QueuedSubscriber, SubscriberError

log = logging.getLogger(__name__)

DATABASE = "methane"
INGEST_DIR = "ingest"
TOPICS = (
    "dt/methane/+/+/telemetry",
    "$aws/rules/+/#",
    "dt/methane/+/+/alarm",
    "$aws/things/+/shadow/update/documents",
    "$aws/things/+/shadow/name/+/update/documents",
)
RETRY_MAX_S = 5.0


class IngestError(SubscriberError):
    """The local ingest could not start."""


class LocalIngest(QueuedSubscriber):
    topics = TOPICS
    name = "ingest"
    error = IngestError

    def __init__(self, data_dir: Path | None = None, port: int | None = None) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.port = port
        self.server: LocalInflux | None = None
        self.client: InfluxClient | None = None
        self.ingestor: Ingestor | None = None
        self.deadletter: DirDeadLetter | None = None
        self._registry: Registry | None = None

    def prepare(self, info: EmulatorInfo) -> None:
        base = self.data_dir or info.state_dir / INGEST_DIR
        self.server = LocalInflux(base / "influxdb", self.port)
        try:
            self.server.start()
        except LocalStoreError as exc:
            raise IngestError(f"local InfluxDB did not start: {exc}") from None
        self.client = InfluxClient(self.server.url, DATABASE)
        self.client.create_database()
        self.deadletter = DirDeadLetter(base / "deadletter")
        known = None
        if info.authz_plugin:  # fleet provisioning: the registry knows which things exist
            self._registry = Registry(info.state_dir / "registry")
            registry = self._registry
            known = lambda thing: registry.thing(thing) is not None  # noqa: E731
        self.ingestor = Ingestor(self.client, self.deadletter, known_device=known)
        _advertise(info.state_dir, self.server.url)

    def handle(self, item: Item) -> None:
        topic, payload, content_type, received_at = item
        delay = 0.1
        while True:
            try:
                self._handle(topic, payload, content_type, received_at)
                return
            except StoreUnavailable as exc:
                if self.stopping:
                    log.error("local store unavailable at shutdown; message not stored", extra={"topic": topic})
                    return
                log.warning("local store unavailable, retrying", extra={"error": str(exc), "delay_s": delay})
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    def _handle(self, topic: str, payload: bytes, content_type: str | None, received_at: float) -> None:
        assert self.ingestor is not None
        if topic.startswith("$aws/things/"):
            self._status(topic, payload)
            return
        self.ingestor.handle(Message(topic, payload, content_type, int(received_at * 1e9)))

    def _status(self, topic: str, payload: bytes) -> None:
        """Fleet health from a shadow's ``/update/documents``: ``current.state.reported.status``."""
        assert self.ingestor is not None
        thing = topic.split("/")[2]
        try:
            doc = json.loads(payload)
            current = doc["current"]
            status = current["state"]["reported"]["status"]
            ts = int(doc.get("timestamp") or time.time())
        except (ValueError, KeyError, TypeError):
            return  # a shadow without a status report (or another named shadow) is not fleet health
        if isinstance(status, dict):
            try:
                self.ingestor.ingest_status(thing, status, _site(current), ts * 1_000_000_000)
            except (StoreRejected, LineProtocolError) as exc:  # fleet health is best effort; never stop the worker
                log.warning("status report not stored", extra={"thing": thing, "error": str(exc)})

    def stats(self) -> dict[str, Any]:
        return vars(self.ingestor.stats) if self.ingestor else {}

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
        if self.server is not None:
            self.server.stop()


def _site(current: dict[str, Any]) -> str | None:
    """``state.reported.config.device.site_id`` when the device reports its config."""
    node: Any = current
    for key in ("state", "reported", "config", "device", "site_id"):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, str) and node else None


def _advertise(state_dir: Path, url: str) -> None:
    """Add the pinned ``"ingest"`` key to emulator.json (other keys untouched)."""
    path = state_dir / STATE_FILE
    doc = json.loads(path.read_text())
    doc["ingest"] = {"influx_url": url, "database": DATABASE}
    write_public(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
