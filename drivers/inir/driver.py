"""SGX / Amphenol INIR and INIR2 NDIR methane sensor over UART (38400 8N2 by default).

Two ways to get a frame: ``stream`` (normal/engineering mode; the sensor sends a frame about once a
second and we take the next complete one) or ``on_demand`` (firmware ≥ 2v18: send ``[Q]``, get one
frame; whether a given firmware has [Q] is unconfirmed). Fault nibbles map to flags: gas-sensor,
timer and memory faults → ``sensor_fault``; "concentration not yet stable" and the (unconfirmed)
warm-up code → ``warming_up``; over/under range → ``out_of_range``. Reset, DAC and UART nibbles are
informational (the sensor raises the power-on-reset flag after every power-up).

Start-up (``startup_commands``, on by default): on every (re)open the driver sends SGX's recommended
sequence, ``[C]`` (configuration mode) then ``[B]`` (engineering mode: frames carry the reference and
active signals too), and in ``on_demand`` mode then ``[H]``; each must be answered ``[AK]``. A ``[NA]``,
garbage or silence is a ``DriverError`` naming the command; the port is closed so the next read reopens
and sends the whole sequence again (behind the reconnect backoff). SGX's ``[I]`` (read back settings,
"check its CRC") is not sent: the reply's layout is not in our reference [U]. That ``[H]`` is answered
``[AK]`` like the other mode commands is assumed [U]. The mode change restarts the sensor's 45 s warm-up,
so the host window restarts when the sequence completes.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import Field

from drivers.base import OUT_OF_RANGE, SENSOR_FAULT, WARMING_UP, DriverError, DriverSettings, Measurement
from drivers.codec_error import CodecError
from drivers.inir import codec
from drivers.methane import MethaneSettings, methane_measurements
from drivers.transport.serial_port import SerialDriver, SerialPort, SerialSettings
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
    startup_commands: bool = Field(
        True,
        description="on every (re)open send [C] then [B] (and [H] in on_demand mode [U]), each answered [AK]; "
        "[I] is not sent (reply layout unknown [U])",
    )


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


class InirDriver(SerialDriver):
    name: ClassVar[str] = "inir"
    Settings: ClassVar[type[DriverSettings]] = InirSettings

    def __init__(self, settings: DriverSettings) -> None:
        if not isinstance(settings, InirSettings):
            raise TypeError("InirDriver needs InirSettings")
        self._s = settings
        self._warmup = WarmupTimer()
        self._port = SerialPort.from_settings(settings, stopbits=settings.stopbits, on_open=self._warmup.restart)
        self._started_on = 0  # the port's open count the start-up sequence last succeeded on

    def startup_sequence(self) -> list[str]:
        if not self._s.startup_commands:
            return []
        return ["C", "B", "H"] if self._s.mode == "on_demand" else ["C", "B"]

    def open(self) -> None:
        self._ensure_started()

    def _ensure_started(self) -> None:
        port = self._port
        port.ensure_open()
        letters = self.startup_sequence()
        if not letters or self._started_on == port.opens:
            return
        try:
            for letter in letters:
                self._command(letter)
        except DriverError as exc:
            delay = 0.0
            if port.is_open:  # a lost port was already closed and backed off by the transport
                port.close()
                delay = port.backoff.failure()
            raise DriverError(
                exc.kind, f"{exc.message} (start-up command [{letter}]; port closed, retry in {delay:.1f}s)"
            ) from exc
        self._started_on = port.opens
        self._warmup.restart()

    def _command(self, letter: str) -> None:
        """Send one command and wait for its ``[AK]``, skipping data frames still streaming in."""
        cmd = codec.command(letter)
        deadline = time.monotonic() + self._s.timeout_s
        raw = self._port.transact(cmd, codec.extract, self._s.timeout_s)
        while True:
            try:
                if codec.check_ack(raw, cmd):
                    return
            except CodecError as exc:
                raise DriverError(exc.kind, f"{self._s.port}: {exc.message}") from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DriverError("timeout", f"{self._s.port}: no [AK] to {cmd.decode()} within {self._s.timeout_s}s")
            raw = self._port.read_frame(codec.extract, remaining)

    def _frame(self) -> codec.InirFrame:
        self._ensure_started()
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
