"""The spool's tiny sidecar file: what must outlive the spool database itself.

A corrupt spool is moved aside and replaced by an empty one. Two facts must survive that: how many
times it happened (shown in status) and how far the sequence numbers went, so a fresh database never
hands out a sequence number the cloud has already seen (it would drop the new reading as a
duplicate). The sidecar holds a *reservation*: every committed sequence number is at most
``seq_reserved``. It is rewritten only when the spool is about to commit past the reservation (once
per ``reserve`` readings, i.e. hours apart), on quarantine, and on open, so it costs the SD card
almost nothing. Writes are atomic (temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from provisioning.files import write_atomic

log = logging.getLogger(__name__)

VERSION = 1
_EPOCH = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True)
class SidecarState:
    quarantined: int = 0
    seq_reserved: int = 0  # no committed sequence number is above this
    seq_committed: int = 0  # committed high-water mark when the file was written (a lower bound)
    epoch: str = ""  # names this device's sequence space; a new one only when the sequence restarts


def sidecar_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".state.json")


def load(path: Path) -> SidecarState | None:
    """Read the sidecar; ``None`` when it is missing or unreadable (logged, never raised: the spool
    must open even when its sidecar was damaged)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("spool sidecar unreadable", extra={"path": str(path), "error": str(exc)})
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"unsupported sidecar version {data.get('version') if isinstance(data, dict) else data!r}")
        fields = {}
        for name in ("quarantined", "seq_reserved", "seq_committed"):
            value = data.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
            fields[name] = value
        epoch = data.get("epoch", "")
        if not isinstance(epoch, str) or not _EPOCH.fullmatch(epoch or "0" * 8):
            raise ValueError(f"epoch must be 8 lowercase hex digits, got {epoch!r}")
        return SidecarState(**fields, epoch=epoch)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        log.warning("spool sidecar is damaged; ignoring it", extra={"path": str(path), "error": str(exc)})
        return None


def store(path: Path, state: SidecarState) -> None:
    """Replace the sidecar atomically. Raises OSError (e.g. ENOSPC) and leaves the old file intact."""
    body = json.dumps({"version": VERSION, **asdict(state)}, separators=(",", ":")).encode()
    write_atomic(path, body, 0o600)
