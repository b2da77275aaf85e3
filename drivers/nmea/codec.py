"""NMEA 0183 sentences (GGA, RMC), pure (reference methane-sensors.md §5).

``$`` talker+type, comma-separated fields, ``*`` two hex digits, CR LF. The checksum is the XOR of
every character strictly between ``$`` and ``*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from drivers.codec_error import ChecksumError, CodecError

MAX_SENTENCE = 120  # NMEA says 82; some receivers exceed it, none by this much


def checksum(body: bytes) -> int:
    c = 0
    for b in body:
        c ^= b
    return c


def build_sentence(body: str) -> bytes:
    raw = body.encode("ascii")
    return b"$" + raw + f"*{checksum(raw):02X}\r\n".encode()


def extract(buf: bytes) -> tuple[bytes | None, int]:
    """The next ``$…`` line (without CR LF); bytes before a ``$`` are noise."""
    start = buf.find(b"$")
    while start >= 0:
        end = buf.find(b"\n", start)
        nxt = buf.find(b"$", start + 1)
        if 0 <= nxt < (end if end >= 0 else len(buf)):
            start = nxt  # a sentence cut short by the next one: drop the fragment
            continue
        if end < 0:
            if len(buf) - start > MAX_SENTENCE:
                start = buf.find(b"$", start + 1)
                continue
            return None, start
        return buf[start:end].rstrip(b"\r"), end + 1
    return None, len(buf)


@dataclass(frozen=True, slots=True)
class Sentence:
    talker: str
    kind: str
    fields: list[str]


def parse_sentence(line: bytes) -> Sentence:
    if not line.startswith(b"$") or len(line) > MAX_SENTENCE:
        raise CodecError("not an NMEA sentence")
    star = line.rfind(b"*")
    if star < 0 or len(line) - star != 3:
        raise CodecError("sentence has no *HH checksum")
    body, given = line[1:star], line[star + 1 :]
    try:
        want = int(given.decode("ascii"), 16)
        text = body.decode("ascii")
    except (UnicodeDecodeError, ValueError) as exc:
        raise CodecError(f"sentence is not ASCII or checksum not hex: {exc}") from None
    if given.upper() != given or not all(c in b"0123456789ABCDEF" for c in given):
        raise CodecError("checksum must be two uppercase hex digits")
    if checksum(body) != want:
        raise ChecksumError(f"NMEA checksum {want:02X}, computed {checksum(body):02X}")
    parts = text.split(",")
    if len(parts[0]) < 5 or not parts[0].isalnum():
        raise CodecError(f"bad address field {parts[0]!r}")
    return Sentence(parts[0][:-3], parts[0][-3:], parts[1:])


def _degrees(value: str, hemi: str, deg_digits: int) -> float | None:
    if not value and not hemi:
        return None
    if hemi not in ("N", "S", "E", "W") or len(value) < deg_digits + 2:
        raise CodecError(f"bad coordinate {value!r} {hemi!r}")
    try:
        deg = int(value[:deg_digits])
        minutes = float(value[deg_digits:])
    except ValueError:
        raise CodecError(f"bad coordinate {value!r}") from None
    if not 0 <= minutes < 60:
        raise CodecError(f"minutes out of range in {value!r}")
    out = deg + minutes / 60.0
    limit = 90 if deg_digits == 2 else 180
    if out > limit:
        raise CodecError(f"coordinate {value!r} beyond {limit} degrees")
    return -out if hemi in ("S", "W") else out


def _num(value: str, kind: type = float) -> float | int | None:
    if value == "":
        return None
    try:
        out = kind(value)
    except ValueError:
        raise CodecError(f"bad number {value!r}") from None
    if isinstance(out, float) and out != out:
        raise CodecError("NaN in sentence")
    return out


@dataclass(frozen=True, slots=True)
class Gga:
    utc: str
    latitude: float | None
    longitude: float | None
    quality: int
    satellites: int | None
    hdop: float | None
    altitude_m: float | None


@dataclass(frozen=True, slots=True)
class Rmc:
    utc: str
    valid: bool
    latitude: float | None
    longitude: float | None
    when: datetime | None


def parse_gga(s: Sentence) -> Gga:
    f = s.fields
    if s.kind != "GGA" or len(f) < 14:
        raise CodecError("GGA needs 14 fields")
    quality = _num(f[5], int)
    return Gga(
        f[0],
        _degrees(f[1], f[2], 2),
        _degrees(f[3], f[4], 3),
        int(quality) if quality is not None else 0,
        int(v) if (v := _num(f[6], int)) is not None else None,
        float(v) if (v := _num(f[7])) is not None else None,
        float(v) if (v := _num(f[8])) is not None else None,
    )


def parse_rmc(s: Sentence) -> Rmc:
    f = s.fields
    if s.kind != "RMC" or len(f) < 11:
        raise CodecError("RMC needs 11 fields")
    when = None
    if f[0] and f[8]:
        try:
            hhmmss = f[0].split(".")[0]
            frac = float("0." + f[0].split(".")[1]) if "." in f[0] else 0.0
            base = datetime.strptime(f[8] + hhmmss, "%d%m%y%H%M%S").replace(tzinfo=UTC)
        except (ValueError, IndexError):
            raise CodecError(f"bad RMC date/time {f[8]!r} {f[0]!r}") from None
        when = datetime.fromtimestamp(base.timestamp() + frac, UTC)
    return Rmc(f[0], f[1] == "A", _degrees(f[2], f[3], 2), _degrees(f[4], f[5], 3), when)
