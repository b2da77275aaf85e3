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
from dataclasses import dataclass
from typing import Any

from agent.payload import Batch
from agent.reading import Reading
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


def epoch_of(batch: Batch) -> str:
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


def _series_head(batch: Batch, site: str, r: Reading) -> tuple[str, tuple[tuple[str, str], ...]]:
    tag_pairs = {"site": site, "device": batch.device, "sensor": r.sensor_id, "unit": r.unit}
    try:
        head = lineproto.measurement(r.quantity) + lineproto.tags(tag_pairs)
    except LineProtocolError as exc:
        raise LineProtocolError(f"reading seq {r.seq}: {exc}") from None
    return head, tuple(sorted((k, v) for k, v in tag_pairs.items() if v))


# Sparse flags: ``alarm`` only when true, ``clock_synced`` only when false. Every field is a column
# InfluxDB indexes and compacts; writing the common values on every point doubled influxd's CPU per
# reading (bench/bench_ingest.py). Queries ask ``"alarm" = true`` / ``"clock_synced" = false``.
_MARKS = {(False, True): "", (True, True): ",alarm=t", (False, False): ",clock_synced=f",
          (True, False): ",alarm=t,clock_synced=f"}


def reading_lines(batch: Batch, site: str, keep: set[int] | None = None,
                  lel_vol_percent: float = DEFAULT_LEL_VOL_PERCENT) -> list[str]:
    """Line protocol for the batch's readings (only those whose seq is in ``keep`` when given).
    Raises LineProtocolError naming the reading before anything is written. The hot path of the
    ingest: per series and per flag set the text is built once."""
    ppm_per_lel_pct = lel_vol_percent * 100.0  # LEL in ppm / 100
    heads: dict[tuple[str, str, str], tuple[str, bool]] = {}
    flag_text: dict[tuple[str, ...], str] = {(): ""}
    lines: list[str] = []
    append = lines.append
    isfinite = math.isfinite
    for r in batch.readings:
        if keep is not None and r.seq not in keep:
            continue
        series = (r.sensor_id, r.quantity, r.unit)
        pre = heads.get(series)
        if pre is None:
            pre = heads[series] = (_series_head(batch, site, r)[0], r.quantity == "methane" and r.unit == "ppm")
        head, is_ppm = pre
        flags = flag_text.get(r.flags)
        if flags is None:
            try:
                flags = flag_text[r.flags] = ",flags=" + lineproto.field_value("flags", ",".join(r.flags))
            except LineProtocolError as exc:
                raise LineProtocolError(f"reading seq {r.seq}: {exc}") from None
        value = r.value
        seq = r.seq
        if isfinite(value):
            v = f"value={float(value)!r},lel_pct={value / ppm_per_lel_pct!r}" if is_ppm else f"value={float(value)!r}"
        else:
            v = f'nonfinite="{value!r}"'
        ns = r.ts_ms * READINGS_NS_PER_MS + seq % SEQ_DIGITS_MOD
        if not lineproto.MIN_NS <= ns <= lineproto.MAX_NS:
            raise LineProtocolError(f"reading seq {seq}: ts_ms {r.ts_ms} is outside InfluxDB's time range")
        append(f"{head} {v},seq={seq}i{_MARKS[r.alarm, r.clock_synced]}{flags} {ns}")
    return lines


def reading_keys(batch: Batch, site: str, keep: set[int] | None = None) -> list[PointKey]:
    """The identities of the points ``reading_lines`` wrote (only needed to take a write back)."""
    tags: dict[tuple[str, str, str], tuple[tuple[str, str], ...]] = {}
    out = []
    for r in batch.readings:
        if keep is not None and r.seq not in keep:
            continue
        series = (r.sensor_id, r.quantity, r.unit)
        if series not in tags:
            tags[series] = _series_head(batch, site, r)[1]
        out.append(PointKey(r.quantity, tags[series], point_ns(r.ts_ms, r.seq)))
    return out


def batch_line(batch: Batch, site: str, epoch: str, ranges: str, received: int, duplicates: int,
               payload_bytes: int, encoding: str, arrival_ns: int) -> tuple[str, PointKey]:
    tag_pairs = {"site": site, "device": batch.device, "epoch": epoch}
    fields: dict[str, FieldValue] = {
        "batch_id": batch.batch_id, "first_seq": batch.first_seq, "last_seq": batch.last_seq,
        "ranges": ranges, "received": received, "duplicates": duplicates,
        "readings": len(batch.readings), "bytes": payload_bytes, "encoding": encoding,
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
