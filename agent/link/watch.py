"""Sources of "the network may have changed" hints. A hint only makes the connection probe the
broker now instead of at the next probe tick; the probe decides. Add a source by implementing
``NetworkWatch`` and registering it in ``WATCHES`` (and in ``connection.network_events``); see
README.md for a ModemManager (D-Bus) source."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from agent.link.netlink import NetlinkWatch


class NetworkWatch(Protocol):
    name: str

    def start(self, loop: asyncio.AbstractEventLoop, notify: Callable[[str], None]) -> bool:
        """Begin calling ``notify(description)`` on the loop; False when unavailable here."""
        ...

    def stop(self) -> None: ...


WATCHES: dict[str, Callable[[], NetworkWatch]] = {"netlink": NetlinkWatch}
