"""The device identity on disk and the start-up permission check.

``<state_dir>/identity/`` holds ``identity.json`` (thing name, endpoint, certificate id, the
DeviceConfiguration the template returned, and the names of the certificate and key files), the
certificate and key named after the certificate id / key fingerprint, and the provisioning state
file. Because the files are named per generation and ``identity.json`` names the current pair,
switching identity (rotation, ``provision --force``) is one atomic rename of ``identity.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import stat
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from provisioning.files import write_json

IDENTITY_DIR = "identity"
IDENTITY_FILE = "identity.json"
FORMAT = 1


class IdentityError(ValueError):
    """identity.json is unreadable or inconsistent; the message names the file and the problem."""


class PermissionProblem(PermissionError):
    """Credential files a stranger could read or replace. ``problems`` lists (file, what is wrong);
    the message ends with the exact commands that fix it."""

    def __init__(self, problems: list[tuple[Path, str]], user: str) -> None:
        self.problems = problems
        self.user = user
        lines = [f"  {p}: {why}" for p, why in problems]
        fixes = sorted({str(p) for p, why in problems if "missing" not in why})
        fix = [f"  chown {user}: {f} && chmod 600 {f}" for f in fixes]
        msg = "refusing to start: credential files are not private to user " + repr(user) + ":\n" + "\n".join(lines)
        if fix:
            msg += "\nfix with:\n" + "\n".join(fix)
        super().__init__(msg)


def identity_dir(state_dir: Path) -> Path:
    return Path(state_dir) / IDENTITY_DIR


@dataclass(frozen=True)
class Identity:
    thing_name: str
    endpoint: str
    certificate_id: str
    cert_file: Path
    key_file: Path
    device_configuration: dict[str, str] = field(default_factory=dict)
    template_name: str = ""
    provisioned_at: str = ""
    # The certificate's notAfter (ISO 8601, UTC), recorded when the certificate is stored, so the
    # running agent reports expiry without loading a certificate parser ("" = parse the file).
    not_after: str = ""

    def files(self) -> list[Path]:
        return [self.cert_file, self.key_file]

    def to_json(self, directory: Path) -> dict[str, Any]:
        d = asdict(self)
        # Stored relative to the identity folder so a moved state dir still works.
        d["cert_file"] = _rel(self.cert_file, directory)
        d["key_file"] = _rel(self.key_file, directory)
        d["format"] = FORMAT
        return d


def _rel(path: Path, directory: Path) -> str:
    try:
        return str(Path(path).relative_to(directory))
    except ValueError:
        return str(path)


def save(identity: Identity, state_dir: Path) -> Path:
    d = identity_dir(state_dir)
    return write_json(d / IDENTITY_FILE, identity.to_json(d), 0o600)


def load(state_dir: Path) -> Identity | None:
    """The current identity, or None when the device was never provisioned."""
    d = identity_dir(state_dir)
    path = d / IDENTITY_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IdentityError(f"{path}: not valid JSON ({exc})") from None
    except PermissionError:
        raise IdentityError(f"{path}: permission denied (is the agent running as the file's owner?)") from None
    if not isinstance(raw, dict):
        raise IdentityError(f"{path}: expected a JSON object")
    try:
        conf = raw.get("device_configuration") or {}
        if not isinstance(conf, dict):
            raise TypeError("device_configuration must be an object")
        ident = Identity(
            thing_name=_str(raw, "thing_name"),
            endpoint=str(raw.get("endpoint", "")),
            certificate_id=_str(raw, "certificate_id"),
            cert_file=d / _str(raw, "cert_file"),
            key_file=d / _str(raw, "key_file"),
            device_configuration={str(k): str(v) for k, v in conf.items()},
            template_name=str(raw.get("template_name", "")),
            provisioned_at=str(raw.get("provisioned_at", "")),
            not_after=str(raw.get("not_after", "")),
        )
    except (KeyError, TypeError) as exc:
        raise IdentityError(f"{path}: {exc}") from None
    for f in ident.files():
        if not f.exists():
            raise IdentityError(f"{path}: names {f.name}, which does not exist")
    return ident


def _str(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise KeyError(f"missing or empty {key!r}")
    return value


def current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def check_permissions(paths: Iterable[Path]) -> None:
    """Refuse credentials that another user could read, write or own: each file must exist, be a
    regular file owned by the running user, with no group/other permission bits (0600 and 0400
    pass). Symlinks are followed and the target is judged, as the TLS library would read it.
    Raises PermissionProblem listing every bad file and the commands that fix it."""
    uid = os.geteuid()
    problems: list[tuple[Path, str]] = []
    for raw in paths:
        p = Path(raw)
        try:
            st = p.stat()
        except FileNotFoundError:
            problems.append((p, "missing"))
            continue
        if not stat.S_ISREG(st.st_mode):
            problems.append((p, "not a regular file"))
            continue
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid != uid:
            problems.append((p, f"owned by uid {st.st_uid}, not {current_user()} (uid {uid})"))
        if mode & 0o077:
            problems.append((p, f"mode {mode:04o} lets group/others access it (0600 or 0400 required)"))
    if problems:
        raise PermissionProblem(problems, current_user())


def utc_now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
