"""IoT Core authorisation for the emulator's broker: compiles the registry (certificate status,
attached policies, the thing each certificate belongs to) into the line-oriented file the mosquitto
plugin ``emulator/plugin/methane_authz.c`` reads, builds that plugin, and reads its statistics.

Policy semantics kept from IoT Core: default deny, an explicit Deny beats any Allow, ``*``/``?``
are plain string wildcards over the resource (so ``topic/a/*`` matches ``topic/a/b/c``), the
resource types ``client/``, ``topic/``, ``topicfilter/``, and the policy variables
``${iot:ClientId}``, ``${iot:Connection.Thing.ThingName}``, ``${iot:Connection.Thing.ThingTypeName}``,
``${iot:Connection.Thing.Attributes[name]}`` and ``${iot:Connection.Thing.IsAttached}``. Thing
variables resolve to the thing attached to the certificate (IoT Core also requires the client id
to equal the thing name; the device policy's Connect statement enforces that here). A statement
using a variable or condition the emulator cannot resolve is dropped: an Allow then grants
nothing, which fails closed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator.pki import write_public
from provisioning.files import write_atomic

if TYPE_CHECKING:
    from emulator.registry import Certificate, Thing

AUTHZ_FILE = "authz.rules"
STATS_FILE = "broker-stats.json"
DELIVER_TOPIC = "$emulator/deliver"
PLUGIN_SOURCE = Path(__file__).parent / "plugin" / "methane_authz.c"
ACTIONS = {"iot:Connect": "C", "iot:Publish": "P", "iot:Subscribe": "S", "iot:Receive": "R"}
RESOURCE_TYPES = {"C": "client/", "P": "topic/", "S": "topicfilter/", "R": "topic/"}
_ARN = re.compile(r"^arn:aws[a-z-]*:iot:[^:]*:[^:]*:(.*)$", re.S)
_VAR = re.compile(r"\$\{([^}]*)\}")


class PolicyError(ValueError):
    """A policy document the emulator cannot use; the message names the statement."""


class PluginBuildError(RuntimeError):
    """gcc failed or is missing; the message carries the compiler's output."""


@dataclass(frozen=True)
class Rule:
    cert_id: str
    effect: str  # "A" or "D"
    action: str  # "C" "P" "S" "R"
    pattern: str


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def check_policy(doc: Any) -> None:
    """Reject documents IoT Core would reject (shape only)."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("Statement"), list | dict):
        raise PolicyError("a policy document is an object with a Statement list")
    for i, st in enumerate(_as_list(doc["Statement"])):
        if not isinstance(st, Mapping):
            raise PolicyError(f"Statement[{i}] must be an object")
        if st.get("Effect") not in ("Allow", "Deny"):
            raise PolicyError(f"Statement[{i}].Effect must be Allow or Deny")
        for key in ("Action", "Resource"):
            vals = _as_list(st.get(key))
            if not vals or not all(isinstance(v, str) and v for v in vals):
                raise PolicyError(f"Statement[{i}].{key} must be a string or a list of strings")


def _thing_vars(thing: Thing | None) -> dict[str, str] | None:
    if thing is None:
        return None
    out = {"iot:Connection.Thing.ThingName": thing.name, "iot:Connection.Thing.IsAttached": "true"}
    if thing.thing_type:
        out["iot:Connection.Thing.ThingTypeName"] = thing.thing_type
    for k, v in thing.attributes.items():
        out[f"iot:Connection.Thing.Attributes[{k}]"] = v
    return out


def _condition_holds(cond: Any, variables: Mapping[str, str]) -> bool | None:
    """Evaluate the conditions we can decide when compiling; None = cannot decide."""
    if cond is None:
        return True
    if not isinstance(cond, Mapping):
        return None
    for op, tests in cond.items():
        if op not in ("Bool", "StringEquals") or not isinstance(tests, Mapping):
            return None
        for key, want in tests.items():
            if key == "iot:Connection.Thing.IsAttached":
                have = variables.get(key, "false")
            elif key in variables:
                have = variables[key]
            else:
                return None
            wants = [str(w).lower() if op == "Bool" else str(w) for w in _as_list(want)]
            if (have.lower() if op == "Bool" else have) not in wants:
                return False
    return True


def _resource(resource: str, variables: Mapping[str, str]) -> str | None:
    if resource == "*":
        body = "*"
    else:
        m = _ARN.match(resource)
        if m is None:
            return None
        body = m.group(1)

    def repl(v: re.Match[str]) -> str:
        name = v.group(1)
        if name == "iot:ClientId":
            return "${iot:ClientId}"  # resolved by the plugin at check time
        if name in variables:
            return variables[name]
        raise KeyError(name)

    try:
        body = _VAR.sub(repl, body)
    except KeyError:
        return None
    if any(c in body for c in "\r\n\x00"):
        return None
    return body


def compile_rules(certs: Iterable[Certificate], things: Mapping[str, Thing],
                  policies: Mapping[str, Mapping[str, Any]]) -> tuple[list[tuple[str, str, str]], list[Rule]]:
    """(status lines, rules) for every certificate."""
    status: list[tuple[str, str, str]] = []
    rules: list[Rule] = []
    for cert in certs:
        status.append((cert.certificate_id, cert.status, cert.role))
        thing = things.get(cert.things[0]) if cert.things else None
        variables = _thing_vars(thing) or {}
        for pname in cert.policies:
            doc = policies.get(pname)
            if doc is None:
                continue
            for st in _as_list(doc.get("Statement", [])):
                effect = "A" if st.get("Effect") == "Allow" else "D"
                holds = _condition_holds(st.get("Condition"), variables)
                if holds is False or (holds is None and effect == "A"):
                    continue
                codes: set[str] = set()
                for action in _as_list(st.get("Action")):
                    if action in ("iot:*", "*"):
                        codes.update(ACTIONS.values())
                    elif action in ACTIONS:
                        codes.add(ACTIONS[action])
                for res in _as_list(st.get("Resource")):
                    body = _resource(str(res), variables)
                    if body is None:
                        continue
                    for code in sorted(codes):
                        prefix = RESOURCE_TYPES[code]
                        if body == "*" or body.startswith(prefix) or body.startswith("*"):
                            rules.append(Rule(cert.certificate_id, effect, code, body))
    return status, rules


def render(compiled: tuple[list[tuple[str, str, str]], list[Rule]]) -> str:
    status, rules = compiled
    lines = ["# generated by emulator.authz from the registry; rewritten on every change"]
    lines += [f"S {cid} {st} {role}" for cid, st, role in status]
    lines += [f"R {r.cert_id} {r.effect} {r.action} {r.pattern}" for r in rules]
    return "\n".join(lines) + "\n"


def render_chunk(compiled: tuple[list[tuple[str, str, str]], list[Rule]]) -> str:
    """Status and rule lines without the header, to be joined with other certificates' chunks
    (the plugin needs a certificate's S line before its R lines, nothing more)."""
    return render(compiled).split("\n", 1)[1]


def write_file(path: Path, compiled: tuple[list[tuple[str, str, str]], list[Rule]]) -> None:
    """Atomic replace: the plugin sees the old file or the new one, never half of one."""
    write_public(path, render(compiled).encode())


def write_text(path: Path, chunks: Iterable[str]) -> None:
    """Atomic replace from pre-rendered chunks, without fsync: the file is derived from the registry
    and rewritten at every start, and a thousand fsyncs of a growing file made provisioning a fleet
    slow for nothing."""
    body = "# generated by emulator.authz from the registry; rewritten on every change\n" + "".join(chunks)
    write_atomic(path, body.encode(), 0o644, durable=False)


def plugin_path(cache_dir: Path) -> Path:
    digest = hashlib.sha256(PLUGIN_SOURCE.read_bytes()).hexdigest()[:16]
    return cache_dir / f"methane_authz-{digest}.so"


def build_plugin(cache_dir: Path | None = None) -> Path:
    """Compile the plugin once per source version (cached by content hash; parallel builders race
    harmlessly because each writes a private temp file and renames it)."""
    cache = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "methane-agent"
    cache.mkdir(parents=True, exist_ok=True)
    out = plugin_path(cache)
    if out.exists():
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    cmd = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(PLUGIN_SOURCE), "-lcrypto"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        raise PluginBuildError("gcc not found: run scripts/install-system-deps.sh") from None
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise PluginBuildError(
            f"building {PLUGIN_SOURCE.name} failed (needs mosquitto-dev, libmosquitto-dev, libssl-dev):\n"
            f"{proc.stderr.strip()}")
    os.replace(tmp, out)
    return out


def encode_delivery(client_id: str, topic: str, payload: bytes) -> bytes:
    """The request format of ``$emulator/deliver``: ``<client id>\\n<topic>\\n<payload>``."""
    if not client_id or "\n" in client_id or not topic or "\n" in topic:
        raise ValueError("client id and topic must be non-empty and free of newlines")
    return client_id.encode() + b"\n" + topic.encode() + b"\n" + payload


def read_stats(path: Path) -> dict[str, Any]:
    """The plugin's per-client counters: {client_id: {cert, in, out, max_per_s}}."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    clients: dict[str, Any] = doc.get("clients", {})
    return clients
