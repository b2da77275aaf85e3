"""Winsen MH-440D emulator: 9-byte frames, read (0x86) answered, zero/span (0x87/0x88) recorded."""

from __future__ import annotations

from tests.devices.pty_host import EmulatedDevice


def _cs(frame: bytes) -> int:
    return (0xFF - (sum(frame[1:8]) & 0xFF) + 1) & 0xFF


class WinsenDevice(EmulatedDevice):
    frame_start_bytes = b"\xff"

    def __init__(self, raw: int = 0) -> None:
        super().__init__()
        self.raw = raw
        self.calibrations: list[tuple[int, int]] = []

    def take_request(self, buf: bytes) -> tuple[bytes | None, int]:
        start = buf.find(b"\xff")
        if start < 0:
            return None, len(buf)
        if len(buf) < start + 9:
            return None, start
        return buf[start : start + 9], start + 9

    def reply(self, request: bytes) -> bytes:
        if _cs(request) != request[8]:
            return b""  # the module ignores frames with a bad checksum
        if request[2] == 0x86:
            frame = bytes((0xFF, 0x86, self.raw >> 8, self.raw & 0xFF, 0, 0, 0, 0, 0))
            return frame[:8] + bytes((_cs(frame),))
        if request[2] in (0x87, 0x88):
            self.calibrations.append((request[2], (request[3] << 8) | request[4]))
        return b""

    def nak(self, request: bytes) -> bytes:
        return b""
