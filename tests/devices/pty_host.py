"""Serve an emulated UART device on the master side of a pty pair.

The driver under test opens the slave by path with pyserial, exactly as it would open /dev/ttyUSB0.
``vanish`` closes the pty and deletes the symlink (a USB-serial adapter unplugged); ``reappear``
makes a fresh pty behind the same symlink (plugged back in).
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
import tty
from enum import Enum
from pathlib import Path


class Fault(Enum):
    NONE = "none"
    SILENT = "silent"  # read timeout: the device says nothing
    GARBAGE = "garbage"  # only line noise instead of a reply
    NOISE_PREFIX = "noise_prefix"  # line noise, then the good reply: the driver must resynchronise
    BAD_CHECKSUM = "bad_checksum"
    NAK = "nak"


class EmulatedDevice:
    """Base of every UART emulator. Subclasses implement the protocol; faults are applied here."""

    frame_start_bytes: bytes = b""  # noise never contains these, so a noise prefix cannot fake a frame
    tick_interval_s: float | None = None  # streaming devices emit ``tick()`` this often

    def __init__(self, seed: int = 0) -> None:
        self.fault = Fault.NONE
        self.requests: list[bytes] = []
        self._buf = b""
        self._rng = random.Random(seed)
        self.lock = threading.Lock()

    # -- protocol hooks -------------------------------------------------------------------------
    def take_request(self, buf: bytes) -> tuple[bytes | None, int]:
        """Split one request off ``buf``: (request or None, bytes consumed)."""
        raise NotImplementedError

    def reply(self, request: bytes) -> bytes:
        raise NotImplementedError

    def corrupt(self, reply: bytes) -> bytes:
        """The same reply with a checksum that does not match."""
        return reply[:-1] + bytes(((reply[-1] ^ 0x5A) or 1,))

    def nak(self, request: bytes) -> bytes:
        raise NotImplementedError

    def tick(self) -> bytes:
        return b""

    # -- fault handling -------------------------------------------------------------------------
    def noise(self, n: int = 24) -> bytes:
        out = bytearray()
        while len(out) < n:
            b = self._rng.randrange(256)
            if b not in self.frame_start_bytes:
                out.append(b)
        return bytes(out)

    def apply_fault(self, reply: bytes, request: bytes | None) -> bytes:
        fault = self.fault
        if fault is Fault.SILENT:
            return b""
        if fault is Fault.GARBAGE:
            return self.noise()
        if fault is Fault.NOISE_PREFIX:
            return self.noise() + reply
        if fault is Fault.BAD_CHECKSUM:
            return self.corrupt(reply) if reply else reply
        if fault is Fault.NAK and request is not None:
            return self.nak(request)
        return reply

    def handle(self, data: bytes) -> bytes:
        with self.lock:
            self._buf += data
            out = b""
            while True:
                req, consumed = self.take_request(self._buf)
                self._buf = self._buf[consumed:]
                if req is None:
                    return out
                self.requests.append(req)
                out += self.apply_fault(self.reply(req), req)

    def stream(self) -> bytes:
        with self.lock:
            frame = self.tick()
            return self.apply_fault(frame, None) if frame else b""


class PtyHost:
    def __init__(self, device: EmulatedDevice, link: Path | None = None) -> None:
        self.device = device
        self.link = link
        self._master = -1
        self._slave = -1
        self.slave_name = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._io_lock = threading.Lock()

    @property
    def port(self) -> str:
        return str(self.link) if self.link is not None else self.slave_name

    def _make_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # keep the slave open and raw, so the master never sees EIO or echo
        self._master, self._slave = master, slave
        self.slave_name = os.ttyname(slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self.slave_name)
            tmp.replace(self.link)

    def start(self) -> PtyHost:
        self._make_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="pty-device", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            with self._io_lock:
                master = self._master
            if master < 0:
                time.sleep(0.01)
                continue
            interval = self.device.tick_interval_s
            wait = 0.02 if interval is None else max(0.0, min(0.02, next_tick - time.monotonic()))
            try:
                ready, _, _ = select.select([master], [], [], wait)
                if ready:
                    data = os.read(master, 4096)
                    reply = self.device.handle(data)
                    if reply:
                        os.write(master, reply)
                if interval is not None and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + interval
                    frame = self.device.stream()
                    if frame:
                        os.write(master, frame)
            except OSError:
                # The pty was closed under us by vanish(); wait for reappear().
                time.sleep(0.01)

    def write_raw(self, data: bytes) -> None:
        os.write(self._master, data)

    def vanish(self) -> None:
        with self._io_lock:
            for fd in (self._master, self._slave):
                if fd >= 0:
                    os.close(fd)
            self._master = self._slave = -1
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def reappear(self) -> None:
        with self._io_lock:
            self._make_pty()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.vanish()

    def __enter__(self) -> PtyHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
