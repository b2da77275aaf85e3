"""The one message type every service returns, so services stay pure and the runner alone
decides how a message reaches the broker."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outgoing:
    """A message a service wants published.

    ``direct`` marks replies that IoT Core delivers straight to the requesting connection without
    a subscription (Jobs accepted/rejected); the runner decides how to honour it.
    """

    topic: str
    payload: bytes
    direct: bool = False

    def json(self) -> Any:
        return json.loads(self.payload)


def encode(doc: Any) -> bytes:
    """Compact UTF-8 JSON, as IoT Core sends it."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
