"""The one lifecycle of every long-running part that is not the data path itself (the Device
Shadow, IoT Jobs, and whatever comes next): a ``Feature`` has a name, ``start(ports)``,
``stop()`` and ``status()``.

A feature never holds the agent. It gets ``Ports``: the narrow things it may use (the config in
force, the one apply path, the status document, the connection, calibrating a sensor by id, asking
the agent to stop). The runtime (agent/runtime.py, ``Agent._features``) is the one place that
decides from the config which features run, starts them once the data path is up, stops them
before the connection goes, and restarts them (stop, then start with new ports) when the
connection is rebuilt. How to add one: docs/architecture.md, "Adding a feature"."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.connection import Connection
    from agent.status_model import AgentStatus


class SensorNotRunning(LookupError):
    """``Ports.calibrate`` was given a sensor id that is not sampling on this device."""


@dataclass(frozen=True)
class Ports:
    """What a feature may reach. Every field is a value or a function, never the agent."""

    thing_name: str  # "" when the device has no identity (offline mode)
    config: Callable[[], AgentConfig]  # the config in force now (the file with remote layers on top)
    apply: Callable[[AgentConfig], Awaitable[list[str]]]  # the one apply path; raises config.ConfigRejected
    status: Callable[[], AgentStatus]  # the agent's status (``as_dict()``: ``methane-agent status --json``)
    connection: Connection | None  # the one MQTT connection; None when running offline
    # (sensor id, "zero"|"span", span value or None, timeout in s): on the sensor's own thread.
    # Raises SensorNotRunning, drivers.base.DriverError ("unsupported" when the driver cannot).
    calibrate: Callable[[str, str, float | None, float], Awaitable[None]]
    request_stop: Callable[[], None]  # a clean stop; systemd's Restart=always starts us again
    # (sensor id, quantity or None, by): acknowledge latched alarms; raises agent.alarms.engine.AckError.
    acknowledge_alarm: Callable[[str, str | None, str | None], list[dict[str, Any]]] | None = None


class Feature(Protocol):
    """A long-running part of the daemon, started and stopped by the runtime only."""

    name: str
    # Where status() goes in the status document, dotted ("remote.shadow"); default: the name.
    status_key: str

    async def start(self, ports: Ports) -> None:
        """Begin work with these ports. Called again (after ``stop``) when the connection is
        rebuilt. Must not block: long work runs in the feature's own tasks."""

    async def stop(self) -> None:
        """End every task the feature started, within a second or two (the agent's whole stop
        must fit systemd's timeout). Safe to call when not started."""

    def status(self) -> Any:
        """A JSON-serialisable summary for the status document, or None when idle."""
