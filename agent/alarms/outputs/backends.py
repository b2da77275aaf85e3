"""The three output backends: GPIO through gpiozero, a Modbus RTU coil through pymodbus (the relay
modules sold for RS-485 take "write single coil"), and a local command (argv, never a shell).
Every call may block (serial line, subprocess): the manager runs them on its own thread."""

from __future__ import annotations

import subprocess
import threading
from typing import Any, Protocol

from agent.alarms.outputs.config import CommandOutput, GpioOutput, ModbusCoilOutput, OutputConfig


class OutputError(Exception):
    """An output could not be opened or switched; the message names the output and why."""


class Backend(Protocol):
    def open(self) -> None: ...

    def set(self, energised: bool) -> None: ...

    def close(self) -> None: ...


class Gpio:
    def __init__(self, conf: GpioOutput, pin_factory: Any = None) -> None:
        self.conf = conf
        self._factory = pin_factory
        self._dev: Any = None

    def open(self) -> None:
        from gpiozero import DigitalOutputDevice, GPIOZeroError

        try:
            self._dev = DigitalOutputDevice(self.conf.pin, active_high=self.conf.active_high, initial_value=False,
                                            pin_factory=self._factory)
        except (GPIOZeroError, OSError, ValueError, RuntimeError) as exc:
            raise OutputError(f"output {self.conf.name}: cannot open GPIO pin {self.conf.pin}: "
                              f"{type(exc).__name__}: {exc}") from None

    def set(self, energised: bool) -> None:
        from gpiozero import GPIOZeroError

        if self._dev is None:
            raise OutputError(f"output {self.conf.name}: GPIO pin {self.conf.pin} is not open")
        try:
            self._dev.value = energised
        except (GPIOZeroError, OSError) as exc:
            raise OutputError(f"output {self.conf.name}: GPIO pin {self.conf.pin}: {exc}") from None

    def close(self) -> None:
        if self._dev is not None:
            self._dev.close()
            self._dev = None


class ModbusLine:
    """One RS-485 port, opened exclusively and shared by every coil output on it (a relay module has
    several coils); a lock keeps their frames from interleaving."""

    def __init__(self, conf: ModbusCoilOutput) -> None:
        self.conf = conf
        self.lock = threading.Lock()
        self.users = 0
        self._client: Any = None

    def client(self) -> Any:
        from pymodbus.client import ModbusSerialClient

        from drivers.transport.serial_port import open_failure_reason

        if self._client is None:
            c = self.conf
            client = ModbusSerialClient(c.port, baudrate=c.baud, parity=c.parity, stopbits=c.stopbits,
                                        timeout=c.timeout_s, retries=1)
            if not client.connect():
                client.close()
                raise OutputError(f"output {c.name}: cannot open {c.port}: {open_failure_reason(c.port)}")
            self._client = client
        return self._client

    def drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class ModbusCoil:
    def __init__(self, conf: ModbusCoilOutput, line: ModbusLine) -> None:
        self.conf = conf
        self.line = line

    def open(self) -> None:
        with self.line.lock:
            self.line.client()

    def set(self, energised: bool) -> None:
        from pymodbus.exceptions import ModbusException

        c = self.conf
        with self.line.lock:
            client = self.line.client()
            try:
                reply = client.write_coil(c.coil, energised, device_id=c.slave)
            except ModbusException as exc:
                if not client.connected:
                    self.line.drop()  # reopened on the next try (adapter unplugged and back)
                raise OutputError(f"output {c.name}: coil {c.coil} on slave {c.slave}: {exc}") from None
        if reply.isError():
            code = getattr(reply, "exception_code", "?")
            raise OutputError(f"output {c.name}: slave {c.slave} refused coil {c.coil} (exception {code})")

    def close(self) -> None:
        with self.line.lock:
            self.line.users -= 1
            if self.line.users <= 0:
                self.line.drop()


class Command:
    def __init__(self, conf: CommandOutput) -> None:
        self.conf = conf

    def open(self) -> None:
        import shutil

        for argv in (self.conf.on_command, self.conf.off_command):
            if shutil.which(argv[0]) is None:
                raise OutputError(f"output {self.conf.name}: command {argv[0]!r} not found or not executable")

    def set(self, energised: bool) -> None:
        argv = self.conf.on_command if energised else self.conf.off_command
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.conf.timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise OutputError(f"output {self.conf.name}: {argv[0]} did not finish in {self.conf.timeout_s} s") from None
        except OSError as exc:
            raise OutputError(f"output {self.conf.name}: cannot run {argv[0]}: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).decode(errors="replace").strip()[-200:]
            raise OutputError(f"output {self.conf.name}: {argv[0]} exited {done.returncode}: {tail}")

    def close(self) -> None:
        """Nothing held open."""


def build(configs: list[OutputConfig], pin_factory: Any = None) -> dict[str, Backend]:
    lines: dict[str, ModbusLine] = {}
    out: dict[str, Backend] = {}
    for c in configs:
        if isinstance(c, GpioOutput):
            out[c.name] = Gpio(c, pin_factory)
        elif isinstance(c, ModbusCoilOutput):
            line = lines.setdefault(c.port, ModbusLine(c))
            line.users += 1
            out[c.name] = ModbusCoil(c, line)
        else:
            out[c.name] = Command(c)
    return out
