from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from drivers.base import DriverError
from tests.devices.pty_host import EmulatedDevice, PtyHost

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


def eventually(fn: Callable[[], T], timeout_s: float = 10.0) -> tuple[T, list[DriverError]]:
    """Call ``fn`` until it stops raising DriverError; returns its value and the errors seen on the way."""
    deadline = time.monotonic() + timeout_s
    errors: list[DriverError] = []
    while True:
        try:
            return fn(), errors
        except DriverError as exc:
            errors.append(exc)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
