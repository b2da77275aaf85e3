"""Agent worker processes: each hosts its share of the fleet's agents on its own asyncio loop (and
its own awscrt event-loop group), so the agents use every core instead of one GIL. The parent
provisions, keeps the live view, runs the scenarios against the emulator and asks the workers for
their agents' state over a pipe; a worker answers one request at a time.

Requests (tuples, first item the verb) and replies:

- ``("start", index, profile, config_path)`` -> ``{"thing": str | None, "error": str | None}``
- ``("status",)`` -> ``{index: DeviceState}`` for every agent started here
- ``("drain", batch_max_age_s)`` -> ``{index: committed_seq}``
- ``("spooled",)`` -> ``{index: [seq, ...]}`` still waiting in each spool
- ``("stop", timeout_s, wave)`` -> ``{"errors": {index: error}, "stuck_tasks": [...]}``; the worker exits after it
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import signal
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from agent import config as cfg
from agent.identity_setup import IdentitySetupError
from fleet.device import SimDevice, stuck_tasks


class WorkerDied(Exception):
    """An agent worker process ended without answering (its traceback is on stderr)."""


@dataclass(frozen=True)
class DeviceState:
    """One agent's figures as the parent's view needs them (small: sent for every agent per poll)."""

    connected: bool
    acked: int
    produced: int
    errors: int
    last_connected_wall: float | None
    spooled: int
    error: str | None


def worker_main(conn: multiprocessing.connection.Connection, log_level: str) -> None:
    """The worker process: Ctrl-C goes to the parent, which stops the workers itself (or they see
    the pipe close and end)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger().setLevel(log_level)  # as in the simulator process: no handler of its own
    asyncio.run(_serve(conn))


async def _serve(conn: multiprocessing.connection.Connection) -> None:
    loop = asyncio.get_running_loop()
    devices: dict[int, SimDevice] = {}
    while True:
        try:
            msg = await loop.run_in_executor(None, conn.recv)
        except EOFError:  # the parent went away: stop the agents cleanly, nobody to report to
            await _handle(("stop", 30.0, 50), devices, loop)
            return
        conn.send(await _handle(msg, devices, loop))
        if msg[0] == "stop":
            conn.close()
            return


async def _handle(msg: tuple[Any, ...], devices: dict[int, SimDevice], loop: asyncio.AbstractEventLoop) -> Any:
    verb = msg[0]
    if verb == "start":
        _, index, profile, config_path = msg
        d = SimDevice(profile, Path(config_path))
        devices[index] = d
        try:
            await d.start_agent(loop)
        except (IdentitySetupError, cfg.ConfigError, OSError) as exc:
            d.error = f"agent start: {exc}"
        return {"thing": d.thing, "error": d.error}
    if verb == "status":
        return {i: DeviceState(d.connected, d.acked, d.produced, d.errors, d.last_connected_wall(), d.spooled(),
                               d.error) for i, d in devices.items() if d.agent is not None or d.error}
    if verb == "drain":
        live = {i: d for i, d in devices.items() if d.agent is not None}
        await asyncio.gather(*(d.drain(msg[1]) for d in live.values()))
        return {i: d.committed for i, d in live.items()}
    if verb == "spooled":
        return {i: sorted(d.spooled_seqs()) for i, d in devices.items() if d.agent is not None}
    if verb == "stop":
        _, timeout_s, wave = msg
        # In waves: each agent's last spool commit, fold and clean-shutdown mark run on this one
        # loop, so stops requested all at once finish one after another, and a fixed did-not-stop
        # timeout would fire for agents that were only queued behind the others.
        items = list(devices.values())
        for i in range(0, len(items), wave):
            await asyncio.gather(*(d.stop(timeout_s) for d in items[i:i + wave]), return_exceptions=True)
        stuck = any(d.error and "did not stop" in d.error for d in items)
        return {"errors": {i: d.error for i, d in devices.items() if d.error},
                "stuck_tasks": stuck_tasks() if stuck else []}
    raise ValueError(f"unknown worker request {verb!r}")


class AgentWorker:
    """The parent's handle on one worker process: one request in flight at a time."""

    def __init__(self, number: int, log_level: str) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that runs awscrt threads
        self.number = number
        self.conn, child = ctx.Pipe()
        self.proc: BaseProcess = ctx.Process(target=worker_main, args=(child, log_level),
                                             name=f"fleet-agents-{number}", daemon=True)
        self.proc.start()
        child.close()
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    async def call(self, *msg: Any) -> Any:
        async with self._lock:
            try:
                self.conn.send(msg)
                return await asyncio.to_thread(self.conn.recv)
            except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
                raise WorkerDied(f"agent worker {self.number} (pid {self.proc.pid}) ended during {msg[0]!r}, "
                                 f"exit code {self.proc.exitcode}") from exc

    def close(self, timeout_s: float = 10.0) -> None:
        """After ``stop`` the worker exits by itself; one that does not (or an aborted run) is killed."""
        self.conn.close()
        self.proc.join(timeout_s)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def start_workers(count: int, log_level: str) -> list[AgentWorker]:
    return [AgentWorker(i, log_level) for i in range(count)]
