"""The agent's one connection against the real broker: subscriptions survive a broker restart
(clean session, so the agent must subscribe again), and the client id is the thing name."""

from __future__ import annotations

import asyncio

from agent.config import ConnectionConfig
from agent.connection import Connection
from tests.eventually import eventually_async
from tests.mqtt_client import MqttClient


async def _publish_until(admin: MqttClient, topic: str, tag: str, landed) -> None:
    """Publish ``tag-N`` every 0.2 s until ``landed()``: SUBACK may precede delivery by a moment."""
    n = 0

    def attempt() -> bool:
        nonlocal n
        if landed():
            return True
        n += 1
        admin.publish(topic, f"{tag}-{n}".encode())
        return False

    await eventually_async(attempt, 20, 0.2, what=f"no {tag!r} delivery")


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
                await _publish_until(admin, topic, "before", lambda: got)
            emulator.broker.restart()
            await eventually_async(lambda: conn.stats.connects >= 2)
            with MqttClient.for_admin(info) as admin:
                admin.connect()
                await _publish_until(admin, topic, "after", lambda: any(p.startswith(b"after") for p in got))
            assert conn.stats.subscriptions_refused == 0
        finally:
            await conn.stop()

    asyncio.run(scenario())
