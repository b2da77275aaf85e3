"""Dynament Premier/Platinum emulator: answers P2P read requests for live data (var 0x01, structure
version 4: version, status, reading, temperature, detector, reference, absorbance, uptime and the four
detector/reference min/max words, little-endian) and live data simple (var 0x06); any other variable
gets NAK 1 (not readable).

Written from the reference's frame description independently of the driver's codec, so a mistake in
one is not mirrored in the other; the §8 test vectors pin both.
"""

from __future__ import annotations

import struct

from tests.devices.pty_host import EmulatedDevice

DLE, RD, NAK, DAT, EOF = 0x10, 0x13, 0x19, 0x1A, 0x1F


def _crc8005(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def wire_checksum(data: bytes, crc: bool) -> bytes:
    value = _crc8005(data) if crc else sum(data) & 0xFFFF
    return value.to_bytes(2, "big")


class DynamentDevice(EmulatedDevice):
    frame_start_bytes = bytes((DLE,))

    def __init__(self, reading: float = 0.0, status: int = 0, version: int = 1, crc: bool = False,
                 temperature: float = 21.5, live_data_version: int = 4) -> None:
        super().__init__()
        self.reading = reading
        self.status = status
        self.version = version  # of the live-data-simple structure (placeholder, §1.1)
        self.live_data_version = live_data_version
        self.temperature = temperature
        self.crc = crc
        self.nak_reason = 6
        self.uptime_s = 3600

    def live_data(self) -> bytes:
        """Var 0x01 payload. The detector/reference words are plausible constants; the driver ignores them."""
        return (
            struct.pack("<HH", self.live_data_version, self.status)
            + struct.pack("<f", self.reading)
            + struct.pack("<f", self.temperature)
            + struct.pack("<HH", 31000, 32000)
            + struct.pack("<f", 0.0125)
            + struct.pack("<I", self.uptime_s)
            + struct.pack("<HHHH", 30000, 32000, 31000, 33000)
        )

    def take_request(self, buf: bytes) -> tuple[bytes | None, int]:
        start = buf.find(bytes((DLE, RD)))
        if start < 0:
            return None, max(0, len(buf) - 1)
        end = buf.find(bytes((DLE, EOF)), start + 2)
        if end < 0 or len(buf) < end + 4:
            return None, start
        return buf[start : end + 4], end + 4

    def reply(self, request: bytes) -> bytes:
        body = request[:-2]
        if wire_checksum(body, self.crc) != request[-2:]:
            return bytes((DLE, NAK, 6))
        var = request[2]
        if var == 0x06:
            data = struct.pack("<HHf", self.version, self.status, self.reading)
        elif var == 0x01:
            data = self.live_data()
        else:
            return bytes((DLE, NAK, 1))
        payload = bytes((len(data),)) + data
        wire = bytes((DLE, DAT)) + payload.replace(b"\x10", b"\x10\x10") + bytes((DLE, EOF))
        return wire + wire_checksum(wire, self.crc)

    def nak(self, request: bytes) -> bytes:
        return bytes((DLE, NAK, self.nak_reason))
