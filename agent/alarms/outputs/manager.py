"""Drives the configured outputs from the alarm states, on a thread of its own (serial lines and
commands block; the event loop must not). The newest wanted state always wins: a burst of
transitions becomes one switch per output. A failed open or switch is retried every ``retry_s``
and reported through ``on_problem(name, reason)`` once per failure episode (and ``None`` when the
output works again), so status and an event say an output is broken."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.alarms.outputs.backends import Backend, OutputError, build
from agent.alarms.outputs.config import OutputConfig

log = logging.getLogger(__name__)

RETRY_S = 5.0


@dataclass
class OutputState:
    name: str
    backend: str
    fail_safe: bool
    active: bool = False  # an alarm it follows is active
    energised: bool | None = None  # what the hardware was last set to (None = unknown)
    opened: bool = False
    error: str | None = None
    switches: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "fail_safe": self.fail_safe, "active": self.active,
                "energised": self.energised, "ok": self.error is None, "error": self.error,
                "switches": self.switches, "failures": self.failures}


def wanted(conf: OutputConfig, states: Iterable[dict[str, Any]]) -> bool:
    """Whether an alarm this output follows is active (its level is one of the output's levels)."""
    return any((not conf.sensors or s["sensor_id"] in conf.sensors) and s["level"] in conf.levels for s in states)


class OutputManager:
    def __init__(self, configs: list[OutputConfig], on_problem: Callable[[str, str | None], None],
                 pin_factory: Any = None, retry_s: float = RETRY_S) -> None:
        self.configs = {c.name: c for c in configs}
        self.backends: dict[str, Backend] = build(configs, pin_factory)
        self.states = {c.name: OutputState(c.name, c.backend, c.fail_safe) for c in configs}
        self.on_problem = on_problem
        self.retry_s = retry_s
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self, states: list[dict[str, Any]]) -> None:
        """Open every output and set it to its wanted state (healthy unless an alarm is restored)."""
        self.update(states)
        if self.backends:
            self._thread = threading.Thread(target=self._run, name="alarm-outputs", daemon=True)
            self._thread.start()

    def update(self, states: list[dict[str, Any]]) -> None:
        with self._cond:
            for name, conf in self.configs.items():
                self.states[name].active = wanted(conf, states)
            self._cond.notify()

    def stop(self, timeout_s: float = 3.0) -> None:
        """De-energise everything (a stopped detector is not healthy) and close."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("alarm outputs did not stop in time")

    def status(self) -> list[dict[str, Any]]:
        with self._cond:
            return [s.as_dict() for s in self.states.values()]

    # --- the worker ------------------------------------------------------------------------------------
    def _target(self, name: str) -> bool:
        st = self.states[name]
        return st.active != st.fail_safe  # fail-safe: energised while healthy

    def _pending(self) -> list[tuple[str, bool]]:
        return [(n, self._target(n)) for n, s in self.states.items()
                if s.energised != self._target(n) or not s.opened]

    def _run(self) -> None:
        while True:
            with self._cond:
                todo = self._pending()
                if not todo and not self._stopping:
                    self._cond.wait()
                    continue
                if self._stopping:
                    break
            for name, energised in todo:
                self._apply(name, energised)
            with self._cond:
                if any(self.states[n].error for n, _ in todo) and not self._stopping:
                    self._cond.wait(self.retry_s)
        for name, backend in self.backends.items():
            st = self.states[name]
            if st.opened:
                try:
                    backend.set(False)
                except OutputError as exc:
                    log.error("output not de-energised at stop", extra={"output": name, "error": str(exc)})
                backend.close()

    def _apply(self, name: str, energised: bool) -> None:
        st, backend = self.states[name], self.backends[name]
        try:
            if not st.opened:
                backend.open()
                st.opened = True
            backend.set(energised)
        except OutputError as exc:
            with self._cond:
                first = st.error is None
                st.error, st.energised = str(exc), None
                st.failures += 1
            if first:
                log.error("alarm output failed", extra={"output": name, "error": str(exc)})
                self.on_problem(name, str(exc))
            return
        with self._cond:
            recovered = st.error is not None
            st.error = None
            if st.energised != energised:
                st.switches += 1
            st.energised = energised
        log.info("alarm output set", extra={"output": name, "energised": energised})
        if recovered:
            self.on_problem(name, None)
