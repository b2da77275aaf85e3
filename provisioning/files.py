"""Crash-safe file writes for credentials and state.

A power cut on a Raspberry Pi's SD card must never leave a half-written key, certificate or state
file that a restart then trusts. Every write goes to a temp file in the same directory, created by
``open`` with its final mode (a secret is never world-readable, not even for a moment), is fsynced,
renamed over the target, and the directory is fsynced so the rename itself survives power loss.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

SECRET_MODE = 0o600
DIR_MODE = 0o700


class CredentialError(ValueError):
    """A key or certificate file is unusable; the message names the file, never its content.
    (Defined here, not in ``keys``, so catching it does not load the certificate library.)"""


def ensure_dir(path: Path, mode: int = DIR_MODE) -> Path:
    """Create ``path`` (and parents) with ``mode``; an existing directory is left as it is."""
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive(path: Path, mode: int = SECRET_MODE) -> int:
    """Open a new file that must not exist yet, with ``mode`` from its first byte."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)


def write_atomic(path: Path, data: bytes, mode: int = SECRET_MODE, *, durable: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically: readers see the old content or the new, never a
    mix, and a crash leaves at most a stray ``.<name>.*.tmp`` that :func:`remove_stale_temps`
    clears. ``durable=False`` skips the fsyncs, for derived files rebuilt after a crash anyway."""
    path = Path(path)
    ensure_dir(path.parent)
    tmp: Path | None = None
    fd = -1
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = create_exclusive(candidate, mode)
        except FileExistsError:
            continue
        tmp = candidate
        break
    if tmp is None:
        raise FileExistsError(f"could not create a temp file next to {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def write_json(path: Path, obj: Any, mode: int = SECRET_MODE) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"
    return write_atomic(path, text.encode(), mode)


def remove(path: Path) -> bool:
    """Delete a file and make the deletion durable; False when it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def remove_stale_temps(directory: Path) -> int:
    """Delete temp files a crash left behind in ``directory``; returns how many."""
    n = 0
    if not directory.is_dir():
        return 0
    for p in directory.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    if n:
        fsync_dir(directory)
    return n
