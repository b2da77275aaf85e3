"""The agent's one MQTT5 connection to IoT Core. It owns the awscrt client; everyone else asks it.

awscrt calls back on its own event-loop threads, where blocking can deadlock the client, so every
callback only hands its data to the asyncio loop with ``call_soon_threadsafe``.

Publishes are failed, not queued, while offline (``FAIL_ALL_ON_DISCONNECT``): the durable spool is
the only queue, so nothing lives twice and nothing is retried behind the uplink's back.

Reconnecting is scheduled here, not inside awscrt: after a failed attempt or a lost connection the
client is stopped and started again when ``agent.link.backoff.ReconnectPolicy`` says, so the status
can say when the next attempt is, and the wait can be cut short when the network comes back (the
network watch below) without giving up full jitter for a broker that is down. awscrt's own
reconnect delay is set to the maximum as a safety net only. Only ever one client with this client
id exists, and it is restarted only while disconnected, so a restart never takes over a live
session (see agent/link/README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from awscrt import mqtt5
from awscrt.exceptions import AwsCrtError

from agent.config import ConnectionConfig
from agent.link.backoff import ReconnectPolicy
from agent.link.probe import probe
from agent.link.watch import WATCHES, NetworkWatch
from agent.status_model import LinkHealth
from iotmqtt import Lifecycle, Target, awaitable, build_client, describe_failure, failure_kind
from iotmqtt.errors import is_offline, is_too_large

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, mqtt5.PublishPacket], None]
# Identical connect-failure lines closer together than this are counted, not repeated.
LOG_EVERY_S = 30.0


class PublishError(Exception):
    """A publish was not acknowledged with success. ``retryable`` is False for a refusal that will
    repeat identically (not authorised, topic invalid); ``too_large`` asks the caller to split;
    ``offline`` says the link was (or went) down, so there is nothing to back off from."""

    def __init__(
        self, message: str, *, retryable: bool = True, too_large: bool = False, offline: bool = False
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.too_large = too_large
        self.offline = offline


@dataclass
class ConnectionStats:
    connected: bool = False
    state: str = "stopped"  # connecting | connected | waiting (for the next attempt) | stopped
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    last_error: str | None = None  # the connection's own reason, e.g. AWS_ERROR_MQTT5_PING_RESPONSE_TIMEOUT
    failure_kind: str | None = None  # network | broker | refused
    refused: bool = False  # the broker refused our certificate/client id: an operator must act
    last_connected_wall: float | None = None
    down_since_wall: float | None = None
    attempts: int = 0  # connect attempts since the link was last up
    next_attempt_wall: float | None = None
    network: str = "unknown"  # up | down | unknown, as the reachability probe last saw it
    network_returns: int = 0
    last_network_event: str | None = None
    publishes: int = 0
    subscriptions_refused: int = 0
    publish_times: list[float] = field(default_factory=list)


def _topic_matches(filter_: str, topic: str) -> bool:
    f_parts, t_parts = filter_.split("/"), topic.split("/")
    for i, f in enumerate(f_parts):
        if f == "#":
            return len(t_parts) > i  # IoT Core: "a/#" does not match "a"
        if i >= len(t_parts) or (f != "+" and f != t_parts[i]):
            return False
    return len(f_parts) == len(t_parts)


_TOO_LARGE = {mqtt5.PubackReasonCode.PAYLOAD_FORMAT_INVALID}
_NOT_RETRYABLE = {
    mqtt5.PubackReasonCode.NOT_AUTHORIZED,
    mqtt5.PubackReasonCode.TOPIC_NAME_INVALID,
}


class Connection:
    def __init__(
        self,
        conf: ConnectionConfig,
        client_id: str,
        loop: asyncio.AbstractEventLoop,
        *,
        ack_timeout_s: float = 30.0,
    ) -> None:
        if not conf.endpoint:
            raise ValueError("connection.endpoint is empty: the agent runs offline")
        if conf.cert_file is None or conf.key_file is None:
            raise ValueError("connection.cert_file and connection.key_file are required to connect")
        self.conf = conf
        self.client_id = client_id
        self._loop = loop
        self.stats = ConnectionStats()
        self.connected = asyncio.Event()
        self._handlers: list[tuple[str, MessageHandler]] = []
        self._on_connect: list[Callable[[bool], None]] = []
        self._kept: list[str] = []
        self._background: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()
        self._stopped.set()
        self.policy = ReconnectPolicy(
            conf.min_reconnect_delay_ms / 1000,
            conf.max_reconnect_delay_ms / 1000,
            network_return_jitter_s=conf.network_return_jitter_ms / 1000,
        )
        self._wanted = False  # start() called and stop() not since
        self._client_running = False  # client.start() issued and its "stopped" not yet seen
        self._start_when_stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._connected_mono: float | None = None
        self._attempt_mono: float | None = None
        self._suspect = asyncio.Event()  # the network is suspected down: probe it
        self._hint = asyncio.Event()
        self._seen_down = False  # a probe found the network down during this outage
        self._down_seen_at = 0.0
        self._next_probe = 0.0
        self._outstanding: dict[object, float] = {}  # publishes awaiting PUBACK: when sent
        self._last_inbound = 0.0  # monotonic: last CONNACK, PUBACK or message from the broker
        self._watch_task: asyncio.Task[None] | None = None
        self._hints: NetworkWatch | None = None
        self._last_log: tuple[str, float, int] = ("", 0.0, 0)  # reason, when, suppressed since
        self.client = self._build(Path(conf.cert_file), Path(conf.key_file), ack_timeout_s)

    def _build(self, cert: Path, key: Path, ack_timeout_s: float) -> mqtt5.Client:
        c = self.conf
        return build_client(
            Target(c.endpoint, c.port, c.ca_file, cert, key, self.client_id),
            Lifecycle(
                on_publish=self._cb_publish,
                on_attempt=self._cb_attempt,
                on_success=self._cb_success,
                on_failure=self._cb_failure,
                on_disconnect=self._cb_disconnect,
                on_stopped=self._cb_stopped,
            ),
            keep_alive_s=c.keep_alive_s,
            ping_timeout_ms=c.ping_timeout_ms,
            connect_timeout_ms=c.connect_timeout_ms,
            ack_timeout_s=int(ack_timeout_s),
            # A safety net only: the agent stops the client after every failure and schedules the
            # next attempt itself.
            min_reconnect_delay_ms=c.max_reconnect_delay_ms,
            max_reconnect_delay_ms=c.max_reconnect_delay_ms,
            jitter=mqtt5.ExponentialBackoffJitterMode.NONE,
            iot_core_limits=c.iot_core_limits,
        )

    # --- awscrt callbacks: hand over to the loop, never block -------------------------------
    def _post(self, fn: Callable[..., None], *args: object) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _cb_publish(self, data: mqtt5.PublishReceivedData) -> None:
        p = data.publish_packet
        self._post(self._dispatch, p.topic, bytes(p.payload or b""), p)

    def _cb_attempt(self, data: mqtt5.LifecycleAttemptingConnectData) -> None:
        self._post(self._attempting)

    def _cb_success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        present = bool(data.connack_packet and data.connack_packet.session_present)
        self._post(self._connected, present)

    def _cb_failure(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        self._post(self._failed, describe_failure(data.exception, data.connack_packet))

    def _cb_disconnect(self, data: mqtt5.LifecycleDisconnectData) -> None:
        self._post(self._disconnected, describe_failure(data.exception, data.disconnect_packet))

    def _cb_stopped(self, data: mqtt5.LifecycleStoppedData) -> None:
        self._post(self._client_stopped)

    # --- on the loop ----------------------------------------------------------------------------
    def _attempting(self) -> None:
        self.stats.attempts += 1
        self.stats.state = "connecting"
        self.stats.next_attempt_wall = None
        self._attempt_mono = time.monotonic()

    def _connected(self, session_present: bool) -> None:
        st = self.stats
        if st.down_since_wall is not None and st.last_error is not None:
            log.info("link up again", extra={"down_s": round(time.time() - st.down_since_wall, 1),
                                              "attempts": st.attempts, "last_error": st.last_error})
        st.connected = True
        st.state = "connected"
        st.connects += 1
        st.refused = False
        st.last_connected_wall = time.time()
        st.down_since_wall = None
        st.attempts = 0
        st.next_attempt_wall = None
        st.network = "up"
        self._connected_mono = self._last_inbound = time.monotonic()
        self._suspect.clear()
        self._seen_down = False
        self._last_log = ("", 0.0, 0)
        self.connected.set()
        log.info("connected", extra={"endpoint": self.conf.endpoint, "session_present": session_present})
        if self._kept and not session_present:
            self._resubscribe(list(self._kept))
        for cb in list(self._on_connect):
            cb(session_present)

    def _failed(self, why: str) -> None:
        kind = failure_kind(why)
        if kind == "stopped":  # an attempt we cut short ourselves
            return
        st = self.stats
        st.connect_failures += 1
        st.last_error, st.failure_kind = why, kind
        if st.down_since_wall is None:
            st.down_since_wall = time.time()
        refused = kind == "refused"
        if refused and not st.refused:
            log.error(
                "broker refused the certificate (revoked, inactive or not allowed by its policy?); "
                "retrying with backoff",
                extra={"endpoint": self.conf.endpoint, "error": why, "cert_file": str(self.conf.cert_file)},
            )
        st.refused = refused
        self._judge_network(kind)
        self._schedule(self.policy.next_delay())
        if not refused:
            self._log_failure(why, kind)

    def _disconnected(self, why: str) -> None:
        kind = failure_kind(why)
        st = self.stats
        was_connected = st.connected
        st.connected = False
        self.connected.clear()
        if kind == "stopped":
            return
        st.disconnects += int(was_connected)
        st.last_error, st.failure_kind = why, kind
        st.down_since_wall = time.time()
        st.attempts = 0
        up_for = time.monotonic() - self._connected_mono if self._connected_mono is not None else 0.0
        log.warning("disconnected", extra={"error": why, "kind": kind, "connected_s": round(up_for, 1)})
        self._judge_network(kind)
        self._schedule(self.policy.lost(up_for))

    def _client_stopped(self) -> None:
        self._client_running = False
        self._stopped.set()
        if self._start_when_stopped:
            self._start_when_stopped = False
            self._start_client()

    def _dispatch(self, topic: str, payload: bytes, packet: mqtt5.PublishPacket) -> None:
        self._last_inbound = time.monotonic()
        for filter_, handler in list(self._handlers):
            if _topic_matches(filter_, topic):
                handler(topic, payload, packet)

    def _log_failure(self, why: str, kind: str) -> None:
        """Every failed connect is logged, but one line per reason per LOG_EVERY_S at most (the rest
        are counted into the next line). A failure the agent expects (network or broker down) is a
        WARNING, never an ERROR."""
        now = time.monotonic()
        last_why, last_at, suppressed = self._last_log
        if why == last_why and now - last_at < LOG_EVERY_S:
            self._last_log = (why, last_at, suppressed + 1)
            return
        st = self.stats
        log.warning(
            "connect failed",
            extra={
                "endpoint": self.conf.endpoint, "error": why, "kind": kind, "attempts": st.attempts,
                "down_s": round(time.time() - st.down_since_wall, 1) if st.down_since_wall else 0.0,
                "next_attempt_in_s": round(st.next_attempt_wall - time.time(), 1) if st.next_attempt_wall else None,
                "similar_not_logged": suppressed,
            },
        )
        self._last_log = (why, now, 0)

    # --- reconnect schedule -------------------------------------------------------------------------
    def _schedule(self, delay: float) -> None:
        """Pause the client (so awscrt does not retry on its own) and start it after ``delay``."""
        if not self._wanted:
            return
        if self._timer is not None:
            self._timer.cancel()
        self.stats.state = "waiting"
        self.stats.next_attempt_wall = time.time() + delay
        if self._client_running:
            self.client.stop()
        self._timer = self._loop.call_later(delay, self._attempt_now)

    def _attempt_now(self) -> None:
        self._timer = None
        if not self._wanted:
            return
        if self._client_running:  # our pause has not completed yet: start as soon as it has
            self._start_when_stopped = True
        else:
            self._start_client()

    def _start_client(self) -> None:
        self._client_running = True
        self._stopped.clear()
        self.stats.state = "connecting"
        self.client.start()

    # --- network watch --------------------------------------------------------------------------------
    def _judge_network(self, kind: str) -> None:
        """A failure where nothing came back makes the network the suspect; the watch then probes
        it. Anything else (refused, closed, a CONNACK) proves the broker's host answered."""
        if kind == "network":
            if not self._suspect.is_set():
                self._next_probe = 0.0  # the first probe at once: is it the network or not?
            self._suspect.set()
        else:
            self._suspect.clear()
            self._seen_down = False
            self.stats.network = "up"

    def _network_hint(self, what: str) -> None:
        self.stats.last_network_event = what
        self._hint.set()

    def _stalled(self, since: float | None = None) -> bool:
        """Connected, but a publish has waited more than a probe interval and nothing at all came
        back since it was sent (nor since ``since``): the link may be dead before the ping says so."""
        if not self._outstanding:
            return False
        oldest = min(self._outstanding.values())
        quiet_since = max(oldest, since or 0.0)
        return time.monotonic() - oldest > self.conf.probe_interval_s and self._last_inbound < quiet_since

    async def _watch(self) -> None:
        """Probe the broker (every ``probe_interval_s`` start to start, at once on a kernel network
        event) while the network is suspect: after a ``network`` failure, or while connected with a
        stalled publish. Only "seen down, then seen up" counts as the network returning; a first
        probe that succeeds means the network was fine (a broker or NAT problem), and the fleet's
        full-jitter schedule stands."""
        c = self.conf
        timeout_s = max(1.0, min(3.0, 0.6 * c.probe_interval_s))
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._hint.wait()
            hinted = self._hint.is_set()
            self._hint.clear()
            if not self._wanted or (self.stats.connected and not self._stalled()):
                continue
            if not self.stats.connected and not self._suspect.is_set():
                continue
            now = time.monotonic()
            if now < self._next_probe and not hinted:
                continue
            if hinted:
                log.info("network changed; probing the broker now", extra={"event": self.stats.last_network_event})
            self._next_probe = now + c.probe_interval_s
            reach = await probe(c.endpoint, c.port, timeout_s)
            if reach == "unreachable":
                if not self._seen_down:
                    self._down_seen_at = time.monotonic()
                    log.info("network down: broker unreachable; probing until it answers",
                             extra={"every_s": c.probe_interval_s, "connected": self.stats.connected})
                self._seen_down = True
                self.stats.network = "down"
                continue
            self.stats.network = "up"
            returned = reach == "reachable" and self._seen_down
            self._seen_down = False
            if self.stats.connected:
                if returned and self._stalled(since=self._down_seen_at):
                    self._replace_stalled()
            elif self._suspect.is_set():
                self._suspect.clear()
                if returned:
                    self._network_returned()

    def _replace_stalled(self) -> None:
        """The network went away and came back while this connection was still thought alive, and the
        broker has not answered anything since: TCP is in retransmission backoff (seconds to
        minutes after a long silence). A new connection is faster; it is the only client with this
        id, so the broker simply replaces the stale session."""
        st = self.stats
        delay = self.policy.network_returned()
        st.network_returns += 1
        st.disconnects += 1
        st.last_error, st.failure_kind = "link stalled while the network was away", "network"
        st.down_since_wall = time.time()
        st.attempts = 0
        log.warning("network returned but the connection is stalled; reconnecting",
                    extra={"in_s": round(delay, 2)})
        self._schedule(delay)

    def _network_returned(self) -> None:
        """Seen down, now seen up: the wait that full jitter chose for a down broker does not apply.
        A pending attempt that started long ago is stuck on packets the dead link swallowed; it is
        cut short too."""
        delay = self.policy.network_returned()
        self.stats.network_returns += 1
        stuck = self._client_running and self._attempt_mono is not None and time.monotonic() - self._attempt_mono > 1
        waiting = self._timer is not None and self.stats.next_attempt_wall is not None
        log.info("network returned; reconnecting soon", extra={"in_s": round(delay, 2)})
        if stuck or (waiting and self.stats.next_attempt_wall is not None
                     and self.stats.next_attempt_wall - time.time() > delay):
            self._schedule(delay)

    # --- API ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting in the background; failed attempts are retried with full-jitter backoff,
        so an agent that boots with no network simply starts offline. Also restarts a stopped
        connection (certificate rotation pauses it); a later ``stop`` then waits for the new stop."""
        self._wanted = True
        self.stats.down_since_wall = self.stats.down_since_wall or time.time()
        if self._watch_task is None:
            self._watch_task = self._loop.create_task(self._watch(), name="network-watch")
        if self._hints is None and self.conf.network_events in WATCHES:
            watch = WATCHES[self.conf.network_events]()
            if watch.start(self._loop, self._network_hint):
                self._hints = watch
        if self._client_running:
            self._start_when_stopped = True
        else:
            self._start_client()

    async def stop(self) -> None:
        self._wanted = False
        self._start_when_stopped = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        if self._hints is not None:
            self._hints.stop()
            self._hints = None
        self.client.stop()
        try:
            await asyncio.wait_for(self._stopped.wait(), timeout=3)
        except TimeoutError:
            log.warning("mqtt client did not report stopped within 3 s")
        self.connected.clear()
        self.stats.connected = False
        self.stats.state = "stopped"
        self.stats.next_attempt_wall = None

    def link_status(self) -> LinkHealth:
        """What the link is doing, for ``status``: down since when, why, attempts, next attempt."""
        st, now = self.stats, time.time()
        nxt = st.next_attempt_wall
        return LinkHealth(
            state=st.state,
            up_since_ts=st.last_connected_wall if st.connected else None,
            down_since_ts=st.down_since_wall,
            down_for_s=None if st.down_since_wall is None else round(now - st.down_since_wall, 1),
            connect_attempts=st.attempts,
            next_attempt_ts=nxt,
            next_attempt_in_s=None if nxt is None else round(max(0.0, nxt - now), 1),
            failure_kind=st.failure_kind,
            network=st.network,
            network_returns=st.network_returns,
            last_network_event=st.last_network_event,
        )

    def on_connect(self, cb: Callable[[bool], None]) -> None:
        """``cb(session_present)`` runs on the loop after every successful connect."""
        self._on_connect.append(cb)

    def add_handler(self, topic_filter: str, handler: MessageHandler) -> None:
        self._handlers.append((topic_filter, handler))

    def keep_subscribed(self, topic_filter: str, handler: MessageHandler) -> None:
        """Route messages on ``topic_filter`` to ``handler`` and hold the subscription: it is made
        now if connected, and again after every connect whose session was not present (the agent
        uses clean sessions, and IoT Core drops sessions after an hour offline anyway)."""
        self.add_handler(topic_filter, handler)
        self._kept.append(topic_filter)
        if self.connected.is_set():
            self._resubscribe([topic_filter])

    def _resubscribe(self, filters: list[str]) -> None:
        task = self._loop.create_task(self._subscribe_logged(filters), name="resubscribe")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _subscribe_logged(self, filters: list[str]) -> None:
        try:
            refused = await self.subscribe(filters)
        except AwsCrtError as exc:  # e.g. disconnected meanwhile: the next connect resubscribes
            log.warning("resubscribe failed", extra={"topic_filters": ",".join(filters), "error": exc.name})
            return
        self.stats.subscriptions_refused = len(refused)

    async def subscribe(self, topic_filters: list[str], qos: int = 1) -> list[str]:
        """Subscribe (at most 8 filters per SUBSCRIBE, as IoT Core allows); returns filters refused."""
        refused: list[str] = []
        for i in range(0, len(topic_filters), 8):
            chunk = topic_filters[i : i + 8]
            packet = mqtt5.SubscribePacket(
                subscriptions=[mqtt5.Subscription(f, mqtt5.QoS(qos)) for f in chunk]
            )
            suback = await awaitable(self.client.subscribe(packet))
            for f, code in zip(chunk, suback.reason_codes, strict=False):
                if int(code) >= 0x80:
                    refused.append(f)
                    log.error("subscription refused", extra={"topic_filter": f, "reason": code.name})
        return refused

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        content_type: str | None = None,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> None:
        """Publish QoS1 and return once PUBACKed with success; raise PublishError otherwise."""
        packet = mqtt5.PublishPacket(
            topic=topic,
            payload=payload,
            qos=mqtt5.QoS.AT_LEAST_ONCE,
            content_type=content_type,
            user_properties=[mqtt5.UserProperty(k, v) for k, v in (user_properties or [])],
        )
        token = object()
        self._outstanding[token] = time.monotonic()
        try:
            result = await awaitable(self.client.publish(packet))
        except AwsCrtError as exc:
            raise PublishError(
                f"{exc.name}: {exc.message}", too_large=is_too_large(exc.name), offline=is_offline(exc.name)
            ) from None
        finally:
            del self._outstanding[token]
        if result.puback is not None:
            self._last_inbound = time.monotonic()
        self.stats.publishes += 1
        now = time.monotonic()
        self.stats.publish_times.append(now)
        if len(self.stats.publish_times) > 200:
            del self.stats.publish_times[:100]
        puback = result.puback
        if puback is None:
            raise PublishError("no PUBACK for a QoS1 publish")
        code = puback.reason_code
        if code is None:
            # awscrt maps reason codes MQTT5 does not define for PUBACK to None; the one brokers
            # send in practice is 0x95 "packet too large" (mosquitto's message_size_limit).
            raise PublishError("PUBACK with a reason code outside MQTT5's PUBACK set (packet too large?)",
                               too_large=True)
        if int(code) >= 0x80:
            msg = f"PUBACK {code.name} ({int(code):#x}) {puback.reason_string or ''}".strip()
            raise PublishError(msg, retryable=code not in _NOT_RETRYABLE, too_large=code in _TOO_LARGE)

    def publish_rate(self, window_s: float = 10.0) -> float:
        now = time.monotonic()
        recent = [t for t in self.stats.publish_times if now - t <= window_s]
        return len(recent) / window_s
