"""Cubic SJH-5 emulator: read measurement (0x01) and zero adjustment (0x03); NAK with error codes."""

from __future__ import annotations

from tests.devices.pty_host import EmulatedDevice


def _cs(data: bytes) -> bytes:
    return bytes(((256 - sum(data) % 256) % 256,))


class CubicDevice(EmulatedDevice):
    frame_start_bytes = bytes((0x16, 0x06))

    def __init__(self, percent_vol: float = 0.0, st1: int = 0) -> None:
        super().__init__()
        self.percent_vol = percent_vol
        self.st1 = st1
        self.zeroed = 0

    def take_request(self, buf: bytes) -> tuple[bytes | None, int]:
        start = buf.find(b"\x11")
        if start < 0:
            return None, len(buf)
        if len(buf) < start + 2 or len(buf) < start + buf[start + 1] + 3:
            return None, start
        end = start + buf[start + 1] + 3
        return buf[start:end], end

    def _ack(self, cmd: int, data: bytes = b"") -> bytes:
        body = bytes((0x16, len(data) + 1, cmd)) + data
        return body + _cs(body)

    def _nak(self, cmd: int, code: int) -> bytes:
        body = bytes((0x06, 0x02, cmd, code))
        return body + _cs(body)

    def reply(self, request: bytes) -> bytes:
        if _cs(request[:-1]) != request[-1:]:
            return self._nak(request[2], 1)
        cmd = request[2]
        if cmd == 0x01:
            raw = round(self.percent_vol * 100)
            return self._ack(cmd, bytes((raw >> 8, raw & 0xFF, self.st1, 0)))
        if cmd == 0x03:
            self.zeroed += 1
            return self._ack(cmd)
        return self._nak(cmd, 2)

    def nak(self, request: bytes) -> bytes:
        return self._nak(request[2], 3)
