"""What an awscrt MQTT5 failure means, from its error name and the reason code of the packet that
came with it (CONNACK, DISCONNECT). Strings, not exceptions, because that is what status, logs and
the lifecycle callbacks carry; ``describe_failure`` makes them and the predicates read them."""

from __future__ import annotations

from typing import Literal

from awscrt import mqtt5
from awscrt.exceptions import AwsCrtError

FailureKind = Literal["network", "broker", "refused", "stopped"]

# The broker refused this certificate or client: retrying soon will not help, an operator must act.
_REFUSED_ERRORS = (
    "TLS_ERROR",
    "TLS_ALERT",
    "TLS_NEGOTIATION_FAILURE",
    "MQTT_UNEXPECTED_HANGUP",
    "MQTT5_CONNACK_CONNECTION_REFUSED",
)
_REFUSED_CONNACK = {
    mqtt5.ConnectReasonCode.NOT_AUTHORIZED,
    mqtt5.ConnectReasonCode.BAD_USERNAME_OR_PASSWORD,
    mqtt5.ConnectReasonCode.BANNED,
    mqtt5.ConnectReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
}
# Nothing came back at all: packets vanish (a dead cellular bearer, a black-holed route), there is
# no route, or the name does not resolve. The network, not the broker, is the suspect.
_NETWORK_ERRORS = (
    "AWS_ERROR_MQTT5_PING_RESPONSE_TIMEOUT",
    "AWS_IO_SOCKET_TIMEOUT",
    "AWS_IO_SOCKET_NO_ROUTE_TO_HOST",
    "AWS_IO_SOCKET_NETWORK_DOWN",
    "AWS_IO_SOCKET_CONNECT_ABORTED",
    "AWS_IO_TLS_NEGOTIATION_TIMEOUT",
    "AWS_IO_DNS_",
)
# The client was stopped on purpose (by us): not a failure of anything.
_STOPPED_ERRORS = ("AWS_ERROR_MQTT5_USER_REQUESTED_STOP", "AWS_ERROR_MQTT5_CLIENT_TERMINATED")
# An operation failed because the connection was (or went) away, not because the broker said no.
_OFFLINE_ERRORS = ("AWS_ERROR_MQTT5_OPERATION_FAILED_DUE_TO_OFFLINE_QUEUE_POLICY", *_STOPPED_ERRORS)


def describe_failure(exc: BaseException | None, packet: object | None) -> str:
    """``<AWS error name> [reason=<packet reason code>]``: the connection's own reason, as the
    lifecycle callbacks report it (e.g. ``AWS_ERROR_MQTT5_PING_RESPONSE_TIMEOUT``)."""
    parts: list[str] = []
    if isinstance(exc, AwsCrtError):
        parts.append(exc.name)
    elif exc is not None:
        parts.append(type(exc).__name__)
    code = getattr(packet, "reason_code", None)
    if code is not None and int(code) != 0:
        parts.append(f"reason={getattr(code, 'name', code)}")
    return " ".join(parts) or "unknown"


def is_refusal(error: str) -> bool:
    """True when a connect failure means the broker refused this certificate or client, as opposed to
    a network problem: retrying soon will not help, an operator must act."""
    return any(tag in error for tag in _REFUSED_ERRORS) or any(f"reason={c.name}" in error for c in _REFUSED_CONNACK)


def failure_kind(error: str) -> FailureKind:
    """Who is to blame for a failed connect or a lost connection: ``network`` (nothing came back),
    ``refused`` (the broker said no to this identity), ``stopped`` (we stopped the client) or
    ``broker`` (the broker's host answered but would not serve us: refused port, closed socket,
    no CONNACK, a DISCONNECT)."""
    if any(tag in error for tag in _STOPPED_ERRORS):
        return "stopped"
    if is_refusal(error):
        return "refused"
    if any(tag in error for tag in _NETWORK_ERRORS):
        return "network"
    return "broker"


def is_offline(error_name: str) -> bool:
    """An operation failed only because the client was not connected (or stopped) when it ran."""
    return any(tag in error_name for tag in _OFFLINE_ERRORS)


def is_too_large(error_name: str) -> bool:
    """The client refused to send a packet over the negotiated maximum size."""
    return "PACKET_SIZE" in error_name or "PAYLOAD" in error_name
