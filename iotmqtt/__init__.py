"""The one way this project builds an awscrt MQTT5 client for IoT Core, and the one vocabulary for
what its failures mean. Shared by the agent's connection (``agent/connection.py``), the
provisioning/rotation session (``provisioning/session.py``), ``methane-agent doctor``
(``agent/doctor/network.py``), the emulator's admin clients (``emulator/admin_client.py``) and the
tests' blocking client (``tests/mqtt_client.py``); it imports nothing of theirs, so
``provisioning/`` can use it without importing ``agent/``."""

from iotmqtt.errors import (
    FailureKind,
    describe_failure,
    failure_kind,
    is_offline,
    is_refusal,
    is_too_large,
)
from iotmqtt.factory import Lifecycle, Target, awaitable, build_client, retrieve_exception

__all__ = [
    "FailureKind",
    "Lifecycle",
    "Target",
    "awaitable",
    "build_client",
    "describe_failure",
    "failure_kind",
    "is_offline",
    "is_refusal",
    "is_too_large",
    "retrieve_exception",
]
