from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from drivers.base import DriverError
from tests.devices.pty_host import EmulatedDevice, PtyHost
from tests.eventually import eventually as shared_eventually

T = TypeVar("T")


@pytest.fixture
def pty_factory(tmp_path: Path) -> Iterator[Callable[[EmulatedDevice], PtyHost]]:
    hosts: list[PtyHost] = []

    def make(device: EmulatedDevice) -> PtyHost:
        host = PtyHost(device, link=tmp_path / f"tty{len(hosts)}").start()
        hosts.append(host)
        return host

    yield make
    for h in hosts:
        h.stop()


def eventually(fn: Callable[[], T], timeout_s: float = 10.0) -> tuple[T, list[BaseException]]:
    """Call ``fn`` until it stops raising DriverError; returns its value and the errors seen on the way."""
    errors: list[BaseException] = []
    value = shared_eventually(lambda: (fn(),), timeout_s, 0.02, retry_on=(DriverError,), errors=errors)
    return value[0], errors
