"""Kernel network-change events (rtnetlink): a link went up or down, an address or a route came or
went. The agent uses them only as hints to probe the broker now rather than at the next probe tick,
so it does not parse attributes, only message types.

A small AF_NETLINK socket rather than pyroute2: subscribing to four multicast groups and reading
16-byte headers is a dozen lines, while pyroute2 would add a large dependency (and its import cost
to a daemon that should stay small on a Raspberry Pi) for features this does not use."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable

log = logging.getLogger(__name__)

# linux/rtnetlink.h
_RTMGRP_LINK = 0x1
_RTMGRP_IPV4_IFADDR = 0x10
_RTMGRP_IPV4_ROUTE = 0x40
_RTMGRP_IPV6_IFADDR = 0x100
_RTMGRP_IPV6_ROUTE = 0x400
_GROUPS = _RTMGRP_LINK | _RTMGRP_IPV4_IFADDR | _RTMGRP_IPV4_ROUTE | _RTMGRP_IPV6_IFADDR | _RTMGRP_IPV6_ROUTE
_NAMES = {16: "link up/changed", 17: "link removed", 20: "address added", 21: "address removed",
          24: "route added", 25: "route removed"}
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid


def describe(data: bytes) -> list[str]:
    """The event names in one netlink datagram (unknown types and truncated tails are skipped)."""
    out: list[str] = []
    off = 0
    while off + _HEADER.size <= len(data):
        length, kind, _, _, _ = _HEADER.unpack_from(data, off)
        if length < _HEADER.size:
            break
        if kind in _NAMES:
            out.append(_NAMES[kind])
        off += (length + 3) & ~3
    return out


class NetlinkWatch:
    """Calls ``notify(description)`` on the loop for every batch of link/address/route events."""

    name = "netlink"

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop, notify: Callable[[str], None]) -> bool:
        """Returns False (and the agent falls back to the periodic probe) where netlink is missing."""
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
            sock.bind((0, _GROUPS))
        except (OSError, AttributeError) as exc:
            log.info("netlink events unavailable; relying on the reachability probe", extra={"error": str(exc)})
            return False
        self._sock, self._loop = sock, loop

        def readable() -> None:
            events: list[str] = []
            while True:
                try:
                    events += describe(sock.recv(65536))
                except BlockingIOError:
                    break
                except OSError:  # ENOBUFS: we fell behind; something changed, which is all we need
                    events.append("events lost")
                    break
            if events:
                notify(", ".join(sorted(set(events))))

        loop.add_reader(sock.fileno(), readable)
        return True

    def stop(self) -> None:
        if self._sock is not None and self._loop is not None:
            if not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        self._sock = None
