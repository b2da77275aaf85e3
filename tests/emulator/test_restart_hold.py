"""``Emulator.restart_broker``: after a restart devices are admitted only once the emulator's own
clients are back, so the telemetry recorder (IoT Core's always-subscribed rules engine) sees
whatever a device publishes the moment it reconnects. Without the hold a device whose backoff fires
first published, got its PUBACK and deleted the batch before the recorder had resubscribed (seen
in the fleet simulator's broker-restart scenario: one batch of 32 readings missing)."""

from __future__ import annotations

from awscrt import mqtt5

from emulator import Emulator
from emulator.recorder import TelemetryRecorder
from tests.eventually import eventually
from tests.mqtt_client import MqttClient


def test_devices_are_held_until_the_recorder_is_back(tmp_path):
    recorder = TelemetryRecorder()
    with Emulator(tmp_path / "emu", components=[recorder], fleet_provisioning=True) as emu:
        assert emu.info is not None
        dev = MqttClient.for_device(emu.info, min_reconnect_delay_ms=50, max_reconnect_delay_ms=100)
        with dev:
            dev.connect()
            emu.restart_broker(down_s=0.3)
            dev.wait_connections(2, timeout=30)
            puback = dev.publish("dt/methane/site-1/gw-0001/telemetry", b"published at once")
            assert puback is not None and puback.reason_code == mqtt5.PubackReasonCode.SUCCESS
            eventually(recorder.rejects, 15)
            # Not a batch, so the recorder keeps it as a reject: the proof it was subscribed.
            assert [t for t, _ in recorder.rejects()] == ["dt/methane/site-1/gw-0001/telemetry"]
        # While held the broker answered the device's CONNECT with "not authorized".
        refused = [r for _, r in dev.failures if r == mqtt5.ConnectReasonCode.NOT_AUTHORIZED]
        assert refused, dev.failures
        # ... and after the hold the registry's real statuses apply again.
        assert emu.fleet is not None and "INACTIVE" not in emu.fleet.registry.authz_file.read_text()
