"""The spool's journal: where a group commit goes first, so an SD card is written by appends of a few
hundred bytes instead of SQLite pages.

Why: SQLite writes at least one WAL frame (a 512-byte page + 24 bytes) per commit, plus interior,
freelist and page-1 frames as leaves fill and empty (about 210 disk bytes per reading at 1 s commits,
8 readings each; docs/spool.md). A commit here is one ``pwrite`` of a compact record (about 11 bytes per
reading), so the kernel's writeback writes one or two 4 KiB pages per 30 s instead of dozens.

Contract (the same as a SQLite commit at each ``synchronous`` level): the record is in the page
cache when ``append`` returns, so a process crash (kill -9) loses nothing; at FULL/EXTRA it is also
fdatasync'ed, so a power cut loses nothing either; at NORMAL a power cut can lose what the kernel had
not written back yet, which ``recovery.begin_session`` handles like lost SQLite commits.

Readings leave the journal by being acknowledged (an ack record), or by a *fold*: the readings not
acknowledged yet move into SQLite in one synced transaction that also stores the journal's next
generation in ``meta.journal_gen``; then the file is truncated and starts over under that
generation. A journal whose generation is not the database's is stale (its fold was durable) and
ignored. Every record carries a CRC32; replay stops at the first record that is torn or corrupt and
truncates there (only a power cut at NORMAL can leave one, and only at the end).

Format: a header ``b"MSJ1" + u64 generation``, then records ``u16 length | u32 crc32 | body``; body
is a type byte and a payload of unsigned LEB128 varints:

* ``S`` series: id, then JSON ``[sensor_id, quantity, unit, [flags]]``;
* ``R`` readings: count, then per reading seq delta, zigzag ts delta, ``series << 2 | synced << 1 |
  alarm``, and the value as a little-endian float64;
* ``A`` ack: first seq, last seq.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from agent.reading import Reading

log = logging.getLogger("agent.spool")

MAGIC = b"MSJ1"
_HEADER = struct.Struct("<4sQ")
_REC = struct.Struct("<HI")
_F64 = struct.Struct("<d")
MAX_BODY = 0xFFFF
SeriesKey = tuple[str, str, str, tuple[str, ...]]


def journal_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".journal")


# --- encoding ----------------------------------------------------------------------------------------
def _uvarint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf) or shift > 70:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 127) if n < 0 else n << 1


def _unzigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _record(body: bytes) -> bytes:
    return _REC.pack(len(body), zlib.crc32(body)) + body


def series_record(sid: int, key: SeriesKey) -> bytes:
    out = bytearray(b"S")
    _uvarint(sid, out)
    sensor, quantity, unit, flags = key
    out += json.dumps([sensor, quantity, unit, list(flags)], ensure_ascii=False).encode()
    return _record(bytes(out))


def readings_records(batch: list[Reading], series: dict[SeriesKey, int]) -> list[bytes]:
    """One record per up to ~4,000 readings (a record's body is at most 64 KiB)."""
    records = []
    for start in range(0, len(batch), 4000):
        part = batch[start : start + 4000]
        out = bytearray(b"R")
        _uvarint(len(part), out)
        prev_seq = part[0].seq - 1
        prev_ts = 0
        for r in part:
            _uvarint(r.seq - prev_seq, out)
            _uvarint(_zigzag(r.ts_ms - prev_ts), out)
            sid = series[(r.sensor_id, r.quantity, r.unit, r.flags)]
            _uvarint(sid << 2 | int(r.clock_synced) << 1 | int(r.alarm), out)
            out += _F64.pack(r.value)
            prev_seq, prev_ts = r.seq, r.ts_ms
        body = bytes(out)
        if len(body) > MAX_BODY:  # long text never reaches here (series are separate); seq jumps might
            half = len(part) // 2
            records += readings_records(part[:half], series) + readings_records(part[half:], series)
            continue
        head = bytearray()
        _uvarint(part[0].seq - 1, head)  # the base the first delta is taken from
        records.append(_record(b"R" + bytes(head) + body[1:]))
    return records


def ack_record(first: int, last: int) -> bytes:
    out = bytearray(b"A")
    _uvarint(first, out)
    _uvarint(last, out)
    return _record(bytes(out))


@dataclass
class Replay:
    """What a journal holds: series definitions, readings and acks, in file order."""

    series: dict[int, SeriesKey] = field(default_factory=dict)
    readings: list[Reading] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)
    high: int = 0  # the highest seq any readings record names (acked ones included)
    torn_at: int | None = None  # offset of the first bad record, if any
    end: int = 0  # where the valid records end

    def unacked(self) -> list[Reading]:
        return self.readings  # acks were applied in file order while decoding


def _decode(body: bytes, replay: Replay) -> None:
    kind, payload = body[:1], body[1:]
    if kind == b"S":
        sid, pos = _read_uvarint(payload, 0)
        sensor, quantity, unit, flags = json.loads(payload[pos:].decode())
        if not all(isinstance(x, str) for x in (sensor, quantity, unit, *flags)):
            raise ValueError("series text must be strings")
        replay.series[sid] = (sensor, quantity, unit, tuple(flags))
    elif kind == b"R":
        seq, pos = _read_uvarint(payload, 0)
        count, pos = _read_uvarint(payload, pos)
        ts = 0
        out = []
        for _ in range(count):
            d, pos = _read_uvarint(payload, pos)
            z, pos = _read_uvarint(payload, pos)
            k, pos = _read_uvarint(payload, pos)
            if pos + 8 > len(payload):
                raise ValueError("truncated reading")
            (value,) = _F64.unpack_from(payload, pos)
            pos += 8
            seq += d
            ts += _unzigzag(z)
            key = replay.series.get(k >> 2)
            if key is None:
                raise ValueError(f"reading {seq} names unknown series {k >> 2}")
            out.append(Reading(seq, ts, bool(k & 2), key[0], key[1], value, key[2], key[3], bool(k & 1)))
        if pos != len(payload):
            raise ValueError("trailing bytes in a readings record")
        replay.readings += out
        if out:
            replay.high = max(replay.high, out[-1].seq)
    elif kind == b"A":
        first, pos = _read_uvarint(payload, 0)
        last, pos = _read_uvarint(payload, pos)
        replay.acks.append((first, last))
        # An ack applies to the readings before it in the file, as it did live (a later commit of a
        # number in an acknowledged range is a new reading, not an acknowledged one).
        replay.readings = [r for r in replay.readings if not first <= r.seq <= last]
    else:
        raise ValueError(f"unknown record type {kind!r}")


def _next(data: bytes, pos: int, replay: Replay) -> int | None:
    """Decode the record at ``pos`` into ``replay``; its end, or None when it is torn or corrupt."""
    if pos + _REC.size > len(data):
        return None
    length, crc = _REC.unpack_from(data, pos)
    start = pos + _REC.size
    body = data[start : start + length]
    if len(body) != length or length == 0 or zlib.crc32(body) != crc:
        return None
    try:
        _decode(body, replay)
    except (ValueError, UnicodeDecodeError, json.JSONDecodeError, TypeError, struct.error):
        return None
    return start + length


def parse(data: bytes, gen: int) -> Replay | None:
    """Replay a journal's bytes; None when they are not a journal of generation ``gen`` (stale,
    foreign or empty). Only reads."""
    if len(data) < _HEADER.size:
        return None
    magic, found = _HEADER.unpack_from(data)
    if magic != MAGIC or found != gen:
        return None
    replay = Replay()
    pos = _HEADER.size
    while pos < len(data):
        end = _next(data, pos, replay)
        if end is None:
            replay.torn_at = pos
            break
        pos = end
    replay.end = pos
    return replay


def read_only(path: Path, gen: int) -> Replay:
    """What the journal at ``path`` holds for generation ``gen``, strictly read-only (status)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Replay()
    return parse(data, gen) or Replay()


class Journal:
    def __init__(self, path: Path, *, sync: bool) -> None:
        self.path = path
        self.sync = sync
        self.fd: int | None = None
        self.gen = 0
        self.size = 0  # where the next record goes

    @staticmethod
    def peek_generation(path: Path) -> int | None:
        """The generation in ``path``'s header, or None when there is no readable header."""
        try:
            with open(path, "rb") as f:
                head = f.read(_HEADER.size)
        except OSError:
            return None
        if len(head) < _HEADER.size:
            return None
        magic, gen = _HEADER.unpack(head)
        return int(gen) if magic == MAGIC else None

    def open(self, gen: int) -> Replay:
        """Open (creating it 0600, its name made durable) and replay the journal of generation
        ``gen``; a stale or unreadable one is started over. Raises OSError when the file cannot be
        used at all."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self.fd = fd
        if created:
            _fsync_dir(self.path.parent)
        data = _read_all(fd)
        replay = parse(data, gen)
        if replay is None:
            if len(data) > _HEADER.size:
                log.info("spool journal is from an earlier fold; started over", extra={"path": str(self.path)})
            self.reset(gen)
            return Replay()
        self.gen, self.size = gen, replay.end
        if replay.torn_at is not None:
            log.warning(
                "spool journal ends in a torn or corrupt record; replayed up to it",
                extra={"path": str(self.path), "offset": replay.end, "dropped_bytes": len(data) - replay.end},
            )
            os.ftruncate(fd, replay.end)
        return replay

    def flush(self) -> None:
        """Make what was appended durable (a clean stop whose fold failed)."""
        os.fdatasync(self._require())

    def append(self, records: list[bytes]) -> None:
        """Write ``records`` after the last one (one pwrite; synced at FULL/EXTRA). On failure the
        file is cut back to where it was, so no torn record sits before later ones, and OSError is
        raised."""
        fd = self._require()
        data = b"".join(records)
        try:
            written = os.pwrite(fd, data, self.size)
            if written != len(data):
                raise OSError(f"short write to the spool journal ({written} of {len(data)} bytes)")
            if self.sync:
                os.fdatasync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self.size)
            raise
        self.size += len(data)

    def reset(self, gen: int) -> None:
        """Start over as generation ``gen`` (after a durable fold): truncate, write the header."""
        fd = self._require()
        os.ftruncate(fd, 0)
        os.pwrite(fd, _HEADER.pack(MAGIC, gen), 0)
        if self.sync:
            os.fdatasync(fd)
        self.gen, self.size = gen, _HEADER.size

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def _require(self) -> int:
        if self.fd is None:
            raise OSError("spool journal is not open")
        return self.fd


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
