"""What the pre-provisioning hook needs to know about the world, as two small ports.

The hook itself is a pure function over these; AWS (IoT registry API, DynamoDB) and the emulator
(its SQLite registry, a local file) each supply an implementation. A port that cannot answer raises
:class:`LookupFailed`, and the hook then denies: provisioning fails closed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class LookupFailed(RuntimeError):
    """A port could not answer (service down, throttled, unreadable file); the message says which."""


@dataclass(frozen=True)
class ThingView:
    """The registry's view of one existing thing: the certificate ids attached to it and its
    attributes (the hook keeps a rotating thing in its recorded site)."""

    principals: frozenset[str]
    attributes: Mapping[str, str] = field(default_factory=dict)


class ThingDirectory(Protocol):
    def describe(self, thing_name: str) -> ThingView | None:
        """The thing, or None when no thing of that name exists."""
        ...


@dataclass(frozen=True)
class AllowEntry:
    """One manufactured unit that may onboard; ``site`` (optional) pins the site it joins."""

    serial: str
    site: str | None = None


class Allowlist(Protocol):
    def lookup(self, serial: str) -> AllowEntry | None:
        """The entry for ``serial``, or None when the serial may not onboard."""
        ...
