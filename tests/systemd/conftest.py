"""A real sd_notify receiver: an AF_UNIX datagram socket bound where systemd would put one."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.eventually import eventually


@dataclass
class NotifySocket:
    path: str
    sock: socket.socket
    received: list[str] = field(default_factory=list)

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return self.received
            self.received.append(data.decode())

    def wait_for(self, predicate, timeout: float = 10.0) -> list[str]:
        """Poll until ``predicate(messages)`` holds; fail with what did arrive."""
        eventually(lambda: predicate(self.drain()), timeout, 0.02, what=lambda: f"received: {self.received!r}")
        return self.received

    def assignments(self) -> list[dict[str, str]]:
        out = []
        for msg in self.drain():
            out.append(dict(line.split("=", 1) for line in msg.split("\n") if line))
        return out


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    # sun_path is limited to 108 bytes: pytest's tmp_path can be longer, so use a short dir in /tmp.
    d = tempfile.mkdtemp(prefix="ntf-", dir="/tmp")
    path = os.path.join(d, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
    s.bind(path)
    try:
        yield NotifySocket(path, s)
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)
