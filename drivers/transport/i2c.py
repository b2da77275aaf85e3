"""The shared I2C transport over an smbus2-compatible bus.

Production opens ``smbus2.SMBus(bus)``; tests inject a fake bus object with the same methods (kept
out of the pydantic settings, passed to the driver's constructor). An I/O error closes a bus we
opened ourselves, so the next read reopens it after a backoff (a hat reseated, a bus reset).
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import Field

from drivers.backoff import Backoff
from drivers.base import DriverError, DriverSettings


class I2CBus(Protocol):
    def read_i2c_block_data(
        self, i2c_addr: int, register: int, length: int, force: bool | None = None
    ) -> list[int]: ...

    def write_i2c_block_data(
        self, i2c_addr: int, register: int, data: list[int], force: bool | None = None
    ) -> None: ...

    def i2c_rdwr(self, *i2c_msgs: Any) -> None: ...

    def close(self) -> None: ...


class I2CSettings(DriverSettings):
    bus: int = Field(1, ge=0, le=255, description="I2C bus number: /dev/i2c-N (Raspberry Pi header: 1)")
    timeout_s: float = Field(0.5, gt=0, le=10, description="how long to wait for a conversion to finish")
    reconnect_min_s: float = Field(0.5, gt=0, le=60, description="first delay before reopening a failed bus")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="cap of the reopen backoff")


class I2CDevice:
    def __init__(self, settings: I2CSettings, address: int, bus: I2CBus | None = None) -> None:
        self.address = address
        self._bus_no = settings.bus
        self._injected = bus
        self._bus: I2CBus | None = bus
        self.backoff = Backoff(settings.reconnect_min_s, max(settings.reconnect_min_s, settings.reconnect_max_s))

    def _ensure(self) -> I2CBus:
        if self._bus is not None:
            return self._bus
        if not self.backoff.ready():
            raise DriverError("bus_unavailable", f"i2c-{self._bus_no}: retry in {self.backoff.remaining_s():.1f}s")
        import smbus2  # imported here so tests with a fake bus never need /dev/i2c-*

        try:
            self._bus = smbus2.SMBus(self._bus_no)
        except OSError as exc:
            delay = self.backoff.failure()
            raise DriverError("bus_unavailable", f"i2c-{self._bus_no}: {exc}; retry in {delay:.1f}s") from exc
        self.backoff.success()
        return self._bus

    def _failed(self, what: str, exc: OSError) -> DriverError:
        if self._injected is None:
            self.close()
            self.backoff.failure()
        return DriverError("i2c_error", f"i2c-{self._bus_no} 0x{self.address:02x} {what}: {exc}")

    def read(self, register: int, length: int) -> bytes:
        bus = self._ensure()
        try:
            return bytes(bus.read_i2c_block_data(self.address, register, length))
        except OSError as exc:
            raise self._failed(f"read 0x{register:02x}", exc) from exc

    def write(self, register: int, data: bytes) -> None:
        bus = self._ensure()
        try:
            bus.write_i2c_block_data(self.address, register, list(data))
        except OSError as exc:
            raise self._failed(f"write 0x{register:02x}", exc) from exc

    def raw_write(self, data: bytes) -> None:
        """A plain I2C write with no register byte (chips with 16-bit commands, e.g. SHT3x)."""
        import smbus2

        bus = self._ensure()
        try:
            bus.i2c_rdwr(smbus2.i2c_msg.write(self.address, list(data)))
        except OSError as exc:
            raise self._failed("raw write", exc) from exc

    def raw_read(self, length: int) -> bytes:
        """A plain I2C read; a chip that is still busy NACKs it, which surfaces as DriverError."""
        import smbus2

        bus = self._ensure()
        msg = smbus2.i2c_msg.read(self.address, length)
        try:
            bus.i2c_rdwr(msg)
        except OSError as exc:
            raise self._failed("raw read", exc) from exc
        return bytes(msg)

    def close(self) -> None:
        bus, self._bus = self._bus, None
        if self._injected is not None:
            self._bus = self._injected
            return
        if bus is not None:
            bus.close()
