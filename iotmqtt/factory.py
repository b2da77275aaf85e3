"""Build the awscrt MQTT5 client every part of the project uses: mutual TLS from files, a clean
session (IoT Core drops sessions after an hour offline anyway, and the agent's spool is its
durable queue), and publishes failed rather than queued while offline, so nothing is retried
behind the caller's back. Callers choose timing (keep-alive, ping timeout, reconnect bounds) and
the lifecycle callbacks; awscrt calls those on its own threads, where they must not block."""

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
    cert_file: Path
    key_file: Path
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
) -> mqtt5.Client:
    """``connect_timeout_ms`` bounds both the TCP connect and the wait for CONNACK.
    ``ping_timeout_ms`` (default: awscrt's, clamped by awscrt to half the keep-alive) is how long a
    PINGREQ may go unanswered before the link is declared dead."""
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
    return mqtt5_client_builder.mtls_from_path(
        cert_filepath=str(target.cert_file),
        pri_key_filepath=str(target.key_file),
        endpoint=target.endpoint,
        port=target.port,
        client_id=target.client_id,
        socket_options=socket,
        keep_alive_interval_sec=keep_alive_s,
        min_reconnect_delay_ms=min_reconnect_delay_ms,
        max_reconnect_delay_ms=max_reconnect_delay_ms,
        retry_jitter_mode=jitter,
        session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
        offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
        extended_validation_and_flow_control_options=flow,
        connack_timeout_ms=connect_timeout_ms,
        ack_timeout_sec=max(1, ack_timeout_s),
        on_publish_received=lifecycle.on_publish,
        on_lifecycle_attempting_connect=lifecycle.on_attempt,
        on_lifecycle_connection_success=lifecycle.on_success,
        on_lifecycle_connection_failure=lifecycle.on_failure,
        on_lifecycle_disconnection=lifecycle.on_disconnect,
        on_lifecycle_stopped=lifecycle.on_stopped,
        **kwargs,
    )


def retrieve_exception(fut: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> None:
    """Done-callback that marks an operation's outcome as seen. An awscrt operation whose waiter
    gave up (a timeout, a cancelled task) still completes later, usually failed by the offline-queue
    policy when the link drops; unretrieved, asyncio would log that as an ERROR 'Future exception
    was never retrieved' for an outcome the caller already handled."""
    if not fut.cancelled():
        fut.exception()
