"""The shared UART / USB-serial transport: open by path, exchange one request for one frame within a
deadline, and survive the adapter vanishing.

When the port disappears (USB adapter unplugged, pty closed) the next I/O fails; we close our end,
raise ``DriverError`` and let a ``Backoff`` gate decide when the next ``read`` may try to reopen, so
the agent keeps running and reconnects by itself when the device comes back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import termios
import time
from collections.abc import Callable
from typing import Literal

import serial
from pydantic import Field

from drivers.backoff import Backoff
from drivers.base import DriverError, DriverSettings

# extract(buffer) -> (frame or None, bytes to drop from the front of the buffer). It must never raise:
# it only finds frame boundaries; checking the frame is the parser's job.
Extractor = Callable[[bytes], tuple[bytes | None, int]]

MAX_BUFFER = 8192
# termios.error is not an OSError: tcdrain on a vanished pty/USB adapter raises it.
IO_ERRORS = (serial.SerialException, OSError, termios.error)


class SerialSettings(DriverSettings):
    """Line settings every UART driver accepts; defaults are overridden per driver."""

    port: str = Field(..., min_length=1, description="serial device path, e.g. /dev/ttyUSB0 or /dev/serial0")
    baud: int = Field(9600, description="line speed in baud")
    timeout_s: float = Field(1.0, gt=0, le=30, description="how long one read waits for a complete reply")
    reconnect_min_s: float = Field(0.5, gt=0, le=60, description="first delay before reopening a lost port")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, description="cap of the reconnect backoff")


Parity = Literal["N", "E", "O"]


def open_failure_reason(path: str) -> str:
    """Why ``path`` cannot be opened for exclusive use, for a library (pymodbus) that reports only
    success or failure. It opens the device node and tries the same ``flock`` pyserial's
    ``exclusive=True`` takes, without touching the line settings, and closes it again at once."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        return str(exc)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return f"in use: another process or driver holds its exclusive lock ({exc.strerror})"
    finally:
        os.close(fd)
    return "the library could not open it (it opens now, so it may have been busy a moment ago)"


class SerialPort:
    def __init__(
        self,
        path: str,
        baudrate: int,
        *,
        parity: Parity = "N",
        stopbits: int = 1,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self._baud = baudrate
        self._parity = parity
        self._stopbits = stopbits
        self._ser: serial.Serial | None = None
        self.backoff = Backoff(reconnect_min_s, max(reconnect_min_s, reconnect_max_s))
        self._on_open = on_open
        self.opens = 0
        self._rx = b""  # bytes read past the end of the last frame (streaming devices send back to back)

    @classmethod
    def from_settings(
        cls, settings: SerialSettings, *, stopbits: int = 1, on_open: Callable[[], None] | None = None
    ) -> SerialPort:
        """The port every UART driver builds from its SerialSettings."""
        return cls(
            settings.port,
            settings.baud,
            stopbits=stopbits,
            reconnect_min_s=settings.reconnect_min_s,
            reconnect_max_s=settings.reconnect_max_s,
            on_open=on_open,
        )

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def ensure_open(self) -> serial.Serial:
        if self._ser is not None:
            return self._ser
        if not self.backoff.ready():
            raise DriverError(
                "port_unavailable", f"{self.path}: reconnect backoff, next try in {self.backoff.remaining_s():.1f}s"
            )
        try:
            ser = serial.Serial(
                self.path,
                baudrate=self._baud,
                bytesize=serial.EIGHTBITS,
                parity=self._parity,
                stopbits=self._stopbits,
                timeout=0,
                write_timeout=1.0,
                exclusive=True,
            )
        except (*IO_ERRORS, ValueError) as exc:
            delay = self.backoff.failure()
            raise DriverError("port_unavailable", f"{self.path}: {exc}; retry in {delay:.1f}s") from exc
        self._ser = ser
        self.opens += 1
        self.backoff.success()
        if self._on_open is not None:
            self._on_open()
        return ser

    def close(self) -> None:
        ser, self._ser = self._ser, None
        self._rx = b""
        if ser is not None:
            # The device may already be gone; closing our end is all that is left to do.
            with contextlib.suppress(*IO_ERRORS):
                ser.close()

    def _lost(self, exc: BaseException) -> DriverError:
        self.close()
        delay = self.backoff.failure()
        return DriverError("port_lost", f"{self.path}: {exc}; reconnecting in {delay:.1f}s")

    def write(self, data: bytes) -> None:
        ser = self.ensure_open()
        try:
            ser.write(data)
            ser.flush()
        except IO_ERRORS as exc:
            raise self._lost(exc) from exc

    def discard_input(self) -> None:
        """Drop stale bytes so a reply is matched to our request, not to an earlier one."""
        ser = self.ensure_open()
        self._rx = b""
        try:
            ser.reset_input_buffer()
        except IO_ERRORS as exc:
            raise self._lost(exc) from exc

    def read_frame(self, extract: Extractor, timeout_s: float) -> bytes:
        """Read until ``extract`` finds a complete frame or the deadline passes.

        Bytes before a frame start are garbage and are dropped; if only garbage arrived the error
        kind is ``garbage``, if nothing arrived it is ``timeout``.
        """
        ser = self.ensure_open()
        deadline = time.monotonic() + timeout_s
        buf, self._rx = self._rx, b""
        received = 0
        while True:
            frame, consumed = extract(buf)
            if consumed:
                buf = buf[consumed:]
            if frame is not None:
                self._rx = buf
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if received:
                    raise DriverError("garbage", f"{self.path}: {received} bytes but no complete frame")
                raise DriverError("timeout", f"{self.path}: no reply within {timeout_s:.2f}s")
            try:
                ser.timeout = min(remaining, 0.05)
                chunk = ser.read(max(1, ser.in_waiting))
            except IO_ERRORS as exc:
                raise self._lost(exc) from exc
            if chunk:
                received += len(chunk)
                buf = (buf + chunk)[-MAX_BUFFER:]

    def transact(self, request: bytes, extract: Extractor, timeout_s: float) -> bytes:
        self.discard_input()
        self.write(request)
        return self.read_frame(extract, timeout_s)


class SerialDriver:
    """The open/close every UART driver shares: ``open`` makes sure the port is open (a port that
    vanished is reopened behind its backoff gate), ``close`` releases it. A driver sets ``_port`` in
    its constructor and overrides ``open`` only when opening needs a device-specific step."""

    _port: SerialPort

    def open(self) -> None:
        self._port.ensure_open()

    def close(self) -> None:
        self._port.close()
