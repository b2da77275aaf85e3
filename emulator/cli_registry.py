"""``methane-agent emulator things | certs | cert revoke CERT_ID``: the registry of a running (or
stopped) emulator, read from and changed in its state dir. A revocation reaches the broker at once
through the authz plugin: the certificate's connections are closed and its next CONNECT refused."""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

from emulator.registry import DB_FILE, Registry, RegistryError

CERT_ID = re.compile(r"^[0-9a-f]{64}$")


def open_registry(state_dir: Path) -> Registry:
    """The registry of the emulator in ``state_dir``; RegistryError if there is none."""
    folder = Path(state_dir) / "registry"
    if not (folder / DB_FILE).exists():
        raise RegistryError(f"{folder / DB_FILE}: no registry (was the emulator started with fleet provisioning "
                            "in this state dir?)")
    return Registry(folder)


def register(esub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--state-dir", type=Path, required=True, help="the emulator's state dir")
        p.add_argument("--json", action="store_true", help="print JSON")

    things = esub.add_parser("things", help="list registered things")
    common(things)
    things.set_defaults(func=things_cmd)
    groups = esub.add_parser("groups", help="list thing groups and their member counts")
    common(groups)
    groups.set_defaults(func=groups_cmd)
    certs = esub.add_parser("certs", help="list certificates and their status")
    common(certs)
    certs.set_defaults(func=certs_cmd)
    cert = esub.add_parser("cert", help="certificate actions")
    csub = cert.add_subparsers(dest="cert_command", required=True, metavar="ACTION")
    revoke = csub.add_parser("revoke", help="revoke a certificate (its connections are closed at once)")
    revoke.add_argument("cert_id", metavar="CERT_ID", help="64 hex characters, as `emulator certs` shows")
    common(revoke)
    revoke.set_defaults(func=revoke_cmd)


def _run(args: argparse.Namespace, action: Any) -> int:
    try:
        reg = open_registry(args.state_dir)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        result, text = action(reg)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"error: registry database: {exc}", file=sys.stderr)
        return 1
    finally:
        reg.close()
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else text)
    return 0


def things_cmd(args: argparse.Namespace) -> int:
    def act(reg: Registry) -> tuple[Any, str]:
        things = [t.summary() for t in reg.things()]
        lines = [f"{t['thingName']}  attributes={json.dumps(t['attributes'], sort_keys=True)}  "
                 f"groups={','.join(t['thingGroups']) or '-'}  certs={len(t['principals'])}" for t in things]
        return things, "\n".join(lines) or "(no things)"

    return _run(args, act)


def groups_cmd(args: argparse.Namespace) -> int:
    def act(reg: Registry) -> tuple[Any, str]:
        groups = reg.groups()
        return groups, "\n".join(f"{name}  things={n}" for name, n in groups.items()) or "(no thing groups)"

    return _run(args, act)


def certs_cmd(args: argparse.Namespace) -> int:
    def act(reg: Registry) -> tuple[Any, str]:
        certs = [c.summary() for c in reg.certificates()]
        lines = [f"{c['certificateId']}  {c['status']:<18} {c['role']:<6} things={','.join(c['things']) or '-'}  "
                 f"policies={','.join(c['policies']) or '-'}" for c in certs]
        return certs, "\n".join(lines) or "(no certificates)"

    return _run(args, act)


def revoke_cmd(args: argparse.Namespace) -> int:
    if not CERT_ID.match(args.cert_id):
        print(f"error: CERT_ID must be 64 lower-case hex characters, got {args.cert_id!r}", file=sys.stderr)
        return 2

    def act(reg: Registry) -> tuple[Any, str]:
        cert = reg.revoke(args.cert_id)
        return cert.summary(), f"revoked {cert.certificate_id}"

    return _run(args, act)
