"""A short-lived MQTT5 session for provisioning and rotation, and a blocking wrapper around the
SDK's ``IotIdentityClientV2``.

Provisioning runs before the agent's own connection exists (and rotation must prove a NEW
certificate on its own connection), so this module builds its own awscrt client with the project's
one factory (``iotmqtt.build_client``). Connecting is bounded: after ``max_attempts`` failed attempts (with the
client's full-jitter backoff between them) the session stops and raises :class:`ConnectFailed`,
saying whether the broker refused the certificate (revoked, inactive, not authorised: retrying
will not help) or could not be reached (network: retry later). A revoked certificate therefore
gives one clear error, never a reconnect storm.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from awscrt import mqtt5, mqtt_request_response
from awscrt.exceptions import AwsCrtError
from awsiot import V2ServiceException, iotidentity

from iotmqtt import Lifecycle, Target, build_client, describe_failure, is_refusal

log = logging.getLogger(__name__)

# The request-response client reports a SUBACK/PUBACK refusal with these; while disconnected it
# waits instead, so they mean "not allowed", not "no network".
_REFUSED_REQUEST_ERRORS = {
    "AWS_ERROR_MQTT_REQUEST_RESPONSE_SUBSCRIBE_FAILURE",
    "AWS_ERROR_MQTT_REQUEST_RESPONSE_PUBLISH_FAILURE",
}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int = 8883
    ca_file: Path | None = None


class SessionError(Exception):
    """Base of everything this module raises. ``transient`` says whether retrying later can help."""

    transient = True


class ConnectFailed(SessionError):
    def __init__(self, endpoint: Endpoint, cert_file: Path, attempts: int, errors: list[str]) -> None:
        self.endpoint = endpoint
        self.cert_file = cert_file
        self.attempts = attempts
        self.errors = errors
        self.refused = any(is_refusal(e) for e in errors)
        self.transient = not self.refused
        last = errors[-1] if errors else "no answer"
        if self.refused:
            what = (
                f"the broker refused certificate {cert_file} (revoked, inactive or not authorised?)"
            )
        else:
            what = f"could not reach {endpoint.host}:{endpoint.port} (network down?)"
        super().__init__(f"{what}; gave up after {attempts} attempt(s), last error: {last}")


class ServiceRejected(SessionError):
    """IoT Core answered on the ``.../rejected`` topic."""

    transient = False

    def __init__(self, operation: str, status_code: int | None, error_code: str | None, message: str | None) -> None:
        self.operation = operation
        self.status_code = status_code
        self.error_code = error_code or ""
        self.error_message = message or ""
        super().__init__(f"{operation} rejected: {status_code} {self.error_code}: {self.error_message}".rstrip(": "))


class NotAuthorized(ServiceRejected):
    """The broker refused the subscription or publish the request needs: the policy attached to the
    certificate does not allow these topics (e.g. a template name the claim policy does not list)."""


class ServiceUnavailable(SessionError):
    """No answer in time, or the connection dropped mid-request."""


class PublishRefused(SessionError):
    transient = False


@dataclass(frozen=True)
class CertificateResult:
    certificate_id: str
    certificate_pem: str = field(repr=False)
    ownership_token: str = field(repr=False)
    private_key_pem: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Registration:
    thing_name: str
    device_configuration: dict[str, str]


class IdentityClient:
    """Blocking CreateCertificateFromCsr / CreateKeysAndCertificate / RegisterThing over any
    connected awscrt MQTT5 client (a provisioning session, or the agent's own connection when a
    rotate-certificate job runs). The API has no correlation token, so calls must not overlap on
    one connection; a lock enforces that."""

    def __init__(self, client: mqtt5.Client, timeout_s: int = 30) -> None:
        self.timeout_s = timeout_s
        options = mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=2, max_streaming_subscriptions=1, operation_timeout_in_seconds=timeout_s
        )
        self._client = iotidentity.IotIdentityClientV2(client, options)
        self._lock = threading.Lock()

    def _wait(self, operation: str, future: concurrent.futures.Future[object]) -> object:
        try:
            return future.result(timeout=self.timeout_s + 5)
        except concurrent.futures.TimeoutError:
            raise ServiceUnavailable(f"{operation}: no answer within {self.timeout_s}s") from None
        except V2ServiceException as exc:
            err = exc.modeled_error
            if isinstance(err, iotidentity.V2ErrorResponse):
                raise ServiceRejected(operation, err.status_code, err.error_code, err.error_message) from None
            inner = exc.inner_error
            why = inner.name if isinstance(inner, AwsCrtError) else str(inner or exc.message)
            if why in _REFUSED_REQUEST_ERRORS:
                raise NotAuthorized(operation, 403, "NotAuthorized",
                                    f"the broker refused the request topics ({why}); the certificate's "
                                    "policy does not allow them") from None
            raise ServiceUnavailable(f"{operation} failed: {why}") from None

    def create_certificate_from_csr(self, csr_pem: str) -> CertificateResult:
        with self._lock:
            req = iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request=csr_pem)
            resp = self._wait("CreateCertificateFromCsr", self._client.create_certificate_from_csr(req))
        assert isinstance(resp, iotidentity.CreateCertificateFromCsrResponse)
        return _cert_result("CreateCertificateFromCsr", resp.certificate_id, resp.certificate_pem,
                            resp.certificate_ownership_token, None)

    def create_keys_and_certificate(self) -> CertificateResult:
        with self._lock:
            req = iotidentity.CreateKeysAndCertificateRequest()
            resp = self._wait("CreateKeysAndCertificate", self._client.create_keys_and_certificate(req))
        assert isinstance(resp, iotidentity.CreateKeysAndCertificateResponse)
        if not resp.private_key:
            raise ServiceRejected("CreateKeysAndCertificate", None, "MalformedResponse", "no privateKey in answer")
        return _cert_result("CreateKeysAndCertificate", resp.certificate_id, resp.certificate_pem,
                            resp.certificate_ownership_token, resp.private_key)

    def register_thing(self, template_name: str, parameters: dict[str, str], ownership_token: str) -> Registration:
        with self._lock:
            req = iotidentity.RegisterThingRequest(
                template_name=template_name, parameters=dict(parameters), certificate_ownership_token=ownership_token
            )
            resp = self._wait("RegisterThing", self._client.register_thing(req))
        assert isinstance(resp, iotidentity.RegisterThingResponse)
        if not resp.thing_name:
            raise ServiceRejected("RegisterThing", None, "MalformedResponse", "no thingName in answer")
        conf = resp.device_configuration or {}
        return Registration(resp.thing_name, {str(k): str(v) for k, v in conf.items()})


def _cert_result(
    op: str, cert_id: str | None, pem: str | None, token: str | None, key: str | None
) -> CertificateResult:
    if not cert_id or not pem or not token:
        raise ServiceRejected(op, None, "MalformedResponse", "certificateId, certificatePem or token missing")
    return CertificateResult(cert_id, pem, token, key)


class MqttSession:
    """``with MqttSession(endpoint, cert, key, client_id) as s:`` connects (bounded attempts) and
    stops the client on exit."""

    def __init__(
        self,
        endpoint: Endpoint,
        cert_file: Path,
        key_file: Path,
        client_id: str,
        *,
        max_attempts: int = 4,
        min_backoff_ms: int = 500,
        max_backoff_ms: int = 8000,
        connect_timeout_s: float = 60.0,
        request_timeout_s: int = 30,
    ) -> None:
        self.endpoint = endpoint
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.client_id = client_id
        self.max_attempts = max_attempts
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.attempts = 0
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._connected = False
        self._stopped = threading.Event()
        self._identity: IdentityClient | None = None
        self.client = build_client(
            Target(endpoint.host, endpoint.port, endpoint.ca_file, self.cert_file, self.key_file, client_id),
            Lifecycle(on_success=self._on_success, on_failure=self._on_failure,
                      on_disconnect=self._on_disconnect, on_stopped=self._on_stopped),
            keep_alive_s=60,
            connect_timeout_ms=10_000,
            ack_timeout_s=request_timeout_s,
            min_reconnect_delay_ms=min_backoff_ms,
            max_reconnect_delay_ms=max_backoff_ms,
        )

    # awscrt threads: record and notify only, never block.
    def _on_success(self, data: mqtt5.LifecycleConnectSuccessData) -> None:
        with self._cond:
            self.attempts += 1
            self._connected = True
            self._cond.notify_all()

    def _on_failure(self, data: mqtt5.LifecycleConnectFailureData) -> None:
        with self._cond:
            self.attempts += 1
            self.errors.append(describe_failure(data.exception, data.connack_packet))
            self._cond.notify_all()

    def _on_disconnect(self, data: mqtt5.LifecycleDisconnectData) -> None:
        with self._cond:
            self._connected = False
            self.errors.append("disconnected: " + describe_failure(data.exception, data.disconnect_packet))
            self._cond.notify_all()

    def _on_stopped(self, data: mqtt5.LifecycleStoppedData) -> None:
        self._stopped.set()

    @property
    def connected(self) -> bool:
        return self._connected

    def open(self) -> MqttSession:
        self.client.start()
        deadline = time.monotonic() + self.connect_timeout_s
        with self._cond:
            while not self._connected:
                if self.attempts >= self.max_attempts or time.monotonic() >= deadline:
                    break
                self._cond.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            ok = self._connected
            attempts, errors = self.attempts, list(self.errors)
        if not ok:
            self.close()
            exc = ConnectFailed(self.endpoint, self.cert_file, attempts, errors or ["timed out"])
            log.warning("mqtt connect gave up", extra={"cert_file": str(self.cert_file), "attempts": attempts,
                                                        "refused": exc.refused, "error": exc.errors[-1]})
            raise exc
        log.info("mqtt session connected", extra={"client_id": self.client_id, "attempts": attempts})
        return self

    def close(self) -> None:
        self.client.stop()
        if not self._stopped.wait(timeout=5):
            log.warning("mqtt client did not report stopped within 5 s")

    def identity(self) -> IdentityClient:
        if self._identity is None:
            self._identity = IdentityClient(self.client, self.request_timeout_s)
        return self._identity

    def publish(self, topic: str, payload: bytes = b"") -> None:
        """QoS1 publish that returns only once PUBACKed with success: proves the broker accepts
        this certificate for this topic, not just the TLS handshake."""
        packet = mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE)
        try:
            result = self.client.publish(packet).result(timeout=self.request_timeout_s + 5)
        except concurrent.futures.TimeoutError:
            raise ServiceUnavailable(f"publish to {topic}: no PUBACK within {self.request_timeout_s}s") from None
        except AwsCrtError as exc:
            raise ServiceUnavailable(f"publish to {topic} failed: {exc.name}") from None
        puback = result.puback
        if puback is None:
            raise ServiceUnavailable(f"publish to {topic}: no PUBACK")
        if int(puback.reason_code) >= 0x80:
            raise PublishRefused(f"publish to {topic} refused: PUBACK {puback.reason_code.name}")

    def __enter__(self) -> MqttSession:
        return self.open()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
