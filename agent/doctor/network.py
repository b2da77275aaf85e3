"""Checks that talk to the endpoint: DNS, a TLS handshake with the device certificate, and an MQTT
publish/subscribe round trip with the real awscrt client, each bounded by a timeout."""

from __future__ import annotations

import concurrent.futures
import socket
import ssl
import threading
import uuid
from pathlib import Path

from awscrt import mqtt5
from awscrt.exceptions import AwsCrtError

from agent.doctor.report import Result
from iotmqtt import Lifecycle, Target, build_client, describe_failure

ALPN_443 = "x-amzn-mqtt-ca"  # IoT Core speaks MQTT on 443 only with this ALPN


def check_dns(endpoint: str, port: int, timeout_s: float) -> Result:
    # getaddrinfo has no timeout of its own: run it in a worker and stop waiting at the deadline.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(socket.getaddrinfo, endpoint, port, 0, socket.SOCK_STREAM)
    try:
        infos = fut.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        return Result(
            "FAIL", "dns", f"{endpoint}: no answer within {timeout_s:.0f}s", "check /etc/resolv.conf and the uplink"
        )
    except socket.gaierror as exc:
        return Result(
            "FAIL",
            "dns",
            f"{endpoint} does not resolve: {exc.strerror}",
            "check connection.endpoint (aws iot describe-endpoint --endpoint-type iot:Data-ATS) and DNS",
        )
    finally:
        pool.shutdown(wait=False)
    addrs = sorted({str(i[4][0]) for i in infos})
    return Result("PASS", "dns", f"{endpoint} -> {', '.join(addrs[:4])}")


def check_tls(
    endpoint: str, port: int, ca_file: Path | None, cert_file: Path, key_file: Path, timeout_s: float
) -> Result:
    name = "tls"
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        return Result(
            "FAIL", name, f"cannot load CA/certificate/key: {exc}", "check connection.ca_file, cert_file, key_file"
        )
    if port == 443:
        ctx.set_alpn_protocols([ALPN_443])
    try:
        raw = socket.create_connection((endpoint, port), timeout=timeout_s)
    except TimeoutError:
        return Result(
            "FAIL",
            name,
            f"{endpoint}:{port}: TCP connect timed out",
            "check the firewall allows outbound TCP to the port",
        )
    except OSError as exc:
        return Result(
            "FAIL", name, f"{endpoint}:{port}: {exc.strerror or exc}", "check connection.endpoint/port and the firewall"
        )
    try:
        with ctx.wrap_socket(raw, server_hostname=endpoint) as tls:
            version = tls.version()
            # TLS 1.3: the server judges our certificate after the handshake completes on our side;
            # a rejection arrives as an alert on the first read.
            tls.settimeout(min(1.0, timeout_s))
            try:
                tls.recv(1)
            except TimeoutError:
                pass
            except ssl.SSLError as exc:
                return Result(
                    "FAIL",
                    name,
                    f"server rejected the device certificate: {exc.reason}",
                    "re-provision or check the certificate is registered and ACTIVE",
                )
    except ssl.SSLCertVerificationError as exc:
        return Result(
            "FAIL",
            name,
            f"server certificate not trusted: {exc.verify_message}",
            "set connection.ca_file to the CA of the endpoint (AmazonRootCA1.pem for IoT Core)",
        )
    except ssl.SSLError as exc:
        return Result("FAIL", name, f"handshake failed: {exc.reason or exc}", "check the CA, certificate and endpoint")
    except (TimeoutError, OSError) as exc:
        return Result("FAIL", name, f"handshake failed: {exc}", "check the endpoint is an MQTT/TLS port")
    finally:
        raw.close()
    return Result("PASS", name, f"{endpoint}:{port} {version}, server verified, device certificate accepted")


def check_mqtt(
    endpoint: str,
    port: int,
    ca_file: Path | None,
    cert_file: Path,
    key_file: Path,
    client_id: str,
    topic: str,
    timeout_s: float,
) -> Result:
    """Connect, subscribe to ``topic``, publish a nonce at QoS 1 and wait until it comes back."""
    name = "mqtt"
    nonce = uuid.uuid4().hex.encode()
    connected = threading.Event()
    failed: list[str] = []
    got = threading.Event()
    stopped = threading.Event()

    def on_success(_: mqtt5.LifecycleConnectSuccessData) -> None:
        connected.set()

    def on_failure(data: mqtt5.LifecycleConnectFailureData) -> None:
        failed.append(describe_failure(data.exception, data.connack_packet))
        connected.set()

    def on_publish(data: mqtt5.PublishReceivedData) -> None:
        if data.publish_packet.topic == topic and data.publish_packet.payload == nonce:
            got.set()

    client = build_client(
        Target(endpoint, port, ca_file, cert_file, key_file, client_id),
        Lifecycle(on_publish=on_publish, on_success=on_success, on_failure=on_failure,
                  on_stopped=lambda _: stopped.set()),
        keep_alive_s=30,
        connect_timeout_ms=int(timeout_s * 1000),
        ack_timeout_s=int(timeout_s),
        min_reconnect_delay_ms=60_000,
        max_reconnect_delay_ms=60_000,
    )
    client.start()
    try:
        if not connected.wait(timeout_s + 1):
            return Result(
                "FAIL",
                name,
                f"no CONNACK within {timeout_s:.0f}s",
                "check the endpoint and the policy allows iot:Connect",
            )
        if failed:
            return Result(
                "FAIL",
                name,
                f"connect refused: {failed[0]}",
                f"the policy must allow iot:Connect as client id {client_id!r}; check the certificate is ACTIVE",
            )
        suback = client.subscribe(
            mqtt5.SubscribePacket(subscriptions=[mqtt5.Subscription(topic_filter=topic, qos=mqtt5.QoS.AT_LEAST_ONCE)])
        ).result(timeout_s)
        code = suback.reason_codes[0] if suback.reason_codes else None
        if code is None or code.value >= 0x80:
            return Result(
                "FAIL",
                name,
                f"subscribe to {topic} refused ({code})",
                "allow iot:Subscribe/iot:Receive on the doctor topic",
            )
        puback = client.publish(mqtt5.PublishPacket(topic=topic, payload=nonce, qos=mqtt5.QoS.AT_LEAST_ONCE)).result(
            timeout_s
        )
        rc = getattr(puback.puback, "reason_code", None)
        if rc is not None and rc.value >= 0x80:
            return Result(
                "FAIL", name, f"publish to {topic} refused ({rc.name})", "allow iot:Publish on the doctor topic"
            )
        if not got.wait(timeout_s):
            return Result(
                "FAIL",
                name,
                f"published to {topic} but it did not come back within {timeout_s:.0f}s",
                "the policy may drop it silently: allow iot:Publish, iot:Subscribe and iot:Receive on the doctor topic",
            )
    except concurrent.futures.TimeoutError:
        return Result("FAIL", name, f"no SUBACK/PUBACK within {timeout_s:.0f}s", "check the broker and the policy")
    except AwsCrtError as exc:  # the link dropped mid-check (broker gone, policy hang-up)
        return Result("FAIL", name, f"{type(exc).__name__}: {exc}", "check the broker and the policy")
    finally:
        client.stop()
        stopped.wait(5)
    return Result("PASS", name, f"connected as {client_id!r}, round trip on {topic}")
