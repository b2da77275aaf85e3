"""The spool's SQLite file: schema, health check at open, and quarantine of a corrupt file.

Row layout is chosen for SD-card wear (see docs/spool.md): the sequence number is the rowid
(INTEGER PRIMARY KEY, no secondary index), the text parts of a reading (sensor, quantity, unit,
flags) are interned once in ``series`` and a reading row is only ``(seq, ts, k, v)`` where
``k = series_id << 1 | clock_synced``: about 25 bytes, 20 rows per 512-byte page. Alarm readings live
in their own table with the same layout, so "evict the oldest routine reading" is a delete at the
left edge of one b-tree instead of a scan past alarms.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

APPLICATION_ID = 0x4D455448  # "METH": tells our spool apart from any other SQLite file
SCHEMA_VERSION = 1
READING_TABLES = ("routine", "alarm")

SCHEMA = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    sensor_id TEXT NOT NULL,
    quantity TEXT NOT NULL,
    unit TEXT NOT NULL,
    flags TEXT NOT NULL,
    UNIQUE (sensor_id, quantity, unit, flags)
);
CREATE TABLE routine (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, k INTEGER NOT NULL, v REAL);
CREATE TABLE alarm (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, k INTEGER NOT NULL, v REAL);
"""

EXPECTED_COLUMNS = {
    "meta": ["k", "v"],
    "series": ["id", "sensor_id", "quantity", "unit", "flags"],
    "routine": ["seq", "ts", "k", "v"],
    "alarm": ["seq", "ts", "k", "v"],
}

# Primary SQLite result codes (the low byte of an extended code).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26


class CorruptSpool(Exception):
    """The file is not a usable spool: garbage, truncated, malformed or someone else's schema."""


def primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def is_corruption(exc: sqlite3.Error) -> bool:
    return primary_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)


def is_disk_full(exc: sqlite3.Error) -> bool:
    return primary_code(exc) == SQLITE_FULL


@dataclass(frozen=True)
class Recovered:
    """What could still be read from a corrupt spool before it was moved aside."""

    hwm: int | None = None
    reserved: int = 0  # the durable reservation (0 when unreadable)
    epoch: str = ""  # the sequence space's name ('' when unreadable)
    evicted_routine: int = 0
    evicted_alarm: int = 0
    disk_full_events: int = 0
    seq_skipped: int = 0


BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def read_boot_id() -> str | None:
    """This boot's id: a restart within the same boot lost nothing the page cache held (a process
    crash), a different boot may have (power loss). None when unreadable (treated as a new boot)."""
    try:
        return BOOT_ID_PATH.read_text().strip() or None
    except OSError:
        return None


def precreate(path: Path) -> None:
    """Create the file 0600 before SQLite does, so readings (and the -wal/-shm that inherit the
    mode) are never world-readable, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return
    # Make the new name durable: SQLite syncs the file's content, never its directory entry.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def check(conn: sqlite3.Connection) -> bool:
    """Raise CorruptSpool unless ``conn`` holds a healthy spool. Returns False for an empty file
    (a new spool). Only reads: a foreign database is never modified before it is moved aside."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            name: sql for name, sql in conn.execute("SELECT name, sql FROM sqlite_schema WHERE type='table'")
        }
        if not tables and app_id == 0 and version == 0:
            return False
        if app_id != APPLICATION_ID:
            raise CorruptSpool(f"application_id is {app_id:#x}, not a methane-agent spool")
        if version != SCHEMA_VERSION:
            raise CorruptSpool(f"schema version {version}, expected {SCHEMA_VERSION}")
        for table, columns in EXPECTED_COLUMNS.items():
            if table not in tables:
                raise CorruptSpool(f"table {table!r} is missing")
            found = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            if found != columns:
                raise CorruptSpool(f"table {table!r} has columns {found}, expected {columns}")
        result = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if result != ["ok"]:
            raise CorruptSpool("quick_check: " + "; ".join(result[:5]))
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):
            raise CorruptSpool(str(exc)) from exc
        raise
    return True


def create_schema(conn: sqlite3.Connection, hwm: int, counters: dict[str, int]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.executemany(
            "INSERT INTO meta (k, v) VALUES (?, ?)",
            [("hwm", hwm), ("created_ms", int(time.time() * 1000)), *counters.items()],
        )
        conn.execute("COMMIT")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def recover(conn: sqlite3.Connection) -> Recovered:
    """Best effort: read the high-water mark and counters from a spool that failed its check.
    Every query may fail on its own; what fails is simply not recovered."""
    hwm: int | None = None
    meta: dict[str, int] = {}
    with contextlib.suppress(sqlite3.Error):
        meta = {k: int(v) for k, v in conn.execute("SELECT k, v FROM meta") if isinstance(v, int)}
    candidates = [meta["hwm"]] if "hwm" in meta else []
    for table in READING_TABLES:
        with contextlib.suppress(sqlite3.Error):
            row = conn.execute(f"SELECT max(seq) FROM {table}").fetchone()  # noqa: S608 - fixed names
            if row and isinstance(row[0], int):
                candidates.append(row[0])
    if candidates:
        hwm = max(candidates)
    epoch = meta.get("epoch")
    return Recovered(
        hwm=hwm,
        reserved=meta.get("reserved", 0),
        epoch=f"{epoch:08x}" if isinstance(epoch, int) and 0 <= epoch < 2**32 else "",
        evicted_routine=meta.get("evicted_routine", 0),
        evicted_alarm=meta.get("evicted_alarm", 0),
        disk_full_events=meta.get("disk_full_events", 0),
        seq_skipped=meta.get("seq_skipped", 0),
    )


def quarantine(path: Path, keep: int) -> Path:
    """Move ``path`` and its -wal/-shm aside under one timestamped name; keep the newest ``keep``
    quarantined sets (older ones are deleted, each deletion logged) so repeated corruption cannot
    fill the card. Returns the new name of the main file."""
    now_ns = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns // 10**9)) + f".{now_ns // 1000 % 10**6:06d}Z"
    base = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 0
    while base.exists() or Path(f"{base}-wal").exists():
        n += 1
        base = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm", ""):
        src = Path(f"{path}{suffix}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(src, f"{base}{suffix}")
    _prune(path, keep)
    return base


def _prune(path: Path, keep: int) -> None:
    prefix = f"{path.name}.corrupt-"
    # The UTC timestamp in the name sorts chronologically.
    mains = sorted(
        (p for p in path.parent.iterdir() if p.name.startswith(prefix) and not p.name.endswith(("-wal", "-shm"))),
        key=lambda p: p.name,
    )
    for old in mains[: max(0, len(mains) - keep)]:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{old}{suffix}")
        log.warning("deleted an old quarantined spool", extra={"path": str(old), "keep": keep})


@dataclass(frozen=True)
class Peek:
    """What a spool file holds, read without opening it as a Spool (no quarantine, no migration)."""

    readings: int
    alarm_readings: int
    oldest_ts_ms: int | None
    file_bytes: int
    epoch: str
    seq_skipped: int
    clean_shutdown: bool | None  # None: a file from before the mark existed
    journal_gen: int = 0


def peek(path: Path) -> Peek:
    """Count what ``path`` holds, strictly read-only. Raises sqlite3.Error when it cannot be read
    (locked by the running agent, not a spool, corrupt)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as conn:
        rows = alarms = 0
        oldest: int | None = None
        for table in READING_TABLES:
            n, low = conn.execute(f"SELECT count(*), min(ts) FROM {table}").fetchone()  # noqa: S608
            rows += n
            if table == "alarm":
                alarms = n
            if low is not None:
                oldest = low if oldest is None else min(oldest, low)
        meta = {k: v for k, v in conn.execute("SELECT k, v FROM meta") if isinstance(v, int)}
    epoch = meta.get("epoch")
    clean = meta.get("clean")
    return Peek(
        readings=rows,
        alarm_readings=alarms,
        oldest_ts_ms=oldest,
        file_bytes=path.stat().st_size,
        epoch=f"{epoch:08x}" if isinstance(epoch, int) and 0 <= epoch < 2**32 else "",
        seq_skipped=meta.get("seq_skipped", 0),
        clean_shutdown=None if clean is None else clean == 1,
        journal_gen=meta.get("journal_gen", 0),
    )
