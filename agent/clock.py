"""Is the wall clock trustworthy? A Raspberry Pi has no RTC and boots at a stale time until NTP (or
the 5G modem) sets it, so every reading carries ``clock_synced``; downstream can repair timestamps
of unsynced readings from the sequence numbers and the sampling interval.

Sources, in order: systemd-timesyncd's flag file, then the kernel's own view via ``adjtimex(2)``
with modes=0 (read-only, needs no privilege; chrony and ntpd clear STA_UNSYNC when synchronised).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    # Only the leading fields matter; the kernel struct is padded to 208 bytes on 64-bit.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


def adjtimex_synced() -> bool | None:
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None  # e.g. EPERM under a seccomp filter: unknown, not "unsynced"
    return state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)


class ClockSync:
    """Cached answer, refreshed at most every ``ttl_s`` (the sampler asks once per reading)."""

    def __init__(self, source: str = "auto", ttl_s: float = 10.0, flag_file: Path = TIMESYNCD_FLAG) -> None:
        self.source = source
        self.ttl_s = ttl_s
        self.flag_file = flag_file
        self._value = False
        self._checked = -1e18

    def _probe(self) -> bool:
        if self.source == "assume_synced":
            return True
        if self.source in ("auto", "timesyncd") and self.flag_file.exists():
            return True
        if self.source in ("auto", "adjtimex"):
            return bool(adjtimex_synced())
        return False

    def synced(self) -> bool:
        now = time.monotonic()
        if now - self._checked >= self.ttl_s:
            value = self._probe()
            if value != self._value:
                log.info("clock sync changed", extra={"clock_synced": value})
            self._value = value
            self._checked = now
        return self._value
