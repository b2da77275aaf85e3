"""Drivers by name. One explicit table, imported lazily, so importing the registry has no side
effects and a broken optional driver cannot stop the others from loading."""

from __future__ import annotations

import importlib

from drivers.base import Driver, DriverSettings

# name -> "module:Class". Add a line here when adding a driver.
_DRIVERS: dict[str, str] = {
    "simulated": "drivers.simulated:SimulatedDriver",
    "dynament": "drivers.dynament.driver:DynamentDriver",
    "cubic-sjh5": "drivers.cubic.driver:CubicSjh5Driver",
    "inir": "drivers.inir.driver:InirDriver",
    "winsen-mh440d": "drivers.winsen.driver:WinsenMh440dDriver",
    "nmea-gps": "drivers.nmea.driver:NmeaGpsDriver",
    "ads1115-mos": "drivers.ads1115.driver:Ads1115MosDriver",
    "bme280": "drivers.bme280.driver:Bme280Driver",
    "sht31": "drivers.sht31.driver:Sht31Driver",
    "modbus-rtu": "drivers.modbus.driver:ModbusRtuDriver",
}


class UnknownDriverError(KeyError):
    pass


def names() -> list[str]:
    return sorted(_DRIVERS)


def driver_class(name: str) -> type[Driver]:
    try:
        target = _DRIVERS[name]
    except KeyError:
        raise UnknownDriverError(f"unknown driver {name!r}; known: {', '.join(names())}") from None
    module_name, _, class_name = target.partition(":")
    cls: type[Driver] = getattr(importlib.import_module(module_name), class_name)
    return cls


def settings_model(name: str) -> type[DriverSettings]:
    return driver_class(name).Settings


def create(name: str, settings: DriverSettings) -> Driver:
    cls = driver_class(name)
    return cls(settings)  # type: ignore[call-arg]
