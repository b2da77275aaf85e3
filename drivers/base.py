"""The one small interface every sensor driver implements.

A driver turns a physical (or emulated) device into ``Measurement`` values. It never invents a
value: when it cannot read, it raises ``DriverError`` and the agent records the fault and retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

# Quality flags carried by a measurement. Readings are flagged, never silently dropped.
WARMING_UP = "warming_up"
OUT_OF_RANGE = "out_of_range"
CHECKSUM_ERROR = "checksum_error"
STALE = "stale"
SENSOR_FAULT = "sensor_fault"
SIMULATED = "simulated"
KNOWN_FLAGS = frozenset({WARMING_UP, OUT_OF_RANGE, CHECKSUM_ERROR, STALE, SENSOR_FAULT, SIMULATED})


@dataclass(frozen=True, slots=True)
class Measurement:
    """One value of one quantity, as the driver read it (no sequence number, no timestamp yet)."""

    quantity: str
    value: float
    unit: str
    flags: frozenset[str] = field(default_factory=frozenset)


class DriverError(Exception):
    """A read failed (timeout, bad frame, NAK, device gone). ``kind`` is a short stable label."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class DriverSettings(BaseModel):
    """Base for each driver's settings model; unknown keys are errors, as everywhere in the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@runtime_checkable
class Driver(Protocol):
    """What the sampler needs from a sensor. Implementations are constructed with their settings.

    ``read`` may block for at most the driver's own timeout; the sampler calls it from a worker
    thread, so blocking I/O is fine but unbounded waits are not. A driver that never blocks (no I/O,
    like the simulated sensor) may say so with a class attribute ``blocking = False``: the sampler
    then reads it on the event loop, without a thread per sensor (a fleet simulation runs
    thousands of them).
    """

    name: ClassVar[str]
    Settings: ClassVar[type[DriverSettings]]

    def open(self) -> None: ...

    def read(self) -> list[Measurement]: ...

    def close(self) -> None: ...


@runtime_checkable
class Calibratable(Protocol):
    """Optional capability: drivers whose device accepts zero/span calibration commands implement it.
    ``kind`` is "zero" (in zero air) or "span" (``value`` = the span gas concentration in the unit
    the driver documents). Unsupported kinds raise ``DriverError("unsupported", ...)``."""

    def calibrate(self, kind: str, value: float | None = None) -> None: ...


def describe_settings(settings_model: type[BaseModel]) -> dict[str, Any]:
    """Settings of a driver as ``{key: {type, default, description}}`` for ``sensor list``."""
    out: dict[str, Any] = {}
    for key, info in settings_model.model_fields.items():
        out[key] = {
            "type": getattr(info.annotation, "__name__", str(info.annotation)),
            "default": None if info.is_required() else info.get_default(call_default_factory=True),
            "required": info.is_required(),
            "description": info.description or "",
        }
    return out
