"""The agent's one connection against the real broker: subscriptions survive a broker restart
(clean session, so the agent must subscribe again), and the client id is the thing name."""

from __future__ import annotations

import asyncio

from agent.config import ConnectionConfig
from agent.connection import Connection
from tests.mqtt_client import MqttClient


async def _wait(pred, timeout=20.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.05)


def test_kept_subscription_is_renewed_after_broker_restart(emulator):
    info = emulator.info
    thing = info.device.thing_name
    topic = f"dt/methane/test/{thing}/echo"
    got: list[bytes] = []

    async def scenario() -> None:
        conf = ConnectionConfig(
            endpoint=info.endpoint, port=info.port, ca_file=info.ca_file, cert_file=info.device.cert_file,
            key_file=info.device.key_file, min_reconnect_delay_ms=200, max_reconnect_delay_ms=1000,
        )
        conn = Connection(conf, thing, asyncio.get_running_loop())
        conn.keep_subscribed(topic, lambda t, payload, p: got.append(payload))
        conn.start()
        try:
            await asyncio.wait_for(conn.connected.wait(), 20)
            with MqttClient.for_admin(info) as admin:
                admin.connect()
                # SUBACK may precede delivery by a moment: publish until the first one lands.
                n = 0
                while not got:
                    n += 1
                    admin.publish(topic, f"before-{n}".encode())
                    await asyncio.sleep(0.2)
                    assert n < 50
            emulator.broker.restart()
            await _wait(lambda: conn.stats.connects >= 2)
            with MqttClient.for_admin(info) as admin:
                admin.connect()
                n = 0
                while not any(p.startswith(b"after") for p in got):
                    n += 1
                    admin.publish(topic, f"after-{n}".encode())
                    await asyncio.sleep(0.2)
                    assert n < 50, f"no delivery after the restart: {got}"
            assert conn.stats.subscriptions_refused == 0
        finally:
            await conn.stop()

    asyncio.run(scenario())
