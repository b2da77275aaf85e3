"""SGX / Amphenol INIR and INIR2 NDIR methane sensor over UART (38400 8N2 by default).

Two ways to get a frame: ``stream`` (normal/engineering mode; the sensor sends a frame about once a
second and we take the next complete one) or ``on_demand`` (firmware ≥ 2v18: send ``[Q]``, get one
frame; whether a given firmware has [Q] is unconfirmed). Fault nibbles map to flags: gas-sensor,
timer and memory faults → ``sensor_fault``; "concentration not yet stable" and the (unconfirmed)
warm-up code → ``warming_up``; over/under range → ``out_of_range``. Reset, DAC and UART nibbles are
informational (the sensor raises the power-on-reset flag after every power-up).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import OUT_OF_RANGE, SENSOR_FAULT, WARMING_UP, DriverError, DriverSettings, Measurement
from drivers.codec_error import CodecError
from drivers.inir import codec
from drivers.methane import MethaneSettings, methane_measurements
from drivers.transport.serial_port import SerialPort, SerialSettings
from drivers.warmup import WarmupTimer

FAULT_NIBBLE_POSITIONS = {0, 5, 7}


class InirSettings(SerialSettings, MethaneSettings):
    baud: int = Field(38400, description="line speed; 38400 (INIR2 also 115200/19200/9600)")
    stopbits: Literal[1, 2] = Field(2, description="stop bits; the application note says 2")
    mode: Literal["stream", "on_demand"] = Field(
        "stream", description="stream: take the next periodic frame; on_demand: send [Q] per read [U]"
    )
    timeout_s: float = Field(2.5, gt=0, le=30, description="frames come about once a second in stream mode")
    range_ppm: float | None = Field(50_000.0, gt=0, description="full scale (INIR2-ME5%: 50000, ME100%: 1e6)")
    warmup_s: float = Field(45.0, ge=0, le=3600, description="warm-up after power-on or mode change (45 s)")


def flags_for(faults: int) -> set[str]:
    flags: set[str] = set()
    for pos, val in codec.fault_nibbles(faults).items():
        if pos in FAULT_NIBBLE_POSITIONS:
            flags.add(SENSOR_FAULT)
        elif pos == 2 or (pos == 6 and val == 3):
            flags.add(WARMING_UP)
        elif pos == 6:
            flags.add(OUT_OF_RANGE)
    return flags


class InirDriver:
    name: ClassVar[str] = "inir"
    Settings: ClassVar[type[DriverSettings]] = InirSettings

    def __init__(self, settings: DriverSettings) -> None:
        if not isinstance(settings, InirSettings):
            raise TypeError("InirDriver needs InirSettings")
        self._s = settings
        self._warmup = WarmupTimer()
        self._port = SerialPort.from_settings(settings, stopbits=settings.stopbits, on_open=self._warmup.restart)

    def open(self) -> None:
        self._port.ensure_open()

    def close(self) -> None:
        self._port.close()

    def _frame(self) -> codec.InirFrame:
        if self._s.mode == "on_demand":
            raw = self._port.transact(codec.command("Q"), codec.extract, self._s.timeout_s)
        else:
            self._port.discard_input()
            raw = self._port.read_frame(codec.extract, self._s.timeout_s)
        try:
            return codec.parse(raw)
        except CodecError as exc:
            raise DriverError(exc.kind, f"{self._s.port}: {exc.message}") from exc

    def read(self) -> list[Measurement]:
        frame = self._frame()
        flags = flags_for(frame.faults)
        if self._warmup.active(self._s.warmup_s):
            flags.add(WARMING_UP)
        fl = frozenset(flags)
        return [
            *methane_measurements(float(frame.concentration_ppm), self._s, fl),
            Measurement("sensor_temperature", frame.temperature_c, "degC", fl),
            Measurement("sensor_faults", float(frame.faults), "bits", fl),
        ]
