"""``rotate-certificate``: provisioning.rotation.rotate_certificate (new key on the device, CSR,
RegisterThing, proven by a fresh connection before the switch). On success the final status is
reported and then the agent restarts to connect with the new certificate; on failure the old
identity stays in force (FAILED with the reason).

Two connections with the same client id cannot coexist: IoT Core (and the emulator) disconnects
the older one, and both clients reconnecting take each other over in turn. The device policy
demands client id = thing name, so:

- CreateCertificateFromCsr and RegisterThing run over the agent's OWN live connection (its policy
  allows those topics) instead of a second session with the old certificate;
- only for the proof of the new pair, which needs its own connection, the agent's client is
  stopped, and started again (old certificate, still ACTIVE) right after, success or failure,
  so the final status goes out on it."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from agent.remote.jobs.actions.base import Action, ActionContext, Failed, Params, Progress, Result

if TYPE_CHECKING:
    from agent.connection import Connection
    from provisioning.identity import Identity

log = logging.getLogger(__name__)

PAUSE_TIMEOUT_S = 10.0


class NoParams(Params):
    pass


class _LivePause:
    """Stops the agent's MQTT client for the proof connection and starts it again afterwards.
    ``pause`` runs in the rotation thread; everything that touches the client runs on the loop."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.loop = loop
        self.paused = False
        self.finished = False  # the action is over (done, failed or cancelled): never pause now

    async def _stop(self) -> bool:
        if self.finished:
            return False
        self.paused = True  # before the await: a resume racing with the stop must start it again
        await self.conn.stop()
        return True

    def pause(self, _candidate: Identity) -> None:
        from provisioning.rotation import RotationFailed

        fut = asyncio.run_coroutine_threadsafe(self._stop(), self.loop)
        if not fut.result(PAUSE_TIMEOUT_S):
            raise RotationFailed("the job ended before the new certificate was proven")
        log.info("agent connection paused to prove the new certificate")

    def resume(self) -> None:
        self.finished = True
        if not self.paused:
            return
        self.conn.start()

    async def reconnected(self, wait_s: float) -> None:
        """The final status goes out on this connection: give it a moment to come back."""
        try:
            async with asyncio.timeout(wait_s):  # not wait_for: it can lose a shutdown's cancel (3.11)
                await self.conn.connected.wait()
        except TimeoutError:
            log.warning("agent connection not back yet after the certificate proof")


class _CommitGate:
    """The identity switch happens only while the job is still running. The rotation runs in a
    thread that a timeout or a cancel cannot stop; without this gate it went on and switched the
    identity after the job was reported FAILED. ``enter`` (rotation thread, right before the
    switch) and ``close`` (the loop, when the action ends early) decide under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._closed = False
        self.committing = False

    def enter(self, _candidate: Identity) -> None:
        from provisioning.rotation import RotationFailed

        with self._lock:
            if self._closed:
                raise RotationFailed("the job ended (timed out or cancelled) before the switch; old identity kept")
            self.committing = True

    def close(self) -> bool:
        """No switch from now on; True when it was already under way (it cannot be undone)."""
        with self._lock:
            self._closed = True
            return self.committing


async def run(ctx: ActionContext, params: NoParams, progress: Progress) -> Result:
    from provisioning import identity as ident_mod
    from provisioning.flow import ProvisioningBusy
    from provisioning.rotation import RotationFailed, rotate_certificate
    from provisioning.session import Endpoint, IdentityClient

    conf = ctx.ports.config()
    try:
        ident = ident_mod.load(conf.state_dir)
    except ident_mod.IdentityError as exc:
        raise Failed(str(exc)) from None
    conn = ctx.ports.connection
    if conn is None or not conn.connected.is_set():
        raise Failed("not connected to IoT Core")
    host = conf.connection.endpoint or (ident.endpoint if ident else "")
    endpoint = Endpoint(host, conf.connection.port, conf.connection.ca_file)
    timeout_s = ctx.remote.request_timeout_s
    live = _LivePause(conn, asyncio.get_running_loop())
    gate = _CommitGate()
    await progress({"step": "rotating"})
    try:
        res = await asyncio.to_thread(
            ctx.env.rotate or rotate_certificate, conf.state_dir, endpoint, key_type=conf.provisioning.key_type,
            identity_client=IdentityClient(conn.client, timeout_s), before_verify=live.pause,
            before_commit=gate.enter, request_timeout_s=timeout_s,
        )
    except (RotationFailed, ProvisioningBusy) as exc:
        raise Failed(str(exc)) from None
    except asyncio.CancelledError:
        if gate.close():
            # The timeout or cancel hit the switch itself: the new identity is (being) written.
            # Restart onto it rather than run on a pair the files no longer name.
            log.error("rotation switched the identity as its job ended; restarting to use it")
            ctx.ports.request_stop()
        raise
    finally:
        live.resume()
    await live.reconnected(timeout_s)
    return Result(
        {"new_certificate_id": res.new_certificate_id[:64], "not_after": res.not_after.isoformat()},
        restart_after=True,
    )


ACTION = Action("rotate-certificate", NoParams, run)
