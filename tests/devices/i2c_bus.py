"""An smbus2-compatible fake bus: chips by address, each with ``write(bytes)`` and ``read(n)`` like
the raw I2C transfers (a register read is "write the pointer, then read"). A missing chip raises
OSError 121 (EREMOTEIO), as the kernel driver does when nobody ACKs the address."""

from __future__ import annotations

import errno
import os
from typing import Any, Protocol


class Chip(Protocol):
    def write(self, data: bytes) -> None: ...

    def read(self, n: int) -> bytes: ...


def _nack() -> OSError:
    return OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))


class FakeSMBus:
    def __init__(self, chips: dict[int, Chip] | None = None) -> None:
        self.chips: dict[int, Chip] = dict(chips or {})
        self.closed = False
        self.transfers = 0

    def _chip(self, addr: int) -> Chip:
        self.transfers += 1
        chip = self.chips.get(addr)
        if chip is None:
            raise _nack()
        return chip

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: list[int], force: Any = None) -> None:
        self._chip(i2c_addr).write(bytes([register, *data]))

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, force: Any = None) -> list[int]:
        chip = self._chip(i2c_addr)
        chip.write(bytes([register]))
        return list(chip.read(length))

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: Any = None) -> None:
        self._chip(i2c_addr).write(bytes([register, value]))

    def read_byte_data(self, i2c_addr: int, register: int, force: Any = None) -> int:
        return self.read_i2c_block_data(i2c_addr, register, 1)[0]

    def i2c_rdwr(self, *msgs: Any) -> None:
        for msg in msgs:
            chip = self._chip(msg.addr)
            if msg.flags & 0x0001:  # I2C_M_RD
                data = chip.read(msg.len)
                for i, b in enumerate(data):
                    msg.buf[i] = bytes((b,))
            else:
                chip.write(bytes(msg))

    def close(self) -> None:
        self.closed = True
