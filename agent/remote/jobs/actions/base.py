"""What every job action is made of. A job document is ``{"action": <name>, "params": {...}}``;
each action declares a pydantic parameter schema (extra keys forbidden) and an async ``run``.
Nothing from the job document is ever a command, a path or a shell string."""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.config import RemoteConfig
from agent.egress import GetAddrInfo

if TYPE_CHECKING:
    from agent.feature import Ports
    from agent.remote.jobs.logring import LogRing
    from agent.remote.layer import ConfigLayer


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    action: str = Field(..., min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)


class Rejected(Exception):
    """The job cannot run as given (unknown action, bad parameters, disabled here): REJECTED."""


class Failed(Exception):
    """The action ran and did not succeed: FAILED with this reason."""


@dataclass
class Result:
    details: dict[str, str] = field(default_factory=dict)
    # "restart": the final status is sent by the next agent process (journal); the action
    # already asked for the restart. "reboot": likewise, after the device rebooted.
    awaits: str | None = None
    restart_after: bool = False  # report the final status, then restart the agent


Progress = Callable[[dict[str, str]], Awaitable[None]]


async def _default_argv(argv: list[str]) -> tuple[int, str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")[-512:]


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@dataclass(frozen=True)
class ActionEnv:
    """How actions reach the operating system and the network. The defaults are the real ones;
    a test hands the runtime another (``Agent(..., action_env=...)``)."""

    run_argv: Callable[[list[str]], Awaitable[tuple[int, str]]] = _default_argv
    https_context: ssl.SSLContext | None = None  # None: the system trust store
    boot_id: Callable[[], str] = _boot_id
    getaddrinfo: GetAddrInfo = socket.getaddrinfo
    rotate: Callable[..., Any] | None = None  # provisioning.rotation.rotate_certificate unless given


@dataclass(frozen=True)
class ActionContext:
    ports: Ports
    layer: ConfigLayer
    logring: LogRing
    remote: RemoteConfig
    env: ActionEnv
    set_phase: Callable[[str], None]  # journal the phase before an irreversible step


Run = Callable[[ActionContext, Any, Progress], Awaitable[Result]]


@dataclass(frozen=True)
class Action:
    name: str
    params: type[Params]
    run: Run
    refuse: Callable[[RemoteConfig], str | None] = lambda _conf: None  # a reason when disabled here


def parse(document: Any, actions: Mapping[str, Action], remote: RemoteConfig) -> tuple[Action, Params]:
    """The allowlisted action and its validated parameters, or Rejected with a bounded reason."""
    if not isinstance(document, dict):
        raise Rejected("job document must be a JSON object")
    try:
        doc = JobDocument.model_validate(document)
    except ValidationError as exc:
        raise Rejected(f"job document: {_first_error(exc)}") from None
    action = actions.get(doc.action)
    if action is None:
        raise Rejected(f"unknown action {doc.action[:64]!r}; allowed: {', '.join(sorted(actions))}")
    why = action.refuse(remote)
    if why:
        raise Rejected(why)
    try:
        params = action.params.model_validate(doc.params)
    except ValidationError as exc:
        raise Rejected(f"params: {_first_error(exc)}") from None
    return action, params


def _first_error(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


_DETAIL_KEY = re.compile(r"[^a-zA-Z0-9:_-]")
MAX_DETAILS = 10
MAX_DETAIL_VALUE = 128  # IoT Core: 1024 per BOTO, 128 per the limits page; the safe one


def details(raw: dict[str, Any]) -> dict[str, str]:
    """statusDetails within IoT Core's limits: ≤10 pairs, keys [a-zA-Z0-9:_-]{1,128}, values
    1..128 characters (longer messages are cut with an ellipsis)."""
    out: dict[str, str] = {}
    for k, v in raw.items():
        if v is None or len(out) >= MAX_DETAILS:
            continue
        key = _DETAIL_KEY.sub("_", str(k))[:128] or "_"
        text = str(v) or "-"
        out[key] = text if len(text) <= MAX_DETAIL_VALUE else text[: MAX_DETAIL_VALUE - 1] + "…"
    return out
