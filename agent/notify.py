"""systemd service notifications (sd_notify) and a watchdog that only barks while the agent is healthy.

The protocol is small: newline-separated ``KEY=value`` assignments in one datagram to the AF_UNIX
socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` names a Linux abstract socket). It is written here
rather than taken from PyPI because the ``sdnotify`` package is unmaintained since 2017 and
``systemd-python`` needs libsystemd headers and a C toolchain on every gateway, which the armv7 build
path (see docs/install.md) can least afford.

Notifications must never hurt the agent: sending is non-blocking, errors are logged once per window at
WARNING and otherwise ignored, and without ``$NOTIFY_SOCKET`` (run from a shell, in tests) every call
is a no-op.

``WatchdogGate`` decides *whether* to send ``WATCHDOG=1``: the main loop ticks a heartbeat, and a
separate timer thread pings systemd only while every heartbeat is fresh. A hung event loop therefore
stops the pings and systemd's ``WatchdogSec=`` restarts the agent, while a timer thread that merely
keeps running cannot mask the hang.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

# systemd rejects datagrams larger than this (src/core/manager.c NOTIFY_BUFFER_MAX); keep STATUS short.
_MAX_STATUS_CHARS = 1024
_WARN_WINDOW_S = 60.0


def _socket_address(raw: str) -> str | bytes:
    """``@name`` is an abstract socket: the kernel wants a leading NUL byte instead of ``@``."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


def _one_line(text: str) -> str:
    """STATUS= ends at the first newline; anything after it would be parsed as further assignments
    (a sensor name containing ``\\nREADY=1`` must not be able to forge readiness)."""
    flat = " ".join(text.replace("\r", " ").replace("\n", " ").split())
    return flat[:_MAX_STATUS_CHARS]


class Notifier:
    """Sends sd_notify messages. Thread-safe; never raises from a send and never blocks."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address: str | bytes | None = _socket_address(address) if address else None
        self._display = address or ""
        self._watchdog_usec = watchdog_usec
        self._clock = clock
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._last_warning = -_WARN_WINDOW_S * 2
        self._suppressed = 0
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Reads ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` as systemd sets them. A watchdog
        meant for another process (``WATCHDOG_PID`` differs, e.g. we were forked by a wrapper) is ignored,
        as sd_watchdog_enabled() does."""
        address = environ.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw_usec = environ.get("WATCHDOG_USEC", "")
        raw_pid = environ.get("WATCHDOG_PID", "")
        try:
            value = int(raw_usec) if raw_usec else 0
            pid_ok = not raw_pid or int(raw_pid) == os.getpid()
        except ValueError:
            log.warning(
                "ignoring malformed watchdog environment",
                extra={"watchdog_usec": raw_usec, "watchdog_pid": raw_pid},
            )
            value, pid_ok = 0, False
        if value > 0 and pid_ok:
            usec = value
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    # -- the messages the agent sends ------------------------------------------------------------

    def ready(self, status: str | None = None) -> None:
        """READY=1: the pipeline runs (sensors sampled, spool open). Not "connected": the agent works
        offline. Also sent again after a reload has been applied."""
        lines = ["READY=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        self.send("\n".join(lines))

    def status(self, text: str) -> None:
        """STATUS=<one line> shown by ``systemctl status``."""
        self.send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> None:
        lines = ["STOPPING=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        self.send("\n".join(lines))

    def reloading(self) -> None:
        """RELOADING=1 with MONOTONIC_USEC (required by Type=notify-reload on systemd >= 253, ignored by
        older managers). Follow with ``ready()`` once the new config is applied or rejected."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def extend_timeout(self, seconds: float) -> None:
        """EXTEND_TIMEOUT_USEC: ask for more time during a long start or a final spool flush on stop."""
        self.send(f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1_000_000))}")

    def watchdog_timeout_s(self) -> float | None:
        """The timeout systemd enforces (``WatchdogSec=``), or None when no watchdog is armed for us."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 1_000_000

    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half the enforced timeout, as sd_watchdog_enabled(3) advises,
        so one late ping does not get the agent killed. None when no watchdog is armed."""
        timeout = self.watchdog_timeout_s()
        return None if timeout is None else timeout / 2

    # -- transport ---------------------------------------------------------------------------------

    def send(self, message: str) -> bool:
        """Send one raw notification. Returns whether it was handed to the kernel."""
        if self._address is None:
            return False
        data = message.encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
                    )
                self._sock.sendto(data, self._address)
            except OSError as exc:
                # ENOENT/ECONNREFUSED (manager gone or restarted), EAGAIN (queue full), EMSGSIZE...
                # The next send opens a fresh socket; systemd may come back (daemon-reexec).
                self.failed += 1
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                self._warn(exc)
                return False
            self.sent += 1
            return True

    def _warn(self, exc: OSError) -> None:
        now = self._clock()
        if now - self._last_warning < _WARN_WINDOW_S:
            self._suppressed += 1
            return
        log.warning(
            "sd_notify send failed",
            extra={"socket": self._display, "error": str(exc), "suppressed": self._suppressed},
        )
        self._last_warning = now
        self._suppressed = 0

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class WatchdogGate:
    """Pings the systemd watchdog from a timer thread, but only while the agent's heartbeats are fresh.

    The main loop calls ``beat()`` every iteration (or from a periodic task on the event loop). Other
    long-lived workers may beat under their own name; once a name has beaten it must keep beating
    until ``forget(name)``. When any heartbeat is older than ``max_age_s`` the gate stops pinging,
    says why in STATUS= and in the log, and systemd restarts the agent after ``WatchdogSec=``.
    """

    def __init__(
        self,
        notifier: Notifier,
        ping_interval_s: float | None = None,
        *,
        max_age_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        interval = ping_interval_s if ping_interval_s is not None else notifier.watchdog_interval_s()
        if interval is not None and interval <= 0:
            raise ValueError(f"watchdog ping interval must be positive, got {interval}")
        self._notifier = notifier
        self.ping_interval_s = interval
        # A heartbeat as old as one ping interval means the loop missed a whole period: with the
        # interval at half of WatchdogSec, systemd acts at most ~1.5 x WatchdogSec after a hang.
        self.max_age_s = max_age_s if max_age_s is not None else interval
        self._clock = clock
        self._beats: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_stale = False
        self.pings = 0
        self.withheld = 0

    @property
    def armed(self) -> bool:
        return self.ping_interval_s is not None and self._notifier.enabled

    def beat(self, name: str = "main") -> None:
        with self._lock:
            self._beats[name] = self._clock()

    def forget(self, name: str) -> None:
        """A worker stopped on purpose (a sensor disabled by config): stop expecting its beat."""
        with self._lock:
            self._beats.pop(name, None)

    def stale(self) -> list[str]:
        """Names whose last beat is older than ``max_age_s``; ``["main"]`` before the first beat."""
        if self.max_age_s is None:
            return []
        now = self._clock()
        with self._lock:
            if not self._beats:
                return ["main"]
            return sorted(n for n, t in self._beats.items() if now - t > self.max_age_s)

    def check_once(self) -> bool:
        """One gate decision: ping if healthy. Returns whether WATCHDOG=1 was sent."""
        stale = self.stale()
        if stale:
            self.withheld += 1
            if not self._was_stale:
                self._was_stale = True
                log.error("watchdog withheld: heartbeat stale", extra={"stale": stale})
                self._notifier.status(f"unhealthy: no heartbeat from {', '.join(stale)}")
            return False
        if self._was_stale:
            self._was_stale = False
            log.warning("watchdog resumed: heartbeats fresh again")
        self._notifier.watchdog()
        self.pings += 1
        return True

    def start(self) -> None:
        """Start the timer thread; does nothing when systemd armed no watchdog for us."""
        if not self.armed or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        assert self.ping_interval_s is not None
        while not self._stop.wait(self.ping_interval_s):
            self.check_once()
