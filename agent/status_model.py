"""The agent's status as types. Built once by the runtime (``Agent.status``) and read by the
systemd STATUS= line, the shadow's ``reported.status``, the diagnostics bundle and
``methane-agent status``; ``as_dict`` is the JSON the status socket serves (``status --json``:
external checks read its keys, so they stay as they are) and ``from_dict`` reads it back.

Features' own status (``remote.shadow``, ``remote.jobs``, …) stays a JSON object each feature
defines; it is placed by the feature's ``status_key``."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def _known(cls: type[T], data: Any) -> T:
    """``cls`` from a JSON object, ignoring keys it does not know (a newer agent may add some)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in (data or {}).items() if k in names})


@dataclass(frozen=True)
class AgentInfo:
    version: str
    pid: int
    thing_name: str | None
    uptime_s: float
    config_hash: str
    reloads: int = 0
    last_reload_error: str | None = None


@dataclass(frozen=True)
class SpoolStatus:
    path: str
    readings: int = 0
    bytes: int = 0
    oldest_seq: int | None = None
    oldest_ts_ms: int | None = None
    oldest_age_s: float | None = None
    next_seq: int | None = None
    uncommitted: int = 0
    evicted_routine: int = 0
    evicted_alarm: int = 0
    quarantined: int = 0
    epoch: str | None = None
    seq_skipped: int = 0


@dataclass(frozen=True)
class LinkHealth:
    """What the connection is doing (agent/link/README.md): since when it is up or down, why
    (awscrt's own reason, classified), attempts this outage, when the next one is, and what the
    network watch last saw."""

    state: str  # connected | connecting | waiting (for the next attempt) | stopped
    up_since_ts: float | None = None
    down_since_ts: float | None = None
    down_for_s: float | None = None
    connect_attempts: int = 0
    next_attempt_ts: float | None = None
    next_attempt_in_s: float | None = None
    failure_kind: str | None = None  # network | broker | refused
    network: str = "unknown"  # up | down | unknown, as the reachability probe last saw it
    network_returns: int = 0
    last_network_event: str | None = None


@dataclass(frozen=True)
class LinkStatus:
    """The connection and uplink figures; present only while an uplink exists."""

    endpoint: str
    topic: str
    encoding: str
    connected: bool
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    certificate_refused: bool = False
    last_error: str | None = None
    link: LinkHealth | None = None
    last_ack_ts: float | None = None
    batches_acked: int = 0
    readings_acked: int = 0
    bytes_acked: int = 0
    failures: int = 0
    splits: int = 0
    inflight: int = 0
    publishes_per_s: float = 0.0


@dataclass(frozen=True)
class UplinkStatus:
    enabled: bool
    link: LinkStatus | None = None  # None while offline or before the uplink started

    def as_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, **(asdict(self.link) if self.link is not None else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UplinkStatus:
        link = _known(LinkStatus, data) if "endpoint" in data else None
        if link is not None and isinstance(link.link, dict):
            link = dataclasses.replace(link, link=_known(LinkHealth, link.link))
        return cls(bool(data.get("enabled")), link)


@dataclass(frozen=True)
class SensorStatus:
    """One configured sensor. A sensor whose task could not start has only ``id``, ``state``
    (``not_started``) and ``last_error``; the other fields are those of a running task."""

    id: str
    state: str
    last_error: str | None = None
    driver: str | None = None
    reads: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    skipped_ticks: int = 0
    last_error_ts: float | None = None
    last_read_ts: float | None = None
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    restarts: int = 0

    @property
    def started(self) -> bool:
        return self.state != "not_started"

    def as_dict(self) -> dict[str, Any]:
        if not self.started:
            return {"id": self.id, "state": self.state, "last_error": self.last_error}
        return asdict(self)


@dataclass(frozen=True)
class AgentStatus:
    agent: AgentInfo
    clock_synced: bool
    spool: SpoolStatus
    uplink: UplinkStatus
    sensors: list[SensorStatus]
    features: dict[str, Any] = field(default_factory=dict)  # JSON placed by status_key, e.g. "remote"

    def as_dict(self) -> dict[str, Any]:
        return {
            "agent": asdict(self.agent),
            "clock_synced": self.clock_synced,
            "spool": asdict(self.spool),
            "uplink": self.uplink.as_dict(),
            "sensors": [s.as_dict() for s in self.sensors],
            **self.features,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentStatus:
        core = {"agent", "clock_synced", "spool", "uplink", "sensors", "running"}
        return cls(
            agent=_known(AgentInfo, data.get("agent")),
            clock_synced=bool(data.get("clock_synced")),
            spool=_known(SpoolStatus, data.get("spool")),
            uplink=UplinkStatus.from_dict(data.get("uplink") or {}),
            sensors=[_known(SensorStatus, s) for s in data.get("sensors") or []],
            features={k: v for k, v in data.items() if k not in core},
        )
