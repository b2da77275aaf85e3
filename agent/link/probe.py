"""Is the broker's host reachable right now? One TCP connect (no TLS, no MQTT: no CONNECT is
billed, no client id is taken over), closed at once."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Reach = Literal["reachable", "refused", "unreachable"]


async def probe(host: str, port: int, timeout_s: float) -> Reach:
    """``reachable``: the handshake completed. ``refused``: the host answered with a reset (the
    network works, nothing listens). ``unreachable``: no answer in time, no route, no DNS."""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return "refused"
    except (OSError, TimeoutError):
        return "unreachable"
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    return "reachable"
