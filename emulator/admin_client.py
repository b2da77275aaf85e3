"""The emulator's own MQTT5 clients (service runners, telemetry recorder, demo viewer) connect as
``admin`` the same way: mutual TLS from ``emulator.json``'s paths, no IoT Core client-side limits
(they play the server side), no SDK metrics in the username."""

from __future__ import annotations

from typing import Any

from awscrt import mqtt5
from awsiot import mqtt5_client_builder

from emulator.state import EmulatorInfo


def admin_client(info: EmulatorInfo, client_id: str, **kwargs: Any) -> mqtt5.Client:
    """An unstarted awscrt MQTT5 client; ``kwargs`` add callbacks and session/reconnect settings."""
    options: dict[str, Any] = {
        "keep_alive_interval_sec": 60,
        "extended_validation_and_flow_control_options": mqtt5.ExtendedValidationAndFlowControlOptions.NONE,
        "enable_metrics_collection": False,
        **kwargs,
    }
    return mqtt5_client_builder.mtls_from_path(
        cert_filepath=str(info.admin_cert_file),
        pri_key_filepath=str(info.admin_key_file),
        ca_filepath=str(info.ca_file),
        endpoint=info.endpoint,
        port=info.port,
        client_id=client_id,
        **options,
    )
