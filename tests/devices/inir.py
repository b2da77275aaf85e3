"""SGX INIR / INIR2 emulator with the AN1 modes: NORMAL streams 7-word frames, ENGINEERING streams
9-word frames (reference and active averages added), CONFIGURATION and ON-DEMAND stream nothing.
[A]/[B]/[C]/[H] switch mode and answer [AK]; [Q] answers one engineering frame; anything else, and any
command listed in ``nak_commands``, answers [NA]. [I] (read back settings) is not emulated: its reply
layout is not in the reference, so it gets [NA] too. Words are 8 lowercase hex digits plus a terminator."""

from __future__ import annotations

from tests.devices.pty_host import EmulatedDevice

ACK = b"5b414b5d"
NAK = b"5b4e415d"


def frame_words(ppm: int, faults: int, temp_k10: int, engineering: bool = False,
                reference: int = 0x1234, active: int = 0x0FED) -> list[int]:
    data = [0x5B, ppm & 0xFFFFFFFF, faults, temp_k10]
    if engineering:
        data += [reference, active]
    crc = sum(sum(w.to_bytes(4, "big")) for w in data) & 0xFFFFFFFF
    return [*data, crc, 0xFFFFFFFF - crc, 0x5D]


class InirDevice(EmulatedDevice):
    def __init__(self, ppm: int = 0, faults: int = 0xAAAAAAAA, temp_c: float = 25.05,
                 streaming: bool = True, interval_s: float = 0.05, terminator: bytes = b"\n\r") -> None:
        super().__init__()
        self.ppm = ppm
        self.faults = faults
        self.temp_c = temp_c
        self.terminator = terminator
        self.tick_interval_s = interval_s
        self.mode = "normal" if streaming else "on_demand"  # what the sensor is in when we meet it
        self.nak_commands: set[bytes] = set()

    def encode(self, words: list[int]) -> bytes:
        return b"".join(f"{w:08x}".encode() + self.terminator for w in words)

    def _frame(self, engineering: bool) -> bytes:
        temp = round((self.temp_c + 273.15) * 10)
        return self.encode(frame_words(self.ppm, self.faults, temp, engineering))

    def tick(self) -> bytes:
        if self.mode == "normal":
            return self._frame(False)
        if self.mode == "engineering":
            return self._frame(True)
        return b""

    def take_request(self, buf: bytes) -> tuple[bytes | None, int]:
        start = buf.find(b"[")
        if start < 0:
            return None, len(buf)
        end = buf.find(b"]", start)
        if end < 0:
            return None, start
        return buf[start : end + 1], end + 1

    MODES = {b"[A]": "normal", b"[B]": "engineering", b"[C]": "configuration", b"[H]": "on_demand"}

    def reply(self, request: bytes) -> bytes:
        if request in self.nak_commands:
            return NAK + self.terminator
        if request == b"[Q]":
            return self._frame(True)
        if request in self.MODES:
            self.mode = self.MODES[request]
            return ACK + self.terminator
        return NAK + self.terminator

    def corrupt(self, reply: bytes) -> bytes:
        # Change one digit of the concentration word: the CRC no longer matches.
        i = reply.find(b"0000005b")
        if i < 0:
            return reply
        pos = i + 8 + len(self.terminator) + 7
        digit = b"1" if reply[pos : pos + 1] != b"1" else b"2"
        return reply[:pos] + digit + reply[pos + 1 :]

    def nak(self, request: bytes) -> bytes:
        return NAK + self.terminator
