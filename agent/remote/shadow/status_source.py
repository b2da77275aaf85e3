"""Builds ``reported.status`` from the agent's one status builder, with the slow parts (interface
addresses, certificate expiry) cached so a report stays cheap on a Pi."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.remote.shadow.reported import network, status_doc
from agent.status_model import AgentStatus

log = logging.getLogger(__name__)

NETWORK_TTL_S = 300.0
CERT_TTL_S = 3600.0


class StatusSource:
    def __init__(
        self,
        status: Callable[[], AgentStatus],
        state_dir: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._status = status
        self._state_dir = state_dir
        self._clock = clock
        self._net: tuple[float, dict[str, Any]] | None = None
        self._cert: tuple[float, dict[str, Any] | None] | None = None

    def _network(self) -> dict[str, Any]:
        now = self._clock()
        if self._net is None or now - self._net[0] > NETWORK_TTL_S:
            self._net = (now, network())
        return self._net[1]

    def _cert_expiry(self) -> dict[str, Any] | None:
        now = self._clock()
        if self._cert is None or now - self._cert[0] > CERT_TTL_S:
            self._cert = (now, cert_expiry(self._state_dir))
        return self._cert[1]

    def build(self) -> dict[str, Any]:
        return status_doc(self._status(), self._network(), self._cert_expiry())


def cert_expiry(state_dir: Path) -> dict[str, Any] | None:
    """provisioning.expiry.expiry_status of the identity, or None without one."""
    from provisioning import identity as ident_mod
    from provisioning.expiry import expiry_status
    from provisioning.files import CredentialError

    try:
        ident = ident_mod.load(state_dir)
        if ident is None:
            return None
        return expiry_status(ident).as_dict()
    except (ident_mod.IdentityError, CredentialError, OSError) as exc:
        log.warning("certificate expiry unknown", extra={"error": str(exc)[:200]})
        return None
