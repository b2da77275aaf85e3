"""The durable spool: every reading is kept on disk from its commit until the broker acknowledged it.

Contract (docs/spool.md has the reasoning and the measured disk-write figures):

* ``append`` gives each reading the next per-device sequence number and keeps it in RAM; ``commit``
  writes everything pending in ONE SQLite (WAL) transaction. A reading exists once that commits.
  The caller commits when ``commit_due`` says so (group commit: at most ``commit_interval_s`` in RAM),
  so an SD card is written about once a second, not once per reading.
* Committed sequence numbers are monotonic and never reused within an epoch: a number handed out
  but never committed (crash before commit) is handed out again after restart, the high-water mark
  is kept in ``meta`` whenever rows are deleted, and after a restart that may have lost commits
  (power cut at NORMAL) the sequence continues after the durable reservation (recovery.py).
* ``ack`` deletes a range only after the broker's PUBACK for the batch carrying it (acks.py).
* The spool is bounded by ``max_bytes`` and by free-disk headroom. When full it evicts the oldest
  routine readings; alarm readings go only when no routine reading is left (logged at ERROR). Every
  eviction is counted in ``meta`` in the same transaction. SQLITE_FULL / ENOSPC evicts and retries
  (budget.py).
* A corrupt file is moved aside (``db.quarantine``), counted in a sidecar that outlives the
  database, and a fresh spool continues the sequence (recovery.py, sidecar.py).

Used from one thread (the agent's asyncio loop). Nothing here raises on disk trouble during normal
operation: a failed commit keeps its readings in RAM (bounded), logs, and is retried by the next
commit. Only ``open`` raises ``SpoolError`` when the file cannot be used at all (permissions,
another process holds it), and bad arguments raise ``ValueError``/``TypeError`` changing nothing.

Parts: core.py (the ``Spool`` API), validation.py, store.py (the SQLite file at run time), budget.py
(budget and eviction), acks.py (ack and retry), recovery.py (sequence recovery and quarantine),
db.py (schema, health check, quarantine of the file), sidecar.py (what outlives the database).
"""

from agent.reading import NewReading, Reading
from agent.spool.core import Spool
from agent.spool.model import SYNCHRONOUS_LEVELS, FsStat, SpoolError, SpoolStats, SpoolTuning

__all__ = [
    "SYNCHRONOUS_LEVELS",
    "FsStat",
    "NewReading",
    "Reading",
    "Spool",
    "SpoolError",
    "SpoolStats",
    "SpoolTuning",
]
