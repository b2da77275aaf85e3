"""The batch envelope shared by every encoding, and the invariants both sides check."""

from __future__ import annotations

from dataclasses import dataclass

from agent.payload.errors import PayloadError
from agent.reading import Reading

SEQ_MAX = 2**63 - 1  # SQLite INTEGER; the spool's sequence numbers live there
TS_MIN, TS_MAX = -(2**63), 2**63 - 1  # int64 milliseconds; a Pi without RTC may start in 1970


@dataclass(frozen=True)
class Batch:
    """One MQTT message worth of readings.

    ``first_seq``/``last_seq`` bound the readings' sequence numbers; gaps inside are readings the
    spool evicted, so a consumer can tell eviction from loss in transit. ``batch_id`` is derived from
    (device, first_seq, last_seq) so a resend after a lost PUBACK carries the same id and the cloud
    can drop the duplicate.
    """

    device: str
    batch_id: str
    first_seq: int
    last_seq: int
    readings: list[Reading]


def batch_id(device: str, first_seq: int, last_seq: int, epoch: str = "") -> str:
    """Readable and deterministic: ``<device>/<first_seq>-<last_seq>`` (thing names contain no '/'),
    or ``<device>/<epoch>:<first_seq>-<last_seq>`` when the spool names its sequence space: a device
    whose spool was lost entirely restarts at 1 under a new epoch, so its new readings are not
    mistaken downstream for duplicates of old ones."""
    return f"{device}/{epoch}:{first_seq}-{last_seq}" if epoch else f"{device}/{first_seq}-{last_seq}"


def make_batch(device: str, readings: list[Reading], epoch: str = "") -> Batch:
    """The batch the uplink sends for these (ordered) readings."""
    if not readings:
        raise PayloadError("a batch needs at least one reading")
    first, last = readings[0].seq, readings[-1].seq
    return Batch(device, batch_id(device, first, last, epoch), first, last, readings)


def _is_int(v: object) -> bool:
    return type(v) is int  # bool is an int subclass; a True seq is a bug, not a 1


def check_envelope(batch: Batch) -> None:
    """Envelope invariants; per-reading fields are checked by the encoders as they walk them."""
    if not isinstance(batch.device, str) or not batch.device:
        raise PayloadError("batch device must be a non-empty string")
    if not isinstance(batch.batch_id, str) or not batch.batch_id:
        raise PayloadError("batch batch_id must be a non-empty string")
    for name in ("first_seq", "last_seq"):
        v = getattr(batch, name)
        if not _is_int(v) or not 0 <= v <= SEQ_MAX:
            raise PayloadError(f"batch {name} must be an integer in 0..2^63-1, got {v!r}")
    if batch.first_seq > batch.last_seq:
        raise PayloadError(f"batch first_seq {batch.first_seq} is after last_seq {batch.last_seq}")
    if not batch.readings:
        raise PayloadError("a batch needs at least one reading")


def check_reading(r: Reading, prev_seq: int, batch: Batch) -> None:
    """Field types and seq order of one reading; ``prev_seq`` is the previous reading's (or -1)."""
    if not isinstance(r, Reading):
        raise PayloadError(f"batch readings must be Reading objects, got {type(r).__name__}")
    seq = r.seq
    if not _is_int(seq):
        raise PayloadError(f"reading seq must be an integer, got {seq!r}")
    if seq <= prev_seq:
        raise PayloadError(f"reading seq {seq} does not increase (previous {prev_seq})")
    if not batch.first_seq <= seq <= batch.last_seq:
        raise PayloadError(f"reading seq {seq} outside the batch range {batch.first_seq}..{batch.last_seq}")
    if not _is_int(r.ts_ms) or not TS_MIN <= r.ts_ms <= TS_MAX:
        raise PayloadError(f"reading seq {seq}: ts_ms must be a 64-bit integer, got {r.ts_ms!r}")
    if type(r.clock_synced) is not bool or type(r.alarm) is not bool:
        raise PayloadError(f"reading seq {seq}: clock_synced and alarm must be booleans")
    for name in ("sensor_id", "quantity", "unit"):
        if not isinstance(getattr(r, name), str):
            raise PayloadError(f"reading seq {seq}: {name} must be a string")
    if not isinstance(r.flags, tuple) or not all(isinstance(f, str) for f in r.flags):
        raise PayloadError(f"reading seq {seq}: flags must be a tuple of strings")
    if type(r.value) is not float and (type(r.value) is not int):
        raise PayloadError(f"reading seq {seq}: value must be a number, got {type(r.value).__name__}")
