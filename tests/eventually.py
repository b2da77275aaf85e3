"""The one polling helper of the test suite: wait for a condition with a deadline, never a fixed
sleep (a loaded CI machine is slow, not wrong). Timing is never asserted; only the condition is."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# What to say when the deadline passes: a fixed text, or a function called then (a log's tail,
# the last status) so the failure shows what did happen instead of only "not met".
What = str | Callable[[], Any] | None


def _failure(fn: Callable[..., Any], timeout_s: float, value: Any, what: What) -> AssertionError:
    said = what() if callable(what) else what
    detail = f"{said}; " if said is not None else ""
    return AssertionError(f"{detail}condition not met within {timeout_s} s: {fn}; last: {value!r}")


def eventually(fn: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.05,
               retry_on: tuple[type[BaseException], ...] = (), errors: list[BaseException] | None = None,
               what: What = None) -> T:
    """Call ``fn`` until it returns something truthy and return that. Exceptions of ``retry_on``
    count as "not yet" (appended to ``errors`` when given) and the last one is raised at the
    deadline; otherwise an AssertionError names ``what``, the condition and its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = fn()
        except retry_on as exc:
            if errors is not None:
                errors.append(exc)
            if time.monotonic() > deadline:
                raise
        else:
            if value:
                return value
            if time.monotonic() > deadline:
                raise _failure(fn, timeout_s, value, what)
        time.sleep(interval_s)


async def eventually_async(fn: Callable[[], Any] | Callable[[], Awaitable[Any]], timeout_s: float = 20.0,
                           interval_s: float = 0.05, what: What = None) -> Any:
    """``eventually`` inside an event loop: ``fn`` may be a plain or a coroutine function; the loop
    keeps running while we wait."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise _failure(fn, timeout_s, value, what)
        await asyncio.sleep(interval_s)
