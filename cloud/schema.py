"""How readings, batches and alarm events become InfluxDB points, chosen for the questions a gas
operator asks: "methane at this site / device / sensor over time, in ppm and %LEL", "which
readings were flagged or in alarm", "is every reading there", "which gateways are backlogged".

Readings: one point per reading.
  measurement = the reading's quantity (``methane``, ``methane_lel``, ``temperature``, ...)
  tags        = ``site``, ``device``, ``sensor``, ``unit``  (bounded cardinality: one series per sensor
                channel; never the seq or a value)
  fields      = ``value`` (float, in ``unit``), ``seq`` (int), ``alarm`` (true, only on alarm
                readings), ``clock_synced`` (false, only when the clock was not synced), ``flags``
                (string, comma-joined, only when there are flags); methane in ppm
                also gets ``lel_pct`` (the same value in %LEL on the ingest's LEL basis, so a panel
                can draw %LEL thresholds even for sensors that only report ppm). A non-finite value
                (NaN/inf, which InfluxDB cannot store) is written as the string field ``nonfinite``
                instead of ``value``, so the reading and its seq are still on record.
  time        = ``ts_ms`` in ns plus ``seq mod 10**6`` in the sub-millisecond digits: two readings
                of one channel stamped in the same millisecond (a clock stepped back) stay two
                points, and a resent reading lands on exactly its own point again (InfluxDB's point
                identity is measurement + tags + time), so even a replay that slipped past the
                de-duplication cannot double a reading.

Batches (the de-duplication ledger and the completeness evidence): measurement ``ingest_batch``,
tags ``site``, ``device``, ``epoch``; fields ``batch_id``, ``first_seq``, ``last_seq``, ``ranges``
(the seqs newly stored, ``a-b,c-d``), ``received`` (their count), ``duplicates`` (readings of the
batch already stored, dropped), ``readings``, ``bytes``, ``encoding``; time = arrival.

Alarm events (issue 12's JSON on ``dt/methane/{site}/{thing}/alarm``): measurement ``alarm_event``,
tags ``site``, ``device``, ``sensor``, ``quantity``, ``level``, ``type``; fields ``value``,
``threshold``, ``seq``; time = the event's ``ts_ms``.

Device status (the shadow's ``reported.status``): measurement ``device_status``, tags ``site``,
``device``; fields ``spool_depth``, ``spool_bytes``, ``oldest_unsent_age_s``, ``connected``,
``cert_days_left``, ``cert_not_after``, ``agent_version``, ``uptime_s``; time = report time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from math import isfinite
from typing import Any

from agent.payload.columns import Columns, SeriesKey
from cloud import lineproto
from cloud.lineproto import FieldValue, LineProtocolError

READINGS_NS_PER_MS = 1_000_000
SEQ_DIGITS_MOD = 1_000_000
BATCH_MEASUREMENT = "ingest_batch"
ALARM_MEASUREMENT = "alarm_event"
STATUS_MEASUREMENT = "device_status"
REJECT_MEASUREMENT = "ingest_reject"
DEFAULT_LEL_VOL_PERCENT = 5.0  # as drivers/methane.py: US tables; IEC 60079-20-1 says 4.4
_EPOCH = re.compile(r"[0-9a-f]{1,32}")


def point_ns(ts_ms: int, seq: int) -> int:
    return ts_ms * READINGS_NS_PER_MS + seq % SEQ_DIGITS_MOD


def epoch_of(batch: Columns) -> str:
    """The epoch a batch id names (``<device>/<epoch>:<first>-<last>``), ``""`` for the older
    ``<device>/<first>-<last>``. An id that names another device or range is refused: the
    de-duplication keys on it."""
    prefix = f"{batch.device}/"
    rng = f"{batch.first_seq}-{batch.last_seq}"
    bid = batch.batch_id
    if bid == prefix + rng:
        return ""
    if bid.startswith(prefix) and bid.endswith(":" + rng):
        epoch = bid[len(prefix) : -len(rng) - 1]
        if _EPOCH.fullmatch(epoch):
            return epoch
    raise LineProtocolError(
        f"batch id {bid!r} does not name device {batch.device!r} and range {rng} as <device>/[<epoch>:]<first>-<last>"
    )


@dataclass(frozen=True)
class PointKey:
    """Enough to delete one point again (measurement, tags, time)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    ns: int


def _tag_pairs(device: str, site: str, series: SeriesKey) -> dict[str, str]:
    return {"site": site, "device": device, "sensor": series[0], "unit": series[2]}


# Sparse flags: ``alarm`` only when true, ``clock_synced`` only when false. Every field is a column
# InfluxDB indexes and compacts; writing the common values on every point doubled influxd's CPU per
# reading (bench/bench_ingest.py). Queries ask ``"alarm" = true`` / ``"clock_synced" = false``.
_MARKS = (",clock_synced=f", "", ",alarm=t,clock_synced=f", ",alarm=t")  # by attribute bits alarm << 1 | synced
_NS_PER_MS = READINGS_NS_PER_MS
_MOD = SEQ_DIGITS_MOD


def _pick(column: Sequence[int], pos: Sequence[int]) -> Sequence[int]:
    if isinstance(pos, range):
        return column[pos.start : pos.stop : pos.step]
    return [column[i] for i in pos]


def reading_lines(cols: Columns, site: str, keep: Sequence[bool] | None = None,
                  lel_vol_percent: float = DEFAULT_LEL_VOL_PERCENT) -> list[str]:
    """Line protocol for the batch's readings (only those whose ``keep`` entry is true when given),
    series by series. Raises LineProtocolError naming the first reading (in batch order) that
    cannot be written, before anything is written.

    The hot path of the ingest: the text of a series' tags and of each flag set is built once, and
    a series' points come from one comprehension over its columns (no object per reading)."""
    ppm_per_lel_pct = lel_vol_percent * 100.0  # LEL in ppm / 100
    lines: list[str] = []
    problems: list[tuple[int, int, str]] = []  # (reading index, check order, message): the first wins
    flag_text: dict[int, str | LineProtocolError] = {}
    seqs_all, ts_all, attrs_all = cols.seqs, cols.ts_ms, cols.attrs
    for series, pos, vals in zip(cols.series, cols.positions(), cols.values, strict=True):
        if keep is not None:
            sel = [keep[i] for i in pos]
            if not all(sel):
                pos, vals = list(compress(pos, sel)), list(compress(vals, sel))
                if not pos:
                    continue
        seqs, ts, attrs = _pick(seqs_all, pos), _pick(ts_all, pos), _pick(attrs_all, pos)
        try:
            head = lineproto.measurement(series[1]) + lineproto.tags(_tag_pairs(cols.device, site, series))
        except LineProtocolError as exc:
            problems.append((pos[0], 0, f"reading seq {seqs[0]}: {exc}"))
            continue
        suffix: dict[int, str] = {}
        for a in set(attrs):
            fi = a >> 2
            text = flag_text.get(fi)
            if text is None:
                flags = cols.flagsets[fi]
                try:
                    text = ",flags=" + lineproto.field_value("flags", ",".join(flags)) if flags else ""
                except LineProtocolError as exc:
                    text = exc
                flag_text[fi] = text
            if isinstance(text, LineProtocolError):
                i = attrs.index(a)
                problems.append((pos[i], 1, f"reading seq {seqs[i]}: {text}"))
            else:
                suffix[a] = _MARKS[a & 3] + text
        if min(ts) * _NS_PER_MS < lineproto.MIN_NS or max(ts) * _NS_PER_MS + _MOD > lineproto.MAX_NS:
            for i, (t, q) in enumerate(zip(ts, seqs, strict=True)):
                if not lineproto.MIN_NS <= t * _NS_PER_MS + q % _MOD <= lineproto.MAX_NS:
                    problems.append((pos[i], 2, f"reading seq {q}: ts_ms {t} is outside InfluxDB's time range"))
                    break
        if problems:
            continue  # nothing is written: only the first problem matters from here on
        is_ppm = series[1] == "methane" and series[2] == "ppm"
        ms, mod, per_lel = _NS_PER_MS, _MOD, ppm_per_lel_pct
        if len(suffix) == 1 and all(map(isfinite, vals)):  # the usual series: one text around the numbers
            sfx = suffix[attrs[0]]
            if is_ppm:
                lines += [f"{head} value={v!r},lel_pct={v / per_lel!r},seq={q}i{sfx} {t * ms + q % mod}"
                          for v, q, t in zip(vals, seqs, ts, strict=True)]
            else:
                lines += [f"{head} value={v!r},seq={q}i{sfx} {t * ms + q % mod}"
                          for v, q, t in zip(vals, seqs, ts, strict=True)]
        else:
            lines += [f"{head} {_value_fields(v, is_ppm, per_lel)},seq={q}i{suffix[a]} {t * ms + q % mod}"
                      for v, q, t, a in zip(vals, seqs, ts, attrs, strict=True)]
    if problems:
        raise LineProtocolError(min(problems)[2])
    return lines


def _value_fields(v: float, is_ppm: bool, ppm_per_lel_pct: float) -> str:
    if not isfinite(v):
        return f'nonfinite="{v!r}"'  # InfluxDB stores no NaN/inf: keep the reading and its seq
    return f"value={v!r},lel_pct={v / ppm_per_lel_pct!r}" if is_ppm else f"value={v!r}"


def reading_keys(cols: Columns, site: str, keep: Sequence[bool] | None = None) -> list[PointKey]:
    """The identities of the points ``reading_lines`` wrote (only needed to take a write back)."""
    out = []
    for i, r in enumerate(cols.readings()):
        if keep is None or keep[i]:
            tags = _tag_pairs(cols.device, site, (r.sensor_id, r.quantity, r.unit))
            out.append(PointKey(r.quantity, tuple(sorted((k, v) for k, v in tags.items() if v)),
                                point_ns(r.ts_ms, r.seq)))
    return out


def batch_line(cols: Columns, site: str, epoch: str, ranges: str, received: int, duplicates: int,
               payload_bytes: int, encoding: str, arrival_ns: int) -> tuple[str, PointKey]:
    tag_pairs = {"site": site, "device": cols.device, "epoch": epoch}
    fields: dict[str, FieldValue] = {
        "batch_id": cols.batch_id, "first_seq": cols.first_seq, "last_seq": cols.last_seq,
        "ranges": ranges, "received": received, "duplicates": duplicates,
        "readings": len(cols), "bytes": payload_bytes, "encoding": encoding,
    }
    key = PointKey(BATCH_MEASUREMENT, tuple(sorted((k, v) for k, v in tag_pairs.items() if v)), arrival_ns)
    return lineproto.line(BATCH_MEASUREMENT, tag_pairs, fields, arrival_ns), key


def _num(doc: dict[str, Any], name: str) -> float:
    v = doc.get(name)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise LineProtocolError(f"alarm event field {name!r} must be a finite number, got {v!r}")
    return float(v)


def _int(doc: dict[str, Any], name: str) -> int:
    v = doc.get(name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise LineProtocolError(f"alarm event field {name!r} must be an integer, got {v!r}")
    return v


def _text(doc: dict[str, Any], name: str) -> str:
    v = doc.get(name)
    if not isinstance(v, str) or not v:
        raise LineProtocolError(f"alarm event field {name!r} must be a non-empty string, got {v!r}")
    return v


ALARM_TYPES = ("raised", "escalated", "cleared", "acknowledged", "fault")


def alarm_line(event: dict[str, Any], site: str, device: str) -> str:
    """One alarm event (issue 12's pinned JSON) as a point; a malformed event raises naming the field."""
    if not isinstance(event, dict):
        raise LineProtocolError(f"alarm event must be a JSON object, got {type(event).__name__}")
    kind = _text(event, "type")
    if kind not in ALARM_TYPES:
        raise LineProtocolError(f"alarm event type {kind!r} is not one of {', '.join(ALARM_TYPES)}")
    tag_pairs = {"site": site, "device": device, "sensor": _text(event, "sensor_id"),
                 "quantity": _text(event, "quantity"), "level": _text(event, "level"), "type": kind}
    fields: dict[str, FieldValue] = {"seq": _int(event, "seq")}
    # A fault (blind detector) may carry no value or threshold.
    for name in ("value", "threshold"):
        if event.get(name) is not None or kind != "fault":
            fields[name] = _num(event, name)
    return lineproto.line(ALARM_MEASUREMENT, tag_pairs, fields, _int(event, "ts_ms") * READINGS_NS_PER_MS)


def status_fields(status: dict[str, Any]) -> dict[str, FieldValue]:
    """The fleet-health numbers out of ``reported.status`` (agent/remote/reported.py); absent or
    mistyped ones are left out rather than guessed."""
    out: dict[str, FieldValue] = {}

    def put(name: str, v: Any, kind: type) -> None:
        if kind is float and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[name] = float(v)
        elif (kind is bool and isinstance(v, bool)) or (kind is str and isinstance(v, str) and v and "\n" not in v):
            out[name] = v

    def section(name: str) -> dict[str, Any]:
        v = status.get(name)
        return v if isinstance(v, dict) else {}

    spool, uplink, cert = section("spool"), section("uplink"), section("cert")
    put("spool_depth", spool.get("depth"), float)
    put("spool_bytes", spool.get("bytes"), float)
    put("oldest_unsent_age_s", spool.get("oldest_unsent_age_s"), float)
    put("connected", uplink.get("connected"), bool)
    put("cert_days_left", cert.get("days_left"), float)
    put("cert_not_after", cert.get("not_after"), str)
    put("agent_version", status.get("agent_version"), str)
    put("uptime_s", status.get("uptime_s"), float)
    return out


def status_line(status: dict[str, Any], site: str, device: str, ns: int) -> str | None:
    fields = status_fields(status)
    if not fields:
        return None
    return lineproto.line(STATUS_MEASUREMENT, {"site": site, "device": device}, fields, ns)
