"""The emulator's own MQTT5 clients (service runners, telemetry recorder, demo viewer) connect as
``admin`` the same way, through the project's one client factory (``iotmqtt.build_client``): mutual
TLS from ``emulator.json``'s paths, no IoT Core client-side limits (they play the server side), no
SDK metrics in the username, and QoS 1 publishes kept while offline (a reply sent during a broker
restart goes out after it)."""

from __future__ import annotations

from awscrt import mqtt5

from emulator.state import EmulatorInfo
from iotmqtt import Lifecycle, Target, build_client


def admin_client(
    info: EmulatorInfo,
    client_id: str,
    lifecycle: Lifecycle,
    *,
    min_reconnect_delay_ms: int = 200,
    max_reconnect_delay_ms: int = 5000,
    session_expiry_s: int | None = None,
) -> mqtt5.Client:
    """An unstarted awscrt MQTT5 client. ``session_expiry_s`` asks for a persistent session."""
    return build_client(
        Target(info.endpoint, info.port, info.ca_file, info.admin_cert_file, info.admin_key_file, client_id),
        lifecycle,
        keep_alive_s=60,
        connect_timeout_ms=10_000,
        ack_timeout_s=60,
        min_reconnect_delay_ms=min_reconnect_delay_ms,
        max_reconnect_delay_ms=max_reconnect_delay_ms,
        iot_core_limits=False,
        session_expiry_s=session_expiry_s,
        keep_qos1_while_offline=True,
        sdk_metrics=False,
    )
