"""One row per UART driver: how to build its emulator and driver, and what a good read returns.
The fault tests run every row, so a new UART driver gets the whole fault matrix by adding a row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.base import Driver
from tests.devices.dynament import DynamentDevice
from tests.devices.pty_host import EmulatedDevice

FAST = {"timeout_s": 0.4, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}


@dataclass
class UartCase:
    name: str
    device: Callable[[], EmulatedDevice]
    driver: Callable[[str], Driver]
    quantity: str
    expected: float
    has_nak: bool = True


def _dynament(port: str) -> Any:
    from drivers.dynament.driver import DynamentDriver, DynamentSettings

    return DynamentDriver(DynamentSettings(port=port, unit="%vol", warmup_s=0, **FAST))


CASES: list[UartCase] = [
    UartCase("dynament", lambda: DynamentDevice(reading=2.5), _dynament, "methane", 25_000.0),
]
