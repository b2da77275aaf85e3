"""RFC 7386 JSON merge patch, the one implementation in the project: a shadow delta, a
config-update job's patch and the emulator's Device Shadow update all have this shape (objects
merge key by key, ``null`` deletes, anything else replaces). Standard library only, so the emulator
uses it without loading the agent's config model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(target: Any, patch: Mapping[str, Any]) -> dict[str, Any]:
    """``target`` patched by the object ``patch`` (a target that is not an object counts as ``{}``,
    and ``null`` inside a patch never survives into the result)."""
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            out[key] = merge_patch(out.get(key), value)
        else:
            out[key] = value
    return out
