"""Give the C heap's free pages back to the kernel when a burst of one-off work is over.

Start-up (reading the TOML, building the pydantic validators, opening the databases), each
connect (the TLS handshake on awscrt's threads, the shadow and jobs round-trips) and each batch's
encoding free a megabyte or so that glibc's malloc keeps for reuse; between those moments the
daemon never needs it, so on a gateway it is only RSS. ``malloc_trim(0)`` returns every whole free page of every arena
(bench/bench_footprint.py; docs/architecture.md, "Memory"). Where the C library has no
``malloc_trim`` (musl) this does nothing: the memory is then merely kept, never wrong."""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the symbols already in this process: the C library's among them
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_trim = _malloc_trim()


def trim() -> bool:
    """Return the C heap's free pages to the kernel; True when some were returned. Costs well under
    a millisecond at the daemon's heap size."""
    return bool(_trim(0)) if _trim is not None else False
