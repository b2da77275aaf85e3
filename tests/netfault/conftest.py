"""Fixtures for the link-fault tests: a fresh pair of network namespaces per test (removed even when
the test fails), the emulator in one of them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.netfault.harness import EmulatorInNs, NetFault, Unavailable


@pytest.fixture
def net() -> Iterator[NetFault]:
    fault = NetFault()
    try:
        fault.open()
    except Unavailable as exc:
        pytest.skip(f"network namespaces / tc BPF drop filter unavailable: {exc}")
    try:
        yield fault
    finally:
        fault.close()


@pytest.fixture
def emu(net, tmp_path) -> Iterator[EmulatorInNs]:
    e = EmulatorInNs(net, tmp_path / "emulator", tmp_path / "emulator.log").start()
    try:
        yield e
    finally:
        e.stop()
