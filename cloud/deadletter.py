"""Where a message the ingest cannot store goes, whole and with its reason, so nothing is lost and
an operator can see why and replay it after a fix (``cloud/README.md``). The local twin keeps one
JSON file per message in a folder; the Lambda sends the same document to an SQS queue
(cloud/lambdas/aws.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    """One MQTT message as the rules engine (or the emulator's subscription) hands it over."""

    topic: str
    payload: bytes
    content_type: str | None = None
    received_ns: int = 0


def dead_letter_doc(msg: Message, stage: str, reason: str, device: str | None = None) -> dict[str, Any]:
    return {
        "stage": stage,
        "reason": reason,
        "device": device,
        "topic": msg.topic,
        "content_type": msg.content_type,
        "received_ns": msg.received_ns,
        "bytes": len(msg.payload),
        "sha256": hashlib.sha256(msg.payload).hexdigest(),
        "payload_b64": base64.b64encode(msg.payload).decode(),
    }


def message_of(doc: dict[str, Any]) -> Message:
    """The original message back from a dead-letter document (for a replay)."""
    return Message(str(doc["topic"]), base64.b64decode(doc["payload_b64"]), doc.get("content_type"),
                   int(doc.get("received_ns") or 0))


class DeadLetter(Protocol):
    def put(self, doc: dict[str, Any]) -> None: ...


class DirDeadLetter:
    """One file per message, written atomically (tmp + rename) so a reader never sees half."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def put(self, doc: dict[str, Any]) -> None:
        name = f"{doc['received_ns']:020d}-{doc['sha256'][:16]}.json"
        tmp = self.folder / f".{name}.tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / name)

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.folder.glob("*.json")):
            out.append(json.loads(p.read_text()))
        return out
