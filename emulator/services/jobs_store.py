"""SQLite persistence for the Jobs service: jobs, their per-thing executions and each thing's
execution-number counter. Knows rows, not rules (those live in ``jobs``)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED"})
PENDING = ("IN_PROGRESS", "QUEUED")


@dataclass
class Job:
    job_id: str
    document: dict[str, Any]
    status: str  # IN_PROGRESS | CANCELED | COMPLETED | DELETED
    created_at: float
    last_updated_at: float
    timeout_minutes: int | None = None
    force_canceled: bool = False


@dataclass
class Rollout:
    """A fleet job's targets and how they are notified: ``targets[:released]`` have executions,
    the rest wait for the rate (``per_minute``; None = all at once) unless the job was aborted."""

    job_id: str
    targets: list[str]
    released: int
    per_minute: int | None = None
    abort_criteria: list[dict[str, Any]] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    reason_code: str | None = None

    @property
    def unreleased(self) -> int:
        return len(self.targets) - self.released


@dataclass
class Execution:
    job_id: str
    thing: str
    execution_number: int
    status: str
    queued_at: float
    last_updated_at: float
    version_number: int = 1
    status_details: dict[str, str] = field(default_factory=dict)
    started_at: float | None = None
    step_deadline: float | None = None
    progress_deadline: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def deadline(self) -> float | None:
        times = [t for t in (self.step_deadline, self.progress_deadline) if t is not None]
        return min(times) if times else None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS job (
  job_id TEXT PRIMARY KEY, document TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL,
  last_updated_at REAL NOT NULL, timeout_minutes INTEGER, force_canceled INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS execution (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, thing TEXT NOT NULL,
  execution_number INTEGER NOT NULL, status TEXT NOT NULL, queued_at REAL NOT NULL,
  last_updated_at REAL NOT NULL, version_number INTEGER NOT NULL, status_details TEXT NOT NULL,
  started_at REAL, step_deadline REAL, progress_deadline REAL, UNIQUE (job_id, thing));
CREATE INDEX IF NOT EXISTS execution_thing ON execution (thing, status);
CREATE TABLE IF NOT EXISTS thing_counter (thing TEXT PRIMARY KEY, last_execution_number INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS job_rollout (
  job_id TEXT PRIMARY KEY, per_minute INTEGER, abort_criteria TEXT NOT NULL, targets TEXT NOT NULL,
  released INTEGER NOT NULL, groups TEXT NOT NULL, reason_code TEXT);
"""

_EXEC_COLS = (
    "job_id, thing, execution_number, status, queued_at, last_updated_at, version_number,"
    " status_details, started_at, step_deadline, progress_deadline"
)

_SELECT_EXEC = "SELECT " + _EXEC_COLS + " FROM execution WHERE"  # noqa: S608 - constant column list
_INSERT_EXEC = "INSERT INTO execution (" + _EXEC_COLS + ") VALUES"


class JobsStore:
    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing for multi-row changes (a job and all its executions)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---- jobs ----

    def job(self, job_id: str) -> Job | None:
        row = self._db.execute(
            "SELECT job_id, document, status, created_at, last_updated_at, timeout_minutes, force_canceled"
            " FROM job WHERE job_id=?",
            (job_id,),
        ).fetchone()
        return None if row is None else _job(row)

    def jobs(self) -> list[Job]:
        rows = self._db.execute(
            "SELECT job_id, document, status, created_at, last_updated_at, timeout_minutes, force_canceled"
            " FROM job ORDER BY created_at, job_id"
        ).fetchall()
        return [_job(r) for r in rows]

    def save_job(self, job: Job) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO job VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job.job_id, json.dumps(job.document), job.status, job.created_at, job.last_updated_at,
             job.timeout_minutes, int(job.force_canceled)),
        )

    # ---- rollouts ----

    def rollout(self, job_id: str) -> Rollout | None:
        row = self._db.execute(
            "SELECT job_id, targets, released, per_minute, abort_criteria, groups, reason_code"
            " FROM job_rollout WHERE job_id=?", (job_id,)
        ).fetchone()
        return None if row is None else _rollout(row)

    def rolling_out(self) -> list[Rollout]:
        """Rollouts with targets still waiting for their turn (the timer's work list)."""
        rows = self._db.execute(
            "SELECT r.job_id, r.targets, r.released, r.per_minute, r.abort_criteria, r.groups, r.reason_code"
            " FROM job_rollout r JOIN job j ON j.job_id = r.job_id"
            " WHERE j.status = 'IN_PROGRESS' AND r.released < json_array_length(r.targets)"
        ).fetchall()
        return [_rollout(r) for r in rows]

    def save_rollout(self, r: Rollout) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO job_rollout VALUES (?, ?, ?, ?, ?, ?, ?)",
            (r.job_id, r.per_minute, json.dumps(r.abort_criteria), json.dumps(r.targets), r.released,
             json.dumps(r.groups), r.reason_code),
        )

    def status_counts(self, job_id: str) -> dict[str, int]:
        rows = self._db.execute("SELECT status, count(*) FROM execution WHERE job_id=? GROUP BY status", (job_id,))
        return {str(s): int(n) for s, n in rows}

    # ---- executions ----

    def next_execution_number(self, thing: str) -> int:
        self._db.execute(
            "INSERT INTO thing_counter VALUES (?, 1) ON CONFLICT(thing)"
            " DO UPDATE SET last_execution_number = last_execution_number + 1",
            (thing,),
        )
        row = self._db.execute("SELECT last_execution_number FROM thing_counter WHERE thing=?", (thing,))
        return int(row.fetchone()[0])

    def execution(self, job_id: str, thing: str) -> Execution | None:
        row = self._db.execute(
            _SELECT_EXEC + " job_id=? AND thing=?", (job_id, thing)
        ).fetchone()
        return None if row is None else _execution(row)

    def executions_of_job(self, job_id: str) -> list[Execution]:
        rows = self._db.execute(
            _SELECT_EXEC + " job_id=? ORDER BY seq", (job_id,)
        ).fetchall()
        return [_execution(r) for r in rows]

    def pending(self, thing: str) -> list[Execution]:
        """IN_PROGRESS first, then QUEUED, each in queue order: IoT Core's notion of 'next'."""
        rows = self._db.execute(
            _SELECT_EXEC + " thing=? AND status IN ('IN_PROGRESS', 'QUEUED')"
            " ORDER BY status != 'IN_PROGRESS', queued_at, seq",
            (thing,),
        ).fetchall()
        return [_execution(r) for r in rows]

    def running(self) -> list[Execution]:
        rows = self._db.execute(
            _SELECT_EXEC + " status='IN_PROGRESS'"
            " AND (step_deadline IS NOT NULL OR progress_deadline IS NOT NULL)"
        ).fetchall()
        return [_execution(r) for r in rows]

    def save_execution(self, ex: Execution) -> None:
        self._db.execute(
            _INSERT_EXEC + " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(job_id, thing) DO UPDATE SET execution_number=excluded.execution_number,"
            " status=excluded.status, queued_at=excluded.queued_at, last_updated_at=excluded.last_updated_at,"
            " version_number=excluded.version_number, status_details=excluded.status_details,"
            " started_at=excluded.started_at, step_deadline=excluded.step_deadline,"
            " progress_deadline=excluded.progress_deadline",
            (ex.job_id, ex.thing, ex.execution_number, ex.status, ex.queued_at, ex.last_updated_at,
             ex.version_number, json.dumps(ex.status_details), ex.started_at, ex.step_deadline,
             ex.progress_deadline),
        )


def _job(row: tuple[Any, ...]) -> Job:
    return Job(row[0], json.loads(row[1]), row[2], row[3], row[4], row[5], bool(row[6]))


def _rollout(row: tuple[Any, ...]) -> Rollout:
    return Rollout(job_id=row[0], targets=json.loads(row[1]), released=row[2], per_minute=row[3],
                   abort_criteria=json.loads(row[4]), groups=json.loads(row[5]), reason_code=row[6])


def _execution(row: tuple[Any, ...]) -> Execution:
    return Execution(
        job_id=row[0], thing=row[1], execution_number=row[2], status=row[3], queued_at=row[4],
        last_updated_at=row[5], version_number=row[6], status_details=json.loads(row[7]),
        started_at=row[8], step_deadline=row[9], progress_deadline=row[10],
    )
