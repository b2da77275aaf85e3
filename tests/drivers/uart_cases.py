"""One row per UART driver: how to build its emulator and driver, and what a good read returns.
The fault tests run every row, so a new UART driver gets the whole fault matrix by adding a row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.base import Driver
from tests.devices.cubic import CubicDevice
from tests.devices.dynament import DynamentDevice
from tests.devices.inir import InirDevice
from tests.devices.modbus_rtu import ModbusRtuDevice
from tests.devices.nmea import NmeaDevice
from tests.devices.pty_host import EmulatedDevice
from tests.devices.winsen import WinsenDevice

# timeout_s: long enough that a loaded CI machine (pytest -n 2 beside broker tests) still gets a
# whole frame in time; only the "silent device" cases wait it out.
FAST = {"timeout_s": 1.0, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}


@dataclass
class UartCase:
    name: str
    device: Callable[[], EmulatedDevice]
    driver: Callable[[str], Driver]
    quantity: str
    expected: float
    has_nak: bool = True
    resyncs: bool = True  # finds a reply behind line noise
    kinds: dict[str, str] | None = None  # fault name -> error kind, where a driver differs


def _dynament(port: str) -> Any:
    from drivers.dynament.driver import DynamentDriver, DynamentSettings

    return DynamentDriver(DynamentSettings(port=port, unit="%vol", warmup_s=0, **FAST))


def _cubic(port: str) -> Any:
    from drivers.cubic.driver import CubicSettings, CubicSjh5Driver

    return CubicSjh5Driver(CubicSettings(port=port, warmup_s=0, **FAST))


def _winsen(port: str) -> Any:
    from drivers.winsen.driver import WinsenMh440dDriver, WinsenSettings

    return WinsenMh440dDriver(WinsenSettings(port=port, scale=10.0, unit="ppm", warmup_s=0, **FAST))


def _inir(port: str) -> Any:
    from drivers.inir.driver import InirDriver, InirSettings

    return InirDriver(InirSettings(port=port, mode="on_demand", warmup_s=0, **FAST))


def _nmea(port: str) -> Any:
    from drivers.nmea.driver import NmeaGpsDriver, NmeaSettings

    return NmeaGpsDriver(NmeaSettings(port=port, **FAST))


def _modbus(port: str) -> Any:
    from drivers.modbus.driver import ModbusRtuDriver, ModbusSettings

    return ModbusRtuDriver(ModbusSettings(port=port, value_register=40001, address_offset=40001, **FAST))


CASES: list[UartCase] = [
    UartCase("dynament", lambda: DynamentDevice(reading=2.5), _dynament, "methane", 25_000.0),
    UartCase("cubic-sjh5", lambda: CubicDevice(percent_vol=1.23), _cubic, "methane", 12_300.0),
    UartCase("winsen-mh440d", lambda: WinsenDevice(raw=608), _winsen, "methane", 6080.0, has_nak=False),
    UartCase("inir", lambda: InirDevice(ppm=10_000, streaming=False), _inir, "methane", 10_000.0),
    # pymodbus drops frames whose CRC fails (and noise) and keeps waiting, so both end as a timeout; its RTU
    # framer relies on inter-frame silence and does not hunt for a reply behind noise.
    UartCase("modbus-rtu", lambda: ModbusRtuDevice(holding={0: 500}), _modbus, "methane", 500.0,
             resyncs=False, kinds={"bad_checksum": "timeout", "garbage": "timeout"}),
    UartCase("nmea-gps", lambda: NmeaDevice(lat=-33.8688), _nmea, "latitude", -33.8688, has_nak=False),
]
