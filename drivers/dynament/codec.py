"""Dynament Premier / Platinum "P2P" binary protocol, pure (reference methane-sensors.md §1.1).

Frames: read request ``DLE RD var DLE EOF cs_hi cs_lo``; data reply ``DLE DAT len data… DLE EOF cs``;
NAK ``DLE NAK reason`` (three bytes, no checksum). Inside the body every 0x10 is doubled. The checksum
is the 16-bit sum of every byte on the wire from the first DLE through EOF (stuffing included), or, in
CRC mode, CRC-16 poly 0x8005 init 0 over the same bytes; sent high byte first.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Literal

from drivers.codec_error import ChecksumError, CodecError, NakError

DLE, RD, WR, ACK, NAK, DAT, EOF = 0x10, 0x13, 0x15, 0x16, 0x19, 0x1A, 0x1F
VAR_LIVE_DATA = 0x01
VAR_LIVE_DATA_SIMPLE = 0x06
MAX_DATA_LEN = 255
LIVE_DATA_VERSION = 4  # the only live-data layout the sources document (both agree; D7 accepts only 4)
_LIVE_DATA = struct.Struct("<HHffHHfIHHHH")  # 32 bytes, version 4
_LIVE_DATA_SIMPLE = struct.Struct("<HHf")  # 8 bytes

ChecksumMode = Literal["sum", "crc"]

NAK_REASONS: dict[int, str] = {
    1: "variable not readable",
    2: "variable not writable",
    3: "out of range",
    4: "incorrect length",
    5: "unexpected bytes",
    6: "checksum failed",
    7: "incorrect version",
    8: "busy",
    9: "invalid data",
    10: "invalid state",
    11: "serial error",
    12: "device fault",
    13: "device fault",  # TDS0045 as quoted by one source numbers it 13; accept both [U]
}


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x8005) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def checksum(data: bytes, mode: ChecksumMode = "sum") -> int:
    if mode == "sum":
        return sum(data) & 0xFFFF
    c = 0
    for b in data:
        c = ((c << 8) & 0xFFFF) ^ _CRC_TABLE[((c >> 8) ^ b) & 0xFF]
    return c


def stuff(body: bytes) -> bytes:
    return body.replace(b"\x10", b"\x10\x10")


def _seal(head_and_body: bytes, mode: ChecksumMode) -> bytes:
    wire = head_and_body + bytes((DLE, EOF))
    return wire + checksum(wire, mode).to_bytes(2, "big")


def build_read_request(var_id: int, mode: ChecksumMode = "sum") -> bytes:
    if not 0 <= var_id <= 0xFF:
        raise ValueError(f"variable id {var_id} is not a byte")
    return _seal(bytes((DLE, RD)) + stuff(bytes((var_id,))), mode)


def build_data_reply(data: bytes, mode: ChecksumMode = "sum") -> bytes:
    if len(data) > MAX_DATA_LEN:
        raise ValueError("data longer than 255 bytes")
    return _seal(bytes((DLE, DAT)) + stuff(bytes((len(data),)) + data), mode)


def build_nak(reason: int) -> bytes:
    return bytes((DLE, NAK, reason & 0xFF))


def extract(buf: bytes) -> tuple[bytes | None, int]:
    """Find the next reply frame (DAT or NAK) in ``buf``; returns (frame, bytes consumed)."""
    i = 0
    n = len(buf)
    while i < n:
        j = buf.find(DLE, i)
        if j < 0:
            return None, n
        if j + 1 >= n:
            return None, j
        kind = buf[j + 1]
        if kind == NAK:
            if j + 2 >= n:
                return None, j
            return buf[j : j + 3], j + 3
        if kind != DAT:
            i = j + 1
            continue
        k = j + 2
        body = 0
        while k < n:
            if buf[k] != DLE:
                k += 1
                body += 1
            elif k + 1 >= n:
                return None, j
            elif buf[k + 1] == DLE:
                k += 2
                body += 1
            elif buf[k + 1] == EOF:
                end = k + 4
                if end > n:
                    return None, j
                return buf[j:end], end
            else:  # a lone DLE inside the body: this was no frame; resynchronise after its start
                break
            if body > MAX_DATA_LEN + 1:
                break
        else:
            return None, j
        i = j + 1
    return None, n


@dataclass(frozen=True, slots=True)
class LiveDataSimple:
    version: int
    status: int
    reading: float


@dataclass(frozen=True, slots=True)
class LiveData:
    """Live data (var 0x01), structure version 4. The temperature's unit is not stated by the sources;
    degrees Celsius is assumed [U]."""

    version: int
    status: int
    reading: float
    temperature_c: float
    detector: int
    reference: int
    absorbance: float
    uptime: int
    detector_min: int
    detector_max: int
    reference_min: int
    reference_max: int


def parse_reply(frame: bytes, mode: ChecksumMode = "sum") -> bytes:
    """Check a DAT frame and return its data; a NAK raises ``NakError``; anything else ``CodecError``."""
    if len(frame) == 3 and frame[0] == DLE and frame[1] == NAK:
        code = frame[2]
        raise NakError(f"device NAK: reason {code} ({NAK_REASONS.get(code, 'unknown')})", code)
    if len(frame) < 7 or frame[0] != DLE or frame[1] != DAT or frame[-4] != DLE or frame[-3] != EOF:
        raise CodecError(f"not a data frame: {frame[:16].hex(' ')}")
    wire = frame[:-2]
    got = int.from_bytes(frame[-2:], "big")
    want = checksum(wire, mode)
    if got != want:
        raise ChecksumError(f"checksum {got:04X}, computed {want:04X} ({mode})")
    stuffed = frame[2:-4]
    if stuffed.replace(b"\x10\x10", b"").count(b"\x10"):
        raise CodecError("unpaired DLE inside the frame body")
    body = stuffed.replace(b"\x10\x10", b"\x10")
    if not body:
        raise CodecError("data frame without a length byte")
    length, data = body[0], body[1:]
    if length != len(data):
        raise CodecError(f"length byte says {length} data bytes, frame has {len(data)}")
    return data


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise CodecError(f"{name} is not a finite number")


def decode_live_data_simple(data: bytes) -> LiveDataSimple:
    if len(data) != _LIVE_DATA_SIMPLE.size:
        raise CodecError(f"live data simple is {_LIVE_DATA_SIMPLE.size} bytes, got {len(data)}")
    version, status, reading = _LIVE_DATA_SIMPLE.unpack(data)
    _finite("reading", reading)
    return LiveDataSimple(version, status, reading)


def decode_live_data(data: bytes) -> LiveData:
    """Version 4 only: another version may lay the fields out differently, so it is refused, not guessed."""
    if len(data) >= 2 and int.from_bytes(data[:2], "little") != LIVE_DATA_VERSION:
        version = int.from_bytes(data[:2], "little")
        raise CodecError(f"live data structure version {version}; only version {LIVE_DATA_VERSION} is documented")
    if len(data) != _LIVE_DATA.size:
        raise CodecError(f"live data (version {LIVE_DATA_VERSION}) is {_LIVE_DATA.size} bytes, got {len(data)}")
    live = LiveData(*_LIVE_DATA.unpack(data))
    _finite("reading", live.reading)
    _finite("temperature", live.temperature_c)
    return live
