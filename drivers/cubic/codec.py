"""Cubic SJH-5 / SJH-100 NDIR methane protocol, pure (reference methane-sensors.md §1.4).

Request ``11 LB CMD DF… CS``; reply ``16 LB CMD DF… CS``; error ``06 02 CMD EC CS``. LB counts the
bytes after itself except CS; CS is the two's complement of the sum of all previous bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.codec_error import ChecksumError, CodecError, NakError

IP, ACK, NAK = 0x11, 0x16, 0x06
CMD_READ = 0x01
CMD_ZERO = 0x03
MAX_LB = 40

ERROR_CODES = {1: "bad length or unparsable", 2: "bad command", 3: "not possible in current state"}

# ST1 bits (datasheet): what each means for the reading.
ST1_WARMING_UP = 0x01
ST1_MALFUNCTION = 0x02
ST1_OUT_OF_RANGE = 0x04
ST1_NOT_CALIBRATED = 0x10
ST1_HIGH_HUMIDITY = 0x20
ST1_REF_OVER_LIMIT = 0x40
ST1_MEAS_OVER_LIMIT = 0x80
ST1_FAULT_BITS = ST1_MALFUNCTION | ST1_NOT_CALIBRATED | ST1_HIGH_HUMIDITY | ST1_REF_OVER_LIMIT | ST1_MEAS_OVER_LIMIT


def checksum(data: bytes) -> int:
    return (-sum(data)) & 0xFF


def build_request(cmd: int, data: bytes = b"") -> bytes:
    body = bytes((IP, len(data) + 1, cmd)) + data
    return body + bytes((checksum(body),))


def extract(buf: bytes) -> tuple[bytes | None, int]:
    i, n = 0, len(buf)
    while i < n:
        b = buf[i]
        if b not in (ACK, NAK):
            i += 1
            continue
        if i + 1 >= n:
            return None, i
        lb = buf[i + 1]
        if lb == 0 or lb > MAX_LB or (b == NAK and lb != 2):
            i += 1
            continue
        end = i + lb + 3
        if end > n:
            return None, i
        return buf[i:end], end
    return None, n


@dataclass(frozen=True, slots=True)
class SjhReading:
    raw: int
    st1: int
    st2: int

    @property
    def value(self) -> float:
        """Concentration in the sensor's unit (SJH series: %vol), resolution 0.01."""
        return self.raw / 100.0


def parse_reply(frame: bytes, cmd: int) -> bytes:
    if len(frame) < 4 or frame[0] not in (ACK, NAK) or frame[1] != len(frame) - 3:
        raise CodecError(f"not a reply frame: {frame[:16].hex(' ')}")
    if checksum(frame[:-1]) != frame[-1]:
        raise ChecksumError(f"checksum {frame[-1]:02X}, computed {checksum(frame[:-1]):02X}")
    if frame[2] != cmd:
        raise CodecError(f"reply to command {frame[2]:02X}, expected {cmd:02X}")
    if frame[0] == NAK:
        code = frame[3]
        raise NakError(f"device error {code} ({ERROR_CODES.get(code, 'unknown')})", code)
    return frame[3:-1]


def decode_measurement(data: bytes) -> SjhReading:
    if len(data) != 4:
        raise CodecError(f"measurement data is 4 bytes, got {len(data)}")
    return SjhReading((data[0] << 8) | data[1], data[2], data[3])
