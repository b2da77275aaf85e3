"""Sensirion SHT31 emulator: 16-bit commands, single shot (no clock stretching) NACKs reads while
measuring, 6-byte reply with CRC-8 (poly 0x31, init 0xFF) per word."""

from __future__ import annotations

import errno
import os


def crc8(data: bytes) -> int:
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class Sht31Chip:
    def __init__(self, temp_c: float = 25.0, rh: float = 40.0, busy_reads: int = 1) -> None:
        self.temp_c = temp_c
        self.rh = rh
        self.busy_reads = busy_reads
        self.corrupt = False
        self._pending: bytes | None = None
        self._busy = 0
        self.commands: list[bytes] = []

    def raw_words(self) -> tuple[int, int]:
        st = round((self.temp_c + 45.0) * 65535.0 / 175.0)
        srh = round(self.rh * 65535.0 / 100.0)
        return max(0, min(0xFFFF, st)), max(0, min(0xFFFF, srh))

    def write(self, data: bytes) -> None:
        self.commands.append(bytes(data))
        if data[:1] == b"\x24":
            st, srh = self.raw_words()
            t, h = st.to_bytes(2, "big"), srh.to_bytes(2, "big")
            out = t + bytes((crc8(t),)) + h + bytes((crc8(h),))
            if self.corrupt:
                out = out[:2] + bytes((out[2] ^ 0x01,)) + out[3:]
            self._pending = out
            self._busy = self.busy_reads

    def read(self, n: int) -> bytes:
        if self._pending is None or self._busy > 0:
            self._busy -= 1
            raise OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))
        out, self._pending = self._pending, None
        return out[:n]
