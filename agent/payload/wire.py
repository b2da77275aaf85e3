"""Byte-level primitives of the compact format: LEB128 varints, zigzag, and a bounds-checked reader.

Every read is checked against the end of the buffer so a truncated or corrupted payload becomes a
``PayloadError`` naming the field being read, never an ``IndexError`` deep inside a loop."""

from __future__ import annotations

from agent.payload.errors import PayloadError

MAX_VARINT_BYTES = 10  # 70 bits: enough for any 64-bit value, and a hard stop for corrupt input


def zigzag(n: int) -> int:
    """Map signed to unsigned so small magnitudes of either sign stay short."""
    return (n << 1) if n >= 0 else ((-n) << 1) - 1


def unzigzag(z: int) -> int:
    return (z >> 1) if not z & 1 else -((z + 1) >> 1)


def put_varint(out: bytearray, n: int) -> None:
    if n < 0:
        raise PayloadError(f"internal: varint of negative {n}")
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def put_str(out: bytearray, s: str, what: str) -> None:
    try:
        raw = s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{what} {s!r} is not valid Unicode text: {exc.reason}") from None
    if len(raw) > MAX_STR_BYTES:
        raise PayloadError(f"{what} is {len(raw)} bytes; at most {MAX_STR_BYTES} allowed")
    put_varint(out, len(raw))
    out += raw


MAX_STR_BYTES = 4096


class Reader:
    """Sequential reader over a bytes buffer with field-named errors."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def varint(self, what: str) -> int:
        buf, pos, end = self.buf, self.pos, self.end
        result = shift = 0
        for _ in range(MAX_VARINT_BYTES):
            if pos >= end:
                raise PayloadError(f"truncated payload while reading {what}")
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                self.pos = pos
                return result
            shift += 7
        raise PayloadError(f"corrupt payload: varint too long while reading {what}")

    def varints(self, n: int, what: str) -> list[int]:
        """``n`` varints in a row (a column). Most column entries are one byte (a delta of 0, a
        small index): a column of one-byte entries only is converted in one step, and two-byte
        entries (timestamp deltas of a second) are taken without a call; anything longer goes
        through ``varint`` and fails the same way."""
        buf, end = self.buf, self.end
        pos = self.pos
        chunk = buf[pos : min(pos + n, end)]
        if len(chunk) == n and chunk.isascii():  # every byte < 0x80: each is a whole varint
            self.pos = pos + n
            return list(chunk)
        out: list[int] = []
        append = out.append
        for _ in range(n):
            if pos < end:
                b = buf[pos]
                if b < 0x80:
                    append(b)
                    pos += 1
                    continue
                if pos + 1 < end and buf[pos + 1] < 0x80:
                    append((b & 0x7F) | (buf[pos + 1] << 7))
                    pos += 2
                    continue
            self.pos = pos
            append(self.varint(what))
            pos = self.pos
        self.pos = pos
        return out

    def bounded(self, what: str, limit: int) -> int:
        n = self.varint(what)
        if n > limit:
            raise PayloadError(f"corrupt payload: {what} is {n}, limit {limit}")
        return n

    def take(self, n: int, what: str) -> bytes:
        if n > self.end - self.pos:
            raise PayloadError(f"truncated payload while reading {what} ({n} bytes wanted)")
        start = self.pos
        self.pos += n
        return self.buf[start : self.pos]

    def string(self, what: str) -> str:
        n = self.bounded(f"length of {what}", MAX_STR_BYTES)
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"corrupt payload: {what} is not UTF-8 ({exc.reason})") from None
