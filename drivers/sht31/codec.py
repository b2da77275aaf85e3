"""Sensirion SHT3x single-shot measurement, pure (reference methane-sensors.md §4.2)."""

from __future__ import annotations

from drivers.codec_error import ChecksumError, CodecError

# Single shot, clock stretching off (the Pi's I2C controller handles stretching badly).
COMMANDS = {"high": b"\x24\x00", "medium": b"\x24\x0b", "low": b"\x24\x16"}


def crc8(data: bytes) -> int:
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def parse_measurement(reply: bytes) -> tuple[float, float]:
    """(degC, %RH) from ``T_msb T_lsb T_crc RH_msb RH_lsb RH_crc``; each word's CRC is checked."""
    if len(reply) != 6:
        raise CodecError(f"SHT3x reply is 6 bytes, got {len(reply)}")
    for i in (0, 3):
        if crc8(reply[i : i + 2]) != reply[i + 2]:
            word = reply[i : i + 2]
            raise ChecksumError(f"CRC {reply[i + 2]:02X} over {word.hex()}, computed {crc8(word):02X}")
    st = (reply[0] << 8) | reply[1]
    srh = (reply[3] << 8) | reply[4]
    return round(-45.0 + 175.0 * st / 65535.0, 3), round(100.0 * srh / 65535.0, 3)
