"""Winsen MH-440D / MH-441D NDIR methane protocol, pure (reference methane-sensors.md §1.2).

Nine-byte frames: ``FF <sensor no. | command echo> … CS``; CS is the two's complement of the 8-bit sum
of bytes 1..7. The reply carries raw = HH·256 + LL; how raw scales to a concentration is unconfirmed
and comes from the driver's settings, never from here.
"""

from __future__ import annotations

from drivers.codec_error import ChecksumError, CodecError

START = 0xFF
CMD_READ = 0x86
CMD_ZERO = 0x87
CMD_SPAN = 0x88
FRAME_LEN = 9


def checksum(frame: bytes) -> int:
    return (0xFF - (sum(frame[1:8]) & 0xFF) + 1) & 0xFF


def build_request(cmd: int, data: bytes = b"", sensor: int = 0x01) -> bytes:
    if len(data) > 5:
        raise ValueError("at most 5 data bytes")
    body = bytes((START, sensor, cmd)) + data.ljust(5, b"\x00")
    return body + bytes((checksum(body + b"\x00"),))


def extract(buf: bytes) -> tuple[bytes | None, int]:
    i = buf.find(bytes((START,)))
    while i >= 0:
        if len(buf) - i < 2:
            return None, i
        if buf[i + 1] in (CMD_READ, CMD_ZERO, CMD_SPAN):
            if len(buf) - i < FRAME_LEN:
                return None, i
            return buf[i : i + FRAME_LEN], i + FRAME_LEN
        i = buf.find(bytes((START,)), i + 1)
    return None, len(buf)


def parse_read_reply(frame: bytes) -> int:
    """Raw concentration counts from a 0x86 reply."""
    if len(frame) != FRAME_LEN or frame[0] != START:
        raise CodecError(f"not a 9-byte reply: {frame[:16].hex(' ')}")
    if checksum(frame) != frame[8]:
        raise ChecksumError(f"checksum {frame[8]:02X}, computed {checksum(frame):02X}")
    if frame[1] != CMD_READ:
        raise CodecError(f"reply to command {frame[1]:02X}, expected {CMD_READ:02X}")
    return (frame[2] << 8) | frame[3]
