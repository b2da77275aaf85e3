"""The emulator's mosquitto, met by the REAL awscrt MQTT5 client: identities, ACLs, limits,
restarts. Each assertion states what mosquitto 2.0.11 really does (verified on the wire), which is
what the agent's own tests will meet."""

from __future__ import annotations

import queue
import socket

import pytest
from awscrt import mqtt5

from emulator import Emulator
from emulator.broker import PAYLOAD_LIMIT, BrokerError, PortInUseError
from emulator.pki import CertificateAuthority
from tests.eventually import eventually
from tests.mqtt_client import ConnectFailed, MqttClient


def _no_message(client: MqttClient, timeout: float = 1.0) -> bool:
    try:
        got = client.expect(timeout)
    except queue.Empty:
        return True
    pytest.fail(f"unexpected delivery: {got}")


def test_device_publishes_and_receives_on_its_own_topics(emulator):
    info = emulator.info
    topic = f"dt/methane/site-1/{info.device.thing_name}/telemetry"
    with MqttClient.for_device(info) as dev, MqttClient.for_admin(info) as admin:
        assert admin.subscribe("dt/methane/+/+/telemetry") == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
        assert dev.subscribe(topic) == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
        ack = dev.publish(topic, b"\x01\x02payload", content_type="application/zstd")
        assert ack is not None and ack.reason_code == mqtt5.PubackReasonCode.SUCCESS
        for client in (dev, admin):
            msg = client.expect(10)
            assert (msg.topic, msg.payload, msg.qos) == (topic, b"\x01\x02payload", 1)
            assert msg.content_type == "application/zstd"


def test_device_uses_its_shadow_topics_admin_reaches_them(emulator):
    info = emulator.info
    thing = info.device.thing_name
    with MqttClient.for_device(info) as dev, MqttClient.for_admin(info) as admin:
        dev.subscribe(f"$aws/things/{thing}/shadow/update/accepted")
        admin.subscribe("$aws/things/+/shadow/update")
        assert dev.publish(f"$aws/things/{thing}/shadow/update", b"{}").reason_code in (
            mqtt5.PubackReasonCode.SUCCESS,
            mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS,
        )
        assert admin.expect(10).topic == f"$aws/things/{thing}/shadow/update"
        ack = admin.publish(f"$aws/things/{thing}/shadow/update/accepted", b'{"version":1}')
        assert ack.reason_code == mqtt5.PubackReasonCode.SUCCESS
        assert dev.expect(10).payload == b'{"version":1}'


def test_acl_refuses_publish_to_another_things_topics(emulator):
    info = emulator.info
    with MqttClient.for_device(info) as dev, MqttClient.for_admin(info) as admin:
        admin.subscribe("#", "$aws/#")
        for topic in (
            "dt/methane/site-1/gw-9999/telemetry",
            "$aws/things/gw-9999/shadow/update",
            "$aws/certificates/create/json",  # claim identities only
            "$aws/rules/telemetry/dt/methane/site-1/gw-9999/telemetry",
            "some/other/topic",
        ):
            ack = dev.publish(topic, b"x")
            assert ack.reason_code == mqtt5.PubackReasonCode.NOT_AUTHORIZED, topic
        _no_message(admin)
        # Basic Ingest for its own thing is allowed (nobody subscribes on IoT Core; admin may here).
        own = f"$aws/rules/telemetry/dt/methane/site-1/{info.device.thing_name}/telemetry"
        assert dev.publish(own, b"y").reason_code == mqtt5.PubackReasonCode.SUCCESS
        assert admin.expect(10).topic == own


def test_subscribe_to_other_things_topics_is_granted_but_nothing_is_delivered(emulator):
    """mosquitto 2.0.11's acl_file does not check SUBSCRIBE (SUBACK grants QoS 1, unlike IoT Core's
    0x80/0x87) but checks read access on every delivery, so the device never sees the messages."""
    info = emulator.info
    with MqttClient.for_device(info) as dev, MqttClient.for_admin(info) as admin:
        codes = dev.subscribe("dt/methane/site-1/gw-9999/#", "$aws/things/gw-9999/#", "#")
        assert codes == [mqtt5.SubackReasonCode.GRANTED_QOS_1] * 3
        for topic in ("dt/methane/site-1/gw-9999/telemetry", "$aws/things/gw-9999/shadow/update/delta"):
            # SUCCESS: the subscription matched; the read check then withholds the copy.
            assert admin.publish(topic, b"secret").reason_code == mqtt5.PubackReasonCode.SUCCESS
        _no_message(dev)


def test_client_without_certificate_is_refused(emulator):
    info = emulator.info
    client = MqttClient(info.port, info.ca_file)  # server verified, no client cert offered
    with pytest.raises(ConnectFailed) as err:
        client.connect(timeout=15)
    assert err.value.error is not None and "TLS" in err.value.error.name
    # The broker writes its log line after the handshake fails: the client can see the failure first.
    eventually(lambda: "peer did not return a certificate" in emulator.broker.log_text())


def test_client_with_foreign_ca_certificate_is_refused(emulator, tmp_path):
    foreign = CertificateAuthority.load_or_create(tmp_path / "foreign")
    cert, key = foreign.issue_client(emulator.info.device.thing_name)
    client = MqttClient(emulator.info.port, emulator.info.ca_file, cert, key)
    with pytest.raises(ConnectFailed) as err:
        client.connect(timeout=15)
    assert err.value.error is not None and "TLS" in err.value.error.name
    eventually(lambda: "certificate verify failed" in emulator.broker.log_text())


@pytest.mark.slow
def test_client_refuses_a_server_from_another_ca(emulator, tmp_path):
    """TLS verification stays on in the test client: trusting a different CA fails the handshake.
    Slow by nature: s2n (awscrt's TLS on Linux) delays reporting its own verification failure by
    10-30 s ("blinding" against timing attacks), so the failure surfaces that late."""
    foreign = CertificateAuthority.load_or_create(tmp_path / "foreign")
    info = emulator.info
    client = MqttClient(info.port, foreign.ca_file, info.device.cert_file, info.device.key_file)
    with pytest.raises(ConnectFailed) as err:
        client.connect(timeout=60)
    assert err.value.error is not None and err.value.error.name == "AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE"


def test_broker_restarts_on_the_same_port_and_the_client_reconnects(emulator):
    info = emulator.info
    broker = emulator.broker
    topic = f"dt/methane/s/{info.device.thing_name}/telemetry"
    with MqttClient.for_device(info) as dev:
        port = broker.port
        broker.kill()  # abrupt, as a crash would be
        dev.wait_disconnections(1, timeout=15)
        assert broker.restart() == port
        dev.wait_connections(2, timeout=30)
        ack = dev.publish(topic, b"after restart")
        assert ack.reason_code == mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS
        broker.restart()  # graceful SIGTERM this time
        dev.wait_connections(3, timeout=30)
        assert dev.publish(topic, b"again").reason_code == mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS


def test_payload_limit_is_iot_cores_128_kib(emulator):
    """131072 bytes pass; one more is refused with PUBACK reason 0x95, a code MQTT 5 does not define
    for PUBACK, so awscrt reports ``reason_code=None``: callers must treat anything but SUCCESS /
    NO_MATCHING_SUBSCRIBERS as failure. The client stays connected."""
    info = emulator.info
    topic = f"dt/methane/s/{info.device.thing_name}/telemetry"
    with MqttClient.for_device(info) as dev:
        dev.subscribe(topic)
        assert dev.publish(topic, b"x" * PAYLOAD_LIMIT).reason_code == mqtt5.PubackReasonCode.SUCCESS
        assert len(dev.expect(10).payload) == PAYLOAD_LIMIT
        ack = dev.publish(topic, b"x" * (PAYLOAD_LIMIT + 1))
        assert ack.reason_code is None
        _no_message(dev)
        assert dev.publish(topic, b"small").reason_code == mqtt5.PubackReasonCode.SUCCESS
        assert dev.disconnections == []


def test_2000_quick_qos1_messages_all_reach_a_subscriber_that_was_offline(emulator):
    """The raised queue limits: with mosquitto's defaults (max_queued_messages 1000) only 1000 of
    these reach the subscriber (verified by running this test against a default config); here all
    2000 are queued for its persistent session and delivered when it comes back."""
    info = emulator.info
    topic = f"dt/methane/s/{info.device.thing_name}/telemetry"
    n = 2000
    session = dict(client_id="offline-subscriber", session_expiry_s=600)
    with MqttClient.for_admin(info, **session) as admin:
        assert admin.subscribe(topic) == [mqtt5.SubackReasonCode.GRANTED_QOS_1]
    with MqttClient.for_device(info) as dev:
        futures = [dev.publish_async(topic, i.to_bytes(4, "big") * 64) for i in range(n)]
        for f in futures:
            assert f.result(60).puback.reason_code == mqtt5.PubackReasonCode.SUCCESS
    with MqttClient.for_admin(info, **session) as admin:
        got = admin.drain(n, timeout=60)
        _no_message(admin, 0.5)
    assert sorted(int.from_bytes(m.payload[:4], "big") for m in got) == list(range(n))


def test_claim_identity_gets_provisioning_topics_only_after_acl_update(emulator):
    info = emulator.info
    cert, key = emulator.issue_identity("claim-batch7")
    with MqttClient(info.port, info.ca_file, cert, key) as claim:
        before = claim.publish("$aws/certificates/create/json", b"{}")
        assert before.reason_code == mqtt5.PubackReasonCode.NOT_AUTHORIZED
        emulator.set_claim_identities(["claim-batch7"])
        after = claim.publish("$aws/certificates/create/json", b"{}")
        assert after.reason_code == mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS
        tmpl = claim.publish("$aws/provisioning-templates/t1/provision/json", b"{}")
        assert tmpl.reason_code == mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS
    with MqttClient.for_device(info) as dev:  # a device identity still may not
        assert dev.publish("$aws/certificates/create/json", b"{}").reason_code == (
            mqtt5.PubackReasonCode.NOT_AUTHORIZED
        )


def test_revoked_certificate_is_refused_after_reload_but_open_sessions_stay(emulator):
    """SIGHUP makes mosquitto 2.0.11 re-read the CRL for NEW connections; a connection that is
    already open is not dropped (restart the broker to cut it)."""
    info = emulator.info
    thing = info.device.thing_name
    with MqttClient.for_device(info) as dev:
        emulator.ca.revoke(info.device.cert_file.read_text())
        emulator.broker.reload()
        assert dev.publish(f"dt/methane/s/{thing}/t", b"x").reason_code == (
            mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS
        )
        with pytest.raises(ConnectFailed):
            MqttClient.for_device(info, client_id="second").connect(timeout=15)
    other_cert, other_key = emulator.issue_identity("gw-0002")
    with MqttClient(info.port, info.ca_file, other_cert, other_key):  # not revoked: still fine
        pass


def test_unreadable_server_key_makes_start_raise_with_mosquittos_reason(tmp_path):
    state = tmp_path / "emu"
    with Emulator(state):
        pass
    (state / "pki" / "server.key").write_bytes(b"not a key\n")
    emu = Emulator(state)
    with pytest.raises(BrokerError, match=r"Unable to load server key file"):
        emu.start()
    assert emu.broker is not None and not emu.broker.running()


def test_fixed_port_held_by_another_process_is_reported(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        emu = Emulator(tmp_path / "emu", port=port)
        with pytest.raises(PortInUseError, match=rf"port {port} is in use"):
            emu.start()
        assert not emu.broker.running()
