"""One simulated gateway: the agent's own config file, fleet provisioning by claim (CSR) through
``agent.identity_setup.prepare_identity``, then ``agent.runtime.Agent`` (sampler, spool, uplink,
shadow, jobs) on its agent worker's event loop, each with its own MQTT5 connection, spool and identity."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import config as cfg
from agent.identity_setup import prepare_identity
from agent.runtime import Agent, ConfigRejected
from agent.spool import SpoolError
from fleet.profiles import DeviceProfile

log = logging.getLogger(__name__)


def provision_identity(config_path: str) -> float:
    """In a worker process: the agent's own start-up identity step (fleet provisioning by claim,
    CSR) for one gateway; returns the seconds it took."""
    t0 = time.monotonic()
    prepare_identity(cfg.load(Path(config_path)))
    return time.monotonic() - t0


def _load_identity(config_path: Path) -> cfg.AgentConfig:
    return prepare_identity(cfg.load(config_path))


@dataclass
class SimDevice:
    profile: DeviceProfile
    config_path: Path
    thing: str | None = None
    agent: Agent | None = None
    task: asyncio.Task[int] | None = None
    error: str | None = None
    committed: int = 0  # highest committed seq when the run ended
    counters: dict[str, int] = field(default_factory=dict)

    async def start_agent(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the agent worker, once the parent has provisioned this gateway: start the agent on
        this loop; its own start-up identity step finds the verified identity and only reads it.
        Raises what loading that identity raises."""
        conf = await loop.run_in_executor(None, _load_identity, self.config_path)
        self.thing = conf.device.thing_name
        self.agent = Agent(conf, self.config_path)
        self.task = loop.create_task(self._run(self.agent), name=f"agent-{self.thing}")

    async def _run(self, agent: Agent) -> int:
        try:
            return await agent.run(signals=False)
        except (ConfigRejected, SpoolError) as exc:
            self.error = f"agent: {exc}"
            log.error("gateway stopped", extra={"thing": self.thing, "error": str(exc)})
            return 1

    # --- what the fleet view reads ---------------------------------------------------------------
    @property
    def connected(self) -> bool:
        a = self.agent
        return a is not None and a.conn is not None and a.conn.stats.connected

    @property
    def acked(self) -> int:
        a = self.agent
        return a.uplink.stats.readings_acked if a is not None and a.uplink is not None else 0

    @property
    def produced(self) -> int:
        a = self.agent
        return a.spool.stats().next_seq - 1 if a is not None else 0

    @property
    def errors(self) -> int:
        a = self.agent
        n = 1 if self.error else 0
        if a is not None and a.uplink is not None:
            n += a.uplink.stats.failures
        if a is not None and a.conn is not None:
            n += a.conn.stats.connect_failures
        return n

    def last_connected_wall(self) -> float | None:
        a = self.agent
        return a.conn.stats.last_connected_wall if a is not None and a.conn is not None else None

    async def drain(self, batch_max_age_s: float) -> None:
        """End of run: stop sampling, commit, and send what is left at once (the live apply path
        with a short batch age), so the spool empties and every committed reading can be counted."""
        a = self.agent
        if a is None:
            return
        await a.sampler.stop()
        a.spool.commit()
        self.committed = a.spool.stats().committed_seq
        uplink = a.conf.uplink.model_copy(update={"batch_max_age_s": batch_max_age_s})
        new = a.conf.model_copy(update={"uplink": uplink})
        await a.apply(new)
        if a.uplink is not None:
            a.uplink.notify()

    def spooled_seqs(self) -> set[int]:
        """Sequence numbers still waiting in the spool: durable, not sent yet, not lost."""
        a = self.agent
        if a is None:
            return set()
        return {r.seq for r in a.spool.read_after(0, max(1, a.spool.stats().readings + 1))}

    def spooled(self) -> int:
        return self.agent.spool.stats().readings if self.agent is not None else 0

    async def stop(self, timeout_s: float = 120.0) -> None:
        """Ask the agent to stop; one that has not stopped after ``timeout_s`` is reported (a
        1,000-gateway run on a starved machine had 213 agents still stopping after 15 minutes and
        the simulator waited for them forever)."""
        if self.agent is not None and self.task is not None:
            self.agent.request_stop()
            done, _ = await asyncio.wait({self.task}, timeout=timeout_s)
            if not done:
                where = awaiting(self.task)
                self.error = f"agent: did not stop within {timeout_s:.0f} s (waiting in {where})"
                log.error("gateway did not stop", extra={"thing": self.thing, "timeout_s": timeout_s, "where": where})


def stuck_tasks(top: int = 10) -> list[dict[str, Any]]:
    """Agents that did not stop: every task still pending, grouped by name and await chain, most
    common first (what a stuck stop waits for; a task awaiting a future shows where it awaits)."""
    me = asyncio.current_task()
    counts = Counter(f"{t.get_name().split('-')[0]}: {awaiting(t)}" for t in asyncio.all_tasks() if t is not me)
    return [{"tasks": n, "where": where} for where, n in counts.most_common(top)]


def awaiting(task: asyncio.Task[int]) -> str:
    """Where a stuck task waits: its coroutines' await chain, outermost first (function:line);
    ``Task.get_stack`` shows only the outermost frame of a suspended coroutine."""
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(chain) < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(chain) or "?"
