"""``[[alarms.outputs]]``: a relay, siren or beacon driven by alarm levels, with no network needed.

``fail_safe = true`` means energised-when-healthy: the output is energised while no selected alarm
is active and de-energised on alarm, so a cut wire, a dead gateway or a stopped agent also reads
as "alarm" on the site's panel."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

OUTPUT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
OutputLevel = Literal["warn", "alarm", "fault"]


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=OUTPUT_NAME)]
    levels: list[OutputLevel] = Field(
        ..., min_length=1, description="alarm levels that activate it, e.g. [\"alarm\"] or [\"warn\", \"alarm\"]"
    )
    sensors: list[str] = Field(default_factory=list, description="sensor ids it follows; empty = every sensor")
    fail_safe: bool = Field(False, description="energised when healthy, de-energised on alarm (and when stopped)")


class GpioOutput(_Output):
    backend: Literal["gpio"]
    pin: int | str = Field(..., description="BCM number (17) or a gpiozero pin name (\"GPIO17\", \"BOARD11\")")
    active_high: bool = Field(True, description="false for relay boards that switch on a low level")


class ModbusCoilOutput(_Output):
    backend: Literal["modbus-coil"]
    port: str = Field(..., min_length=1, description="RS-485 adapter, e.g. /dev/serial/by-id/...")
    baud: int = Field(9600, ge=300, le=921_600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    slave: int = Field(1, ge=1, le=247, description="Modbus unit id of the relay module")
    coil: int = Field(..., ge=0, le=0xFFFF, description="coil address on the wire (0-based)")
    timeout_s: float = Field(0.5, gt=0, le=10)


class CommandOutput(_Output):
    backend: Literal["command"]
    on_command: list[str] = Field(..., min_length=1, description="argv run (no shell) to energise")
    off_command: list[str] = Field(..., min_length=1, description="argv run (no shell) to de-energise")
    timeout_s: float = Field(10.0, gt=0, le=300, description="a command running longer is killed and failed")


OutputConfig = Annotated[GpioOutput | ModbusCoilOutput | CommandOutput, Field(discriminator="backend")]
