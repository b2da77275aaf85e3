"""The ``compact`` encoding: a columnar batch, structure deflated with a preset dictionary, values
Rice-coded. Layout and the measurements behind it: docs/payload.md.

Encoding is split in two so ``fit`` can try several prefix lengths cheaply: ``Analysis`` walks the
readings once (validation, series and flag-set tables, per-reading column bytes, decimal mantissas),
and ``Analysis.payload(n)`` assembles the payload of the first ``n`` readings from those parts.
"""

from __future__ import annotations

import struct
import zlib
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from itertools import accumulate, pairwise
from typing import cast

from agent.payload import rice
from agent.payload.batch import SEQ_MAX, TS_MAX, TS_MIN, Batch, batch_id, check_envelope, check_reading
from agent.payload.columns import Columns
from agent.payload.errors import PayloadError
from agent.payload.wire import Reader, put_str, put_varint, unzigzag, zigzag
from agent.reading import Reading

MAGIC = b"\x93MB"
VERSION = 1
HEADER = MAGIC + bytes([VERSION])
CRC_BYTES = 4
MIN_PAYLOAD = len(HEADER) + 1 + CRC_BYTES

MAX_STRUCTURE_BYTES = 16 * 1024 * 1024  # decompression bomb limit
MAX_READINGS = 2_000_000

FLAG_EXPLICIT_BATCH_ID = 0x01
KNOWN_ENVELOPE_FLAGS = FLAG_EXPLICIT_BATCH_ID

MODE_RAW = 31  # value mode: 0..MAX_SCALE = decimal scale of integer mode, MODE_RAW = float64 bits
MAX_SCALE = 24
MAX_ABS_SCALED = 2**60  # keeps order-2 residuals inside the Rice escape's 63 bits
_POW10 = [10**i for i in range(MAX_SCALE + 1)]
_DOUBLE = struct.Struct("<d")


def _dictionary() -> bytes:
    """Deflate preset dictionary: the length-prefixed strings a structure section usually holds.

    Part of format version 1: changing it changes the format. Most likely strings last (deflate
    prefers close matches)."""
    words = (
        "vol%", "%LEL", "%vol", "ppb", "deg", "m", "latitude", "longitude", "altitude",
        "stale", "sensor_fault", "checksum_error", "out_of_range", "warming_up", "simulated",
        "pressure", "hPa", "humidity", "%RH", "temperature", "degC", "methane", "ppm",
    )  # fmt: skip
    out = bytearray()
    for w in words:
        put_str(out, w, "dictionary word")
    return bytes(out)


ZDICT = _dictionary()


def deflate_structure(data: bytes) -> bytes:
    """The structure section's codec: raw DEFLATE with the format's preset dictionary (a fuzzer
    wraps hostile structures with it to reach the parser behind the inflate)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=ZDICT)
    return c.compress(data) + c.flush()


def inflate_structure(data: bytes) -> bytes:
    """The inverse of ``deflate_structure``, bounded: a PayloadError for a section that does not
    inflate, inflates beyond MAX_STRUCTURE_BYTES, or has bytes after its end."""
    d = zlib.decompressobj(-15, zdict=ZDICT)
    try:
        out = d.decompress(data, MAX_STRUCTURE_BYTES + 1)
    except zlib.error as exc:
        raise PayloadError(f"corrupt payload: structure section does not inflate ({exc})") from None
    if len(out) > MAX_STRUCTURE_BYTES:
        raise PayloadError(f"corrupt payload: structure section inflates beyond {MAX_STRUCTURE_BYTES} bytes")
    if not d.eof:
        raise PayloadError("truncated payload: structure section ends early")
    if d.unused_data:
        raise PayloadError("corrupt payload: bytes after the end of the structure section")
    return out


def _parse_value(v: float | int, seq: int) -> tuple[int, int]:
    """(mantissa, decimals) with v == mantissa / 10**decimals exactly, or (0, -1) when the value
    has no short decimal form (NaN, inf, -0.0, exponent notation) and must travel as float64."""
    if type(v) is not float:
        try:
            v = float(v)
        except OverflowError:
            raise PayloadError(f"reading seq {seq}: value {v!r} does not fit a 64-bit float") from None
    s = repr(v)
    if "e" in s or "n" in s or s == "-0.0":
        return 0, -1
    i = s.index(".")
    frac = s[i + 1 :]
    if frac == "0":
        return int(s[:i]), 0
    return int(s[:i] + frac), len(frac)


class _Series:
    __slots__ = ("decs", "first_pos", "first_raw", "key", "mants", "positions", "prepared")

    def __init__(self, key: tuple[str, str, str], pos: int) -> None:
        self.key = key
        self.first_pos = pos
        self.positions: list[int] = []
        self.mants: list[int] = []
        self.decs: list[int] = []
        self.prepared: _Prepared | None = None
        self.first_raw = -1  # index (within the series) of the first value needing float64


class Analysis:
    """One validated pass over ``readings``; ``payload(n)`` encodes any prefix of them."""

    def __init__(
        self, device: str, readings: Sequence[Reading], upto: int | None = None, epoch: str = ""
    ) -> None:
        if not readings:
            raise PayloadError("a batch needs at least one reading")
        self.device = device
        self.epoch = epoch
        self.readings = readings
        first = readings[0].seq
        # check_reading needs a range; the envelope's own range is checked by encode().
        self._probe = Batch(device, "-", first if type(first) is int and first >= 0 else 0, SEQ_MAX, [readings[0]])
        check_envelope(self._probe)
        put_str(bytearray(), device, "device")
        self._series: dict[tuple[str, str, str], int] = {}
        self.series_list: list[_Series] = []
        self._flagsets: dict[tuple[str, ...], int] = {}
        self.flagset_list: list[tuple[str, ...]] = []
        self.flagset_first: list[int] = []
        self._cols = [bytearray(), bytearray(), bytearray(), bytearray()]  # series, attrs, seq, ts
        self._ends: list[list[int]] = [[], [], [], []]
        self._values: dict[float, tuple[int, int]] = {}
        self.seqs: list[int] = []
        self._series_first: list[int] = []
        self.extend(len(readings) if upto is None else upto)

    def extend(self, upto: int) -> None:
        """Analyse readings up to index ``upto`` (exclusive), continuing where the last call ended."""
        readings = self.readings
        start = len(self.seqs)
        upto = min(upto, len(readings))
        if upto <= start:
            return
        series, flagsets, values, probe = self._series, self._flagsets, self._values, self._probe
        scratch = bytearray()
        prev_seq = self.seqs[-1] if start else -1
        prev_ts = readings[start - 1].ts_ms if start else 0
        c_series, c_attrs, c_seq, c_ts = self._cols
        e_series, e_attrs, e_seq, e_ts = self._ends
        for s in self.series_list:
            s.prepared = None  # residual caches cover the old length only
        for pos in range(start, upto):
            r = readings[pos]
            seq, ts, v = r.seq, r.ts_ms, r.value
            if not (
                type(seq) is int and seq > prev_seq and type(ts) is int and TS_MIN <= ts <= TS_MAX
                and seq <= SEQ_MAX and type(r.clock_synced) is bool and type(r.alarm) is bool
                and type(v) is float and type(r.flags) is tuple and type(r.sensor_id) is str
                and type(r.quantity) is str and type(r.unit) is str
            ):  # fmt: skip
                check_reading(r, prev_seq, probe)  # names the problem, or passes for an int value
            key = (r.sensor_id, r.quantity, r.unit)
            s_idx = series.get(key)
            if s_idx is None:
                for name, text in zip(("sensor_id", "quantity", "unit"), key, strict=True):
                    put_str(scratch, text, f"reading seq {seq}: {name}")
                s_idx = series[key] = len(self.series_list)
                self.series_list.append(_Series(key, pos))
            s = self.series_list[s_idx]
            flags = r.flags
            fs = flagsets.get(flags)
            if fs is None:
                check_reading(r, prev_seq, probe)
                for f in flags:
                    put_str(scratch, f, f"reading seq {seq}: flag")
                fs = flagsets[flags] = len(self.flagset_list)
                self.flagset_list.append(flags)
                self.flagset_first.append(pos)
            parsed = values.get(v) if v else None  # 0.0 == -0.0 as keys: never cache zeros
            if parsed is None:
                parsed = _parse_value(v, seq)
                if v == v and v:
                    values[v] = parsed
            mant, dec = parsed
            if dec < 0 and s.first_raw < 0:
                s.first_raw = len(s.mants)
            s.positions.append(pos)
            s.mants.append(mant)
            s.decs.append(dec)
            if s_idx < 0x80:
                c_series.append(s_idx)
            else:
                put_varint(c_series, s_idx)
            a = (fs << 2) | (r.alarm << 1) | r.clock_synced
            if a < 0x80:
                c_attrs.append(a)
            else:
                put_varint(c_attrs, a)
            gap = seq - prev_seq - 1 if pos else 0
            if gap < 0x80:
                c_seq.append(gap)
            else:
                put_varint(c_seq, gap)
            z = (ts - prev_ts) << 1 if ts >= prev_ts else ((prev_ts - ts) << 1) - 1
            if z < 0x80:
                c_ts.append(z)
            else:
                put_varint(c_ts, z)
            e_series.append(len(c_series))
            e_attrs.append(len(c_attrs))
            e_seq.append(len(c_seq))
            e_ts.append(len(c_ts))
            prev_seq = seq
            prev_ts = ts
            self.seqs.append(seq)
        self._series_first = [s.first_pos for s in self.series_list]

    def __len__(self) -> int:
        return len(self.seqs)

    def payload(self, n: int, envelope: tuple[str, int, int] | None = None) -> bytes:
        """The compact payload of the first ``n`` readings; ``envelope`` = (batch_id, first_seq,
        last_seq) when they differ from what the readings imply (a resend with evicted ends)."""
        if not 1 <= n <= len(self.seqs):
            raise PayloadError(f"internal: prefix {n} outside 1..{len(self.seqs)}")
        if envelope is None:
            first_seq, last_seq = self.seqs[0], self.seqs[n - 1]
            # The default id needs no bytes; an epoch-qualified one is carried explicitly.
            bid = batch_id(self.device, first_seq, last_seq, self.epoch) if self.epoch else None
        else:
            bid, first_seq, last_seq = envelope
            if bid == batch_id(self.device, first_seq, last_seq):
                bid = None
        out = bytearray()
        put_varint(out, FLAG_EXPLICIT_BATCH_ID if bid is not None else 0)
        put_str(out, self.device, "device")
        if bid is not None:
            put_str(out, bid, "batch_id")
        put_varint(out, first_seq)
        put_varint(out, last_seq - first_seq)
        put_varint(out, n)
        n_series = bisect_left(self._series_first, n)
        put_varint(out, n_series)
        for s in self.series_list[:n_series]:
            for text in s.key:
                put_str(out, text, "series")
        n_flagsets = bisect_left(self.flagset_first, n)
        put_varint(out, n_flagsets)
        for fl in self.flagset_list[:n_flagsets]:
            put_varint(out, len(fl))
            for f in fl:
                put_str(out, f, "flag")
        for i, (col, ends) in enumerate(zip(self._cols, self._ends, strict=True)):
            if i == 2:  # seq column: the first entry is relative to the envelope's first_seq
                put_varint(out, self.seqs[0] - first_seq)
                out += col[ends[0] : ends[n - 1]]
            else:
                out += col[: ends[n - 1]]
        parts: list[str] = []
        for s in self.series_list[:n_series]:
            _series_values(s, bisect_left(s.positions, n), self.readings, out, parts)
        structure = deflate_structure(bytes(out))
        body = bytearray(HEADER)
        put_varint(body, len(structure))
        body += structure
        body += rice.to_bytes(parts)
        body += zlib.crc32(body).to_bytes(CRC_BYTES, "little")
        return bytes(body)


def _scaled(s: _Series, m: int) -> tuple[int, list[int]] | None:
    """(scale, integers) for the first ``m`` values of ``s`` when all are short decimals."""
    if 0 <= s.first_raw < m:
        return None
    decs = s.decs[:m]
    d = max(decs)
    if d > MAX_SCALE:
        return None
    if min(decs) == d:
        ks = s.mants[:m]
    else:
        ks = [mt * _POW10[d - di] for mt, di in zip(s.mants[:m], decs, strict=True)]
    if max(ks) > MAX_ABS_SCALED or min(ks) < -MAX_ABS_SCALED:
        return None
    return d, ks


def _residuals(ks: list[int]) -> tuple[list[int], list[int], list[int]]:
    """Zigzagged residuals of values 1.. under predictors 0 (first value), 1 (previous), 2 (linear)."""
    k0 = ks[0]
    r1 = [b - a for a, b in pairwise(ks)]
    cands = ([x - k0 for x in ks[1:]], r1, r1[:1] + [b - a for a, b in pairwise(r1)])
    return cast(
        tuple[list[int], list[int], list[int]],
        tuple([(x << 1) if x >= 0 else ((-x) << 1) - 1 for x in c] for c in cands),
    )


class _Prepared:
    """Residuals of a whole series at one scale, and Rice blocks already coded, so the probes of
    ``fit`` re-code only each series' last partial block."""

    __slots__ = ("blocks", "cum", "ks", "scale", "zz")

    def __init__(self, scale: int, ks: list[int]) -> None:
        self.scale = scale
        self.ks = ks
        self.zz = _residuals(ks)
        self.cum = [list(accumulate(z)) for z in self.zz]  # zigzag ~ 2|r|: same order choice as sum|r|
        self.blocks: dict[tuple[int, int], str] = {}

    def code(self, m: int, out: bytearray, parts: list[str]) -> None:
        count = m - 1
        order = min(range(3), key=lambda o: self.cum[o][count - 1]) if count else 1
        put_varint(out, self.scale)
        put_varint(out, order)
        put_varint(out, zigzag(self.ks[0]))
        z = self.zz[order]
        full = count - count % rice.BLOCK
        for start in range(0, full, rice.BLOCK):
            key = (order, start)
            block = self.blocks.get(key)
            if block is None:
                coded: list[str] = []
                rice.encode(z[start : start + rice.BLOCK], coded)
                block = self.blocks[key] = "".join(coded)
            parts.append(block)
        rice.encode(z[full:count], parts)


def _series_values(s: _Series, m: int, readings: Sequence[Reading], out: bytearray, parts: list[str]) -> None:
    """A series' value header into the structure, its residuals into the bit stream."""
    prep = s.prepared
    if prep is None:
        whole = _scaled(s, len(s.mants))
        if whole is not None:
            prep = s.prepared = _Prepared(*whole)
    if prep is not None and max(s.decs[:m]) == prep.scale:
        prep.code(m, out, parts)
        return
    scaled = _scaled(s, m)
    if scaled is None:
        put_varint(out, MODE_RAW)
        for p in s.positions[:m]:
            out += _DOUBLE.pack(float(readings[p].value))
        return
    _Prepared(*scaled).code(m, out, parts)


def encode(batch: Batch) -> bytes:
    check_envelope(batch)
    a = Analysis(batch.device, batch.readings)
    if a.seqs[0] < batch.first_seq or a.seqs[-1] > batch.last_seq:
        raise PayloadError(
            f"readings' seqs {a.seqs[0]}..{a.seqs[-1]} outside the batch range {batch.first_seq}..{batch.last_seq}"
        )
    return a.payload(len(a), (batch.batch_id, batch.first_seq, batch.last_seq))


# ---------------------------------------------------------------- decoding


def decode(payload: bytes) -> Batch:
    return decode_columns(payload).batch()


def decode_columns(payload: bytes) -> Columns:
    """The batch as columns; ``decode`` builds its ``Reading`` objects from exactly these."""
    if len(payload) < MIN_PAYLOAD:
        raise PayloadError(f"truncated payload: {len(payload)} bytes is shorter than any compact batch")
    if payload[:3] != MAGIC:
        raise PayloadError("bad magic: not a compact batch")
    if payload[3] != VERSION:
        raise PayloadError(f"compact format version {payload[3]} is not supported (this reader knows {VERSION})")
    want = int.from_bytes(payload[-CRC_BYTES:], "little")
    if zlib.crc32(payload[:-CRC_BYTES]) != want:
        raise PayloadError("bad CRC: the payload is corrupted or truncated")
    head = Reader(payload, len(HEADER), len(payload) - CRC_BYTES)
    size = head.varint("structure length")
    structure = inflate_structure(head.take(size, "structure section"))
    bits = rice.BitReader(head.take(head.remaining(), "value bits"))
    return _parse(structure, bits)


def _parse(structure: bytes, bits: rice.BitReader) -> Columns:
    rd = Reader(structure)
    flags = rd.varint("envelope flags")
    if flags & ~KNOWN_ENVELOPE_FLAGS:
        raise PayloadError(f"corrupt payload: unknown envelope flags {flags:#x}")
    device = rd.string("device")
    explicit = rd.string("batch_id") if flags & FLAG_EXPLICIT_BATCH_ID else None
    first_seq = rd.bounded("first_seq", 2**63 - 1)
    last_seq = first_seq + rd.bounded("seq span", 2**63 - 1 - first_seq)
    n = rd.bounded("reading count", min(MAX_READINGS, len(structure) // 4))
    if n == 0:
        raise PayloadError("corrupt payload: a batch with no readings")
    n_series = rd.bounded("series count", n)
    series = [(rd.string("sensor_id"), rd.string("quantity"), rd.string("unit")) for _ in range(n_series)]
    n_flagsets = rd.bounded("flag-set count", n)
    flagsets = []
    for _ in range(n_flagsets):
        k = rd.bounded("flag count", rd.remaining())
        flagsets.append(tuple(rd.string("flag") for _ in range(k)))
    col_series = rd.varints(n, "series column")
    if max(col_series) >= n_series:
        raise PayloadError(f"corrupt payload: series index {max(col_series)} of {n_series} series")
    attrs = rd.varints(n, "attribute column")
    if max(attrs) >> 2 >= n_flagsets:
        raise PayloadError(f"corrupt payload: flag-set index {max(attrs) >> 2} of {n_flagsets} flag sets")
    seq0 = first_seq + rd.varint("seq column")  # the first entry is absolute (from first_seq)
    gaps = rd.varints(n - 1, "seq column")  # the rest are gaps, 0 between consecutive seqs
    seqs: Sequence[int]
    if gaps.count(0) == len(gaps):
        seqs = range(seq0, seq0 + n)
    else:
        seqs = list(accumulate((d + 1 for d in gaps), initial=seq0))
    seq = seqs[-1]
    if seq > last_seq:
        raise PayloadError(f"corrupt payload: seq {seq} beyond last_seq {last_seq}")
    ts_list = list(accumulate((z >> 1) ^ -(z & 1) for z in rd.varints(n, "timestamp column")))  # unzigzag
    if min(ts_list) < TS_MIN or max(ts_list) > TS_MAX:
        raise PayloadError("corrupt payload: timestamp outside the 64-bit range")
    counts = Counter(col_series)
    values = [_read_values(rd, bits, counts[si]) if counts[si] else [] for si in range(n_series)]
    if rd.remaining():
        raise PayloadError(f"corrupt payload: {rd.remaining()} unexplained bytes after the structure")
    bits.check_padding()
    bid = explicit if explicit is not None else batch_id(device, first_seq, last_seq)
    return Columns(device, bid, first_seq, last_seq, series, flagsets, col_series, attrs, seqs, ts_list, values)


def _read_values(rd: Reader, bits: rice.BitReader, m: int) -> list[float]:
    mode = rd.varint("value mode")
    if mode == MODE_RAW:
        raw = rd.take(8 * m, "float64 values")
        return [v for (v,) in _DOUBLE.iter_unpack(raw)]
    if mode > MAX_SCALE:
        raise PayloadError(f"corrupt payload: value mode {mode}")
    order = rd.varint("predictor order")
    if order > 2:
        raise PayloadError(f"corrupt payload: predictor order {order}")
    k = unzigzag(rd.varint("first value"))
    res = [(z >> 1) ^ -(z & 1) for z in bits.decode(m - 1)]  # unzigzag
    ks: list[int]
    if order == 0:
        ks = [k, *[k + r for r in res]]
    elif order == 1:
        ks = list(accumulate(res, initial=k))
    else:  # second differences: the first residual is a plain delta, the deltas accumulate the rest
        ks = list(accumulate(accumulate(res), initial=k))
    if max(ks) > MAX_ABS_SCALED or min(ks) < -MAX_ABS_SCALED:
        raise PayloadError("corrupt payload: scaled value out of range")
    p = _POW10[mode]
    return [x / p for x in ks]
