"""Build the awscrt MQTT5 client every part of the project uses (the agent, the emulator's own
admin clients, the test helper): mutual TLS from files, a clean session (IoT Core drops sessions
after an hour offline anyway, and the agent's spool is its durable queue), and publishes failed
rather than queued while offline, so nothing is retried behind the caller's back. Callers choose
timing (keep-alive, ping timeout, reconnect bounds) and the lifecycle callbacks; awscrt calls
those on its own threads, where they must not block.

The emulator and the tests need a few things the agent does not, each a keyword here rather than
a second way to build a client: a persistent session (``session_expiry_s``, a subscriber that
must not miss what arrives while it reconnects), QoS 1 publishes kept while offline
(``keep_qos1_while_offline``, awscrt's default), no SDK metrics in the username, and a client
with no certificate at all (``Target`` without cert and key, only to show a broker refuses it)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from awscrt import io, mqtt5
from awsiot import mqtt5_client_builder


@dataclass(frozen=True)
class Target:
    """Where to connect and as whom."""

    endpoint: str
    port: int
    ca_file: Path | None
    cert_file: Path | None  # None (with key_file None): TLS without a client certificate
    key_file: Path | None
    client_id: str


@dataclass(frozen=True)
class Lifecycle:
    on_publish: Callable[[mqtt5.PublishReceivedData], None] | None = None
    on_attempt: Callable[[mqtt5.LifecycleAttemptingConnectData], None] | None = None
    on_success: Callable[[mqtt5.LifecycleConnectSuccessData], None] | None = None
    on_failure: Callable[[mqtt5.LifecycleConnectFailureData], None] | None = None
    on_disconnect: Callable[[mqtt5.LifecycleDisconnectData], None] | None = None
    on_stopped: Callable[[mqtt5.LifecycleStoppedData], None] | None = None


def build_client(
    target: Target,
    lifecycle: Lifecycle,
    *,
    keep_alive_s: int,
    connect_timeout_ms: int,
    ack_timeout_s: int,
    min_reconnect_delay_ms: int,
    max_reconnect_delay_ms: int,
    jitter: mqtt5.ExponentialBackoffJitterMode = mqtt5.ExponentialBackoffJitterMode.FULL,
    ping_timeout_ms: int | None = None,
    iot_core_limits: bool = True,
    session_expiry_s: int | None = None,
    keep_qos1_while_offline: bool = False,
    sdk_metrics: bool = True,
) -> mqtt5.Client:
    """``connect_timeout_ms`` bounds both the TCP connect and the wait for CONNACK.
    ``ping_timeout_ms`` (default: awscrt's, clamped by awscrt to half the keep-alive) is how long a
    PINGREQ may go unanswered before the link is declared dead. ``session_expiry_s`` asks for a
    persistent session (rejoined on every reconnect) the broker keeps that long."""
    flow = (
        mqtt5.ExtendedValidationAndFlowControlOptions.AWS_IOT_CORE_DEFAULTS
        if iot_core_limits
        else mqtt5.ExtendedValidationAndFlowControlOptions.NONE
    )
    socket = io.SocketOptions()
    socket.connect_timeout_ms = connect_timeout_ms
    kwargs: dict[str, Any] = {}
    if target.ca_file is not None:
        kwargs["ca_filepath"] = str(target.ca_file)
    if ping_timeout_ms is not None:
        kwargs["ping_timeout_ms"] = ping_timeout_ms
    session = mqtt5.ClientSessionBehaviorType.CLEAN
    if session_expiry_s is not None:
        session = mqtt5.ClientSessionBehaviorType.REJOIN_ALWAYS
        kwargs["session_expiry_interval_sec"] = session_expiry_s
    offline = (
        mqtt5.ClientOperationQueueBehaviorType.FAIL_NON_QOS1_PUBLISH_ON_DISCONNECT
        if keep_qos1_while_offline
        else mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT
    )
    if target.cert_file is None or target.key_file is None:
        build: Callable[..., mqtt5.Client] = mqtt5_client_builder.new_default_builder
    else:
        build = mqtt5_client_builder.mtls_from_path
        kwargs["cert_filepath"] = str(target.cert_file)
        kwargs["pri_key_filepath"] = str(target.key_file)
    return build(
        endpoint=target.endpoint,
        port=target.port,
        client_id=target.client_id,
        socket_options=socket,
        keep_alive_interval_sec=keep_alive_s,
        min_reconnect_delay_ms=min_reconnect_delay_ms,
        max_reconnect_delay_ms=max_reconnect_delay_ms,
        retry_jitter_mode=jitter,
        session_behavior=session,
        offline_queue_behavior=offline,
        extended_validation_and_flow_control_options=flow,
        connack_timeout_ms=connect_timeout_ms,
        ack_timeout_sec=max(1, ack_timeout_s),
        on_publish_received=lifecycle.on_publish,
        on_lifecycle_attempting_connect=lifecycle.on_attempt,
        on_lifecycle_connection_success=lifecycle.on_success,
        on_lifecycle_connection_failure=lifecycle.on_failure,
        on_lifecycle_disconnection=lifecycle.on_disconnect,
        on_lifecycle_stopped=lifecycle.on_stopped,
        enable_metrics_collection=sdk_metrics,
        **kwargs,
    )


def retrieve_exception(fut: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> None:
    """Done-callback that marks an operation's outcome as seen. An awscrt operation whose waiter
    gave up (a timeout, a cancelled task) still completes later, usually failed by the offline-queue
    policy when the link drops; unretrieved, asyncio would log that as an ERROR 'Future exception
    was never retrieved' for an outcome the caller already handled."""
    if not fut.cancelled():
        fut.exception()


def awaitable(fut: concurrent.futures.Future[Any]) -> asyncio.Future[Any]:
    """Await an awscrt operation without ever cancelling its future: a cancelled wait (shutdown,
    a timeout) must leave awscrt to complete the operation itself, or its callback thread hits
    InvalidStateError on a future we cancelled under it. The outcome is always retrieved, so an
    operation whose waiter gave up does not log 'Future exception was never retrieved' later.
    Bound the wait with ``asyncio.timeout``, not ``asyncio.wait_for``: on Python 3.11 wait_for
    returns the result when a cancellation arrives in the same loop turn as the outcome, and the
    cancelled task runs on (see agent/remote/service_client.call)."""
    inner = asyncio.wrap_future(fut)
    inner.add_done_callback(retrieve_exception)
    return asyncio.shield(inner)
