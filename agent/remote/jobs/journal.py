"""The job journal: one atomic JSON file in state_dir naming the job in hand and its phase, so a
job that restarts the agent or the device ends with the right final status after the restart,
exactly once (the entry is removed only after IoT Core accepted the final status, or refused it
because the execution is already terminal).

Phases: ``running`` (the action was under way: a restart now means it was interrupted →
FAILED), ``restarting`` (restart-agent asked for the restart → SUCCEEDED), ``rebooting``
(SUCCEEDED if the boot id changed, else FAILED), ``done:<STATUS>`` (the action ended; its final
status, with ``reason``, had not yet been accepted by IoT Core: it is sent again as it was)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from provisioning.files import remove, write_json

log = logging.getLogger(__name__)

JOURNAL_FILE = "job-journal.json"


@dataclass(frozen=True)
class Entry:
    job_id: str
    action: str
    phase: str
    boot_id: str
    started_ts: float
    reason: str = ""


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOURNAL_FILE

    def read(self) -> Entry | None:
        try:
            raw = json.loads(self.path.read_bytes())
            return Entry(str(raw["job_id"]), str(raw["action"]), str(raw["phase"]), str(raw["boot_id"]),
                         float(raw["started_ts"]), str(raw.get("reason", "")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("job journal unreadable; discarded", extra={"path": str(self.path), "error": str(exc)})
            remove(self.path)
            return None

    def write(self, entry: Entry) -> None:
        write_json(self.path, asdict(entry))

    def clear(self) -> None:
        remove(self.path)
