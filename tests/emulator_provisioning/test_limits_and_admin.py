"""IoT Core limits through the authz plugin, and the registry admin commands."""

from __future__ import annotations

import json

from awscrt import mqtt5

from agent.cli import main
from emulator import authz
from tests.eventually import eventually

DELIVERED = (mqtt5.PubackReasonCode.SUCCESS, mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS)


def device(fleet_emulator, connect):
    info = fleet_emulator.info
    return connect(info.device.cert_file, info.device.key_file, client_id=info.device.thing_name)


def test_payload_limit_128kb(fleet_emulator, connect):
    dev = device(fleet_emulator, connect)
    topic = f"dt/methane/site-1/{dev.client_id}/telemetry"
    assert dev.publish(topic, b"x" * 131072).reason_code in DELIVERED
    big = dev.client.publish(mqtt5.PublishPacket(topic=topic, payload=b"x" * 131073, qos=mqtt5.QoS.AT_LEAST_ONCE))
    try:
        code = big.result(10).puback.reason_code
    except Exception:
        code = None
    assert code not in DELIVERED


def test_second_connection_with_same_client_id_takes_over(fleet_emulator, connect):
    first = device(fleet_emulator, connect)
    second = device(fleet_emulator, connect)
    assert first.connected.result() and second.connected.result()
    eventually(lambda: first.disconnects, what="first connection was not disconnected")
    # IoT Core sends DISCONNECT 0x8E; mosquitto 2.0.11 closes the socket without one (docs/emulator.md).
    assert first.disconnects[0] in (None, int(mqtt5.DisconnectReasonCode.SESSION_TAKEN_OVER))
    assert second.publish(f"dt/methane/site-1/{second.client_id}/telemetry").reason_code in DELIVERED


def test_publish_rate_is_counted_per_connection(fleet_emulator, connect):
    dev = device(fleet_emulator, connect)
    topic = f"dt/methane/site-1/{dev.client_id}/telemetry"
    futures = [dev.client.publish(mqtt5.PublishPacket(topic=topic, payload=b"{}", qos=mqtt5.QoS.AT_LEAST_ONCE))
               for _ in range(30)]
    for f in futures:
        f.result(10)
    stats_file = fleet_emulator.fleet.plugin.stats_file
    stats = eventually(lambda: authz.read_stats(stats_file).get(dev.client_id, {}).get("in", 0) >= 30
                     and authz.read_stats(stats_file)[dev.client_id])
    assert stats["in"] == 30 and stats["max_per_s"] >= 1
    assert stats["cert"] == fleet_emulator.fleet.registry.certificate(stats["cert"]).certificate_id


def test_admin_commands(fleet_emulator, connect, capsys):
    state = str(fleet_emulator.state_dir)
    assert main(["emulator", "things", "--state-dir", state, "--json"]) == 0
    things = json.loads(capsys.readouterr().out)
    assert [t["thingName"] for t in things] == ["gw-0001"]
    assert main(["emulator", "certs", "--state-dir", state, "--json"]) == 0
    certs = json.loads(capsys.readouterr().out)
    dev_cert = next(c for c in certs if c["things"] == ["gw-0001"])
    assert {c["role"] for c in certs} == {"admin", "device"} and dev_cert["status"] == "ACTIVE"

    dev = device(fleet_emulator, connect)
    assert main(["emulator", "cert", "revoke", dev_cert["certificateId"], "--state-dir", state]) == 0
    assert "revoked" in capsys.readouterr().out
    eventually(lambda: dev.disconnects, what="revoked device stayed connected")
    assert fleet_emulator.fleet.registry.certificate(dev_cert["certificateId"]).status == "REVOKED"


def test_admin_command_errors(fleet_emulator, tmp_path, capsys):
    state = str(fleet_emulator.state_dir)
    assert main(["emulator", "cert", "revoke", "f" * 64, "--state-dir", state]) == 1
    assert "no certificate with id" in capsys.readouterr().err
    assert main(["emulator", "cert", "revoke", "nothex", "--state-dir", state]) == 2
    assert "64 lower-case hex" in capsys.readouterr().err
    assert main(["emulator", "certs", "--state-dir", str(tmp_path / "nowhere")]) == 1
    assert "no registry" in capsys.readouterr().err
