"""The remote layer of the configuration, persisted so a change made from the cloud survives a
reboot while offline.

Precedence (lowest to highest): defaults < the TOML file < ``METHANE_AGENT__*`` environment <
config-update jobs < the shadow's ``desired.config``. Both remote layers are kept in
``<state_dir>/remote-config.json``.
The file lives in state_dir because /etc is read-only under systemd. It is written atomically (temp
file, fsync, rename; 0600 from the first byte) and read back on start through the same validation;
an overlay that no longer fits the file (a sensor removed locally, say) is ignored as a whole and
the error reported, so the local file always wins over a stale remote layer."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from provisioning.files import write_json

log = logging.getLogger(__name__)

OVERLAY_FILE = "remote-config.json"
LAYERS = ("job", "shadow")  # lowest first


def path_in(state_dir: Path) -> Path:
    return state_dir / OVERLAY_FILE


def load(state_dir: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """({"shadow": doc, "job": doc}, error or None). A missing file is no error."""
    p = path_in(state_dir)
    try:
        raw = json.loads(p.read_bytes())
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as exc:
        return {}, f"{p}: unreadable: {exc}"
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k, {}), dict) for k in LAYERS):
        return {}, f"{p}: not an overlay document (expected an object with 'shadow' and 'job' objects)"
    return {k: raw.get(k, {}) for k in LAYERS}, None


def save(state_dir: Path, layers: dict[str, dict[str, Any]], shadow_version: int | None) -> None:
    write_json(path_in(state_dir), {**{k: layers.get(k, {}) for k in LAYERS}, "shadow_version": shadow_version})
