"""The completeness report: for each device, which readings the store holds against the readings
the device numbered, from the ingest's ledger (``ingest_batch``) alone, so it is evidence about the
store, not about what the ingest believed.

Per device and epoch the sequence numbers run gapless from 1 (a new epoch restarts at 1), so

* expected = from 1 (or, with ``since``, the lowest seq seen in the window) to the highest seq seen;
* received = distinct seqs stored; duplicates_dropped = readings that arrived again and were not stored;
* gaps = the missing ranges, as ``[epoch, first_seq, last_seq]``; those inside a batch's envelope
  were evicted by the device's spool (disk budget), the agent's documented loss, and are listed
  again under ``evicted``; readings after the highest seq seen cannot be known from the store;
* uptime_fraction = share of ``bucket_s`` buckets between the start (``since`` or first reading)
  and the end (``until`` or now) holding at least one reading of the device.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from cloud import schema
from cloud.influx import InfluxClient, quote_string
from cloud.seqranges import SeqRanges

NOT_READINGS = {schema.BATCH_MEASUREMENT, schema.REJECT_MEASUREMENT, schema.ALARM_MEASUREMENT,
                schema.STATUS_MEASUREMENT}
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now_ns: int | None = None) -> int:
    """``2026-11-29T20:00:00Z`` (ISO 8601 with a zone) or ``90s`` / ``15m`` / ``2h`` / ``7d`` ago, as ns."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    m = _RELATIVE.fullmatch(text.strip())
    if m:
        return now_ns - int(float(m.group(1)) * _UNIT_S[m.group(2)] * 1e9)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {text!r}: want ISO 8601 with a zone (2026-11-29T20:00:00Z) or 90s/15m/2h/7d") from None
    if dt.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone (add Z or +00:00)")
    return int(dt.timestamp() * 1e9)


@dataclass
class DeviceReport:
    thing: str
    site: str | None
    expected: int = 0
    received: int = 0
    duplicates_dropped: int = 0
    missing: int = 0
    gaps: list[list[Any]] = field(default_factory=list)
    evicted: list[list[Any]] = field(default_factory=list)
    epochs: list[str] = field(default_factory=list)
    batches: int = 0
    rejected_messages: int = 0
    first_reading_ns: int | None = None
    last_reading_ns: int | None = None
    last_seen_ns: int | None = None
    uptime_fraction: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _window(since_ns: int | None, until_ns: int | None) -> str:
    out = ""
    if since_ns is not None:
        out += f" AND time >= {since_ns}"
    if until_ns is not None:
        out += f" AND time <= {until_ns}"
    return out


def devices(client: InfluxClient, site: str | None) -> list[str]:
    where = f' WHERE "site" = {quote_string(site)}' if site else ""
    q = f'SHOW TAG VALUES FROM "{schema.BATCH_MEASUREMENT}" WITH KEY = "device"{where}'
    return sorted(v for s in client.query_one(q) for _k, v in s.values)


def device_report(client: InfluxClient, thing: str, site: str | None = None, since_ns: int | None = None,
                  until_ns: int | None = None, bucket_s: int = 60, now_ns: int | None = None) -> DeviceReport:
    dev = f'"device" = {quote_string(thing)}' + (f' AND "site" = {quote_string(site)}' if site else "")
    window = _window(since_ns, until_ns)
    rep = DeviceReport(thing, site)
    q = (f'SELECT "ranges", "first_seq", "last_seq", "duplicates" FROM "{schema.BATCH_MEASUREMENT}" '  # noqa: S608
         f"WHERE {dev}{window} GROUP BY \"epoch\", \"site\"")
    per_epoch: dict[str, tuple[SeqRanges, SeqRanges]] = {}
    for s in client.query_one(q):
        epoch = s.tags.get("epoch", "")
        rep.site = rep.site or s.tags.get("site") or None
        got, envelopes = per_epoch.setdefault(epoch, (SeqRanges(), SeqRanges()))
        for t, ranges, first, last, dups in s.values:
            got.update(SeqRanges.parse(ranges or ""))
            envelopes.add(int(first), int(last))
            rep.duplicates_dropped += int(dups or 0)
            rep.batches += 1
            rep.last_seen_ns = max(rep.last_seen_ns or t, t)
    for epoch, (got, envelopes) in sorted(per_epoch.items()):
        rep.epochs.append(epoch)
        if not len(got):
            continue
        ranges = got.ranges
        lo = 1 if since_ns is None else ranges[0][0]
        hi = ranges[-1][1]
        rep.expected += hi - lo + 1
        rep.received += len(got)
        for a, b in got.missing(lo, hi):
            rep.gaps.append([epoch, a, b])
            rep.missing += b - a + 1
            for ea, eb in _intersect(envelopes, a, b):
                rep.evicted.append([epoch, ea, eb])
    rq = f'SELECT count("bytes") FROM "{schema.REJECT_MEASUREMENT}" WHERE {dev}{window}'  # noqa: S608
    for s in client.query_one(rq):
        rep.rejected_messages += int(s.values[0][1])
    _uptime(client, rep, dev, since_ns, until_ns, bucket_s, now_ns)
    return rep


def _intersect(ranges: SeqRanges, a: int, b: int) -> list[tuple[int, int]]:
    return [(max(a, x), min(b, y)) for x, y in ranges if x <= b and y >= a]


def _reading_measurements(client: InfluxClient) -> list[str]:
    return [v[0] for s in client.query_one("SHOW MEASUREMENTS") for v in s.values if v[0] not in NOT_READINGS]


def _uptime(client: InfluxClient, rep: DeviceReport, dev: str, since_ns: int | None, until_ns: int | None,
            bucket_s: int, now_ns: int | None) -> None:
    names = _reading_measurements(client)
    if not names:
        return
    frm = ",".join(f'"{n}"' for n in names)
    window = _window(since_ns, until_ns)
    # A lone first()/last() reports its point's time (two selectors in one query would not).
    firsts = [s.values[0][0] for s in client.query_one(f'SELECT first("seq") FROM {frm} WHERE {dev}{window}')]  # noqa: S608
    if not firsts:
        return
    lasts = [s.values[0][0] for s in client.query_one(f'SELECT last("seq") FROM {frm} WHERE {dev}{window}')]  # noqa: S608
    rep.first_reading_ns, rep.last_reading_ns = min(firsts), max(lasts)
    start = since_ns if since_ns is not None else rep.first_reading_ns
    end = until_ns if until_ns is not None else (time.time_ns() if now_ns is None else now_ns)
    end = max(end, rep.last_reading_ns)
    step = bucket_s * 1_000_000_000
    first_bucket, last_bucket = start // step, end // step
    total = last_bucket - first_bucket + 1
    q = (f'SELECT count("seq") FROM {frm} WHERE {dev} AND time >= {first_bucket * step} '  # noqa: S608
         f"AND time <= {end} GROUP BY time({bucket_s}s) fill(none)")
    busy = {t for s in client.query_one(q) for t, n in s.values if n}
    rep.uptime_fraction = round(len(busy) / total, 6) if total > 0 else None


def report(client: InfluxClient, thing: str | None = None, site: str | None = None, since_ns: int | None = None,
           until_ns: int | None = None, bucket_s: int = 60) -> list[DeviceReport]:
    things = [thing] if thing else devices(client, site)
    return [device_report(client, t, site, since_ns, until_ns, bucket_s) for t in things]
