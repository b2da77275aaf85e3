"""How the connection and the uplink behave when the link fails, against the real broker made
unresponsive (SIGSTOP: the TCP connection stays up, nothing answers) or killed. The network-
namespace scenarios (a black-holed link, the interface going down) are in tests/netfault/."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import signal
import socket
import time

import pytest
from pydantic import ValidationError

from agent.config import ConnectionConfig, UplinkConfig
from agent.connection import Connection, PublishError
from agent.link.backoff import ReconnectPolicy
from agent.link.netlink import describe
from agent.link.probe import probe
from agent.spool import NewReading, Spool
from agent.status import summary_line
from agent.status_model import AgentStatus, LinkHealth, LinkStatus, UplinkStatus
from agent.uplink import Uplink
from iotmqtt import failure_kind
from tests.eventually import eventually_async


def _conf(info, **over) -> ConnectionConfig:
    return ConnectionConfig(endpoint=info.endpoint, port=info.port, ca_file=info.ca_file,
                            cert_file=info.device.cert_file, key_file=info.device.key_file,
                            min_reconnect_delay_ms=200, max_reconnect_delay_ms=1000, **over)


def test_abandoned_publish_failed_by_the_disconnect_is_not_logged_as_an_error(emulator, caplog):
    """The issue's `Future exception was never retrieved ... OFFLINE_QUEUE_POLICY`: a publish whose
    wait gave up, then failed by awscrt when the link dropped."""
    info = emulator.info
    caplog.set_level(logging.ERROR, logger="asyncio")

    async def scenario() -> None:
        conn = Connection(_conf(info), info.device.thing_name, asyncio.get_running_loop())
        conn.start()
        try:
            await asyncio.wait_for(conn.connected.wait(), 20)
            pid = emulator.broker.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(conn.publish(f"dt/methane/t/{info.device.thing_name}/telemetry", b"x"), 0.5)
            finally:
                emulator.broker.kill()  # SIGKILL works on a stopped process; the kernel resets the TCP link
            await eventually_async(lambda: not conn.stats.connected, 20, what="disconnect not seen")
            await asyncio.sleep(0.5)
        finally:
            await conn.stop()
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(scenario())
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()], caplog.text


def _fill(spool: Spool, n: int, start: int) -> None:
    now = int(time.time() * 1000)
    spool.append([NewReading(now + i, True, "s1", "methane", float(start + i), "ppm") for i in range(n)])
    spool.commit()


def test_uplink_resends_at_once_after_a_reconnect(emulator, tmp_path):
    """Batches fail while the broker hangs (each failure used to add a retry wait of up to
    retry_max_delay_s, slept while still counted as in flight); after the reconnect the first
    PUBACK must follow at once, from the oldest unacknowledged reading."""
    info = emulator.info
    thing = info.device.thing_name

    async def scenario() -> None:
        spool = Spool(tmp_path / "spool.db", max_bytes=1 << 26, min_free_disk_bytes=0, commit_interval_s=0.1)
        spool.open()
        conn = Connection(_conf(info), thing, asyncio.get_running_loop(), ack_timeout_s=1)
        up = Uplink(spool, conn, UplinkConfig(batch_max_age_s=0.1, ack_timeout_s=1, retry_max_delay_s=3600,
                                              max_inflight=4), thing, "test")
        conn.start()
        task = asyncio.get_running_loop().create_task(up.run())
        try:
            _fill(spool, 50, 0)
            up.notify()
            await eventually_async(lambda: up.stats.readings_acked >= 50, 20, what="first batch not acked")
            os.kill(emulator.broker.pid, signal.SIGSTOP)
            # Batches keep failing until 8 have: the old code's retry waits had grown to
            # uniform(0, 0.5 * 2**8 s) by then, each slept inside a task still counted as in flight.
            filled = 0

            def failing_batches() -> bool:
                nonlocal filled
                if up.stats.failures >= 8:
                    return True
                _fill(spool, 20, 100 + 20 * filled)
                filled += 1
                up.notify()
                return False

            await eventually_async(failing_batches, 60, 0.5, what=lambda: f"only {up.stats.failures} failures")
            first_unacked = spool.stats().oldest_seq
            emulator.broker.kill()
            emulator.broker.start()
            await eventually_async(lambda: conn.stats.connects >= 2, 30, what="no reconnect")
            reconnected = time.monotonic()
            await eventually_async(lambda: spool.stats().readings == 0, 15,
                                   what=f"readings from seq {first_unacked} not resent promptly after the reconnect")
            assert time.monotonic() - reconnected < 15
            assert up.stats.inflight == 0
        finally:
            task.cancel()
            await up.stop(0.5)
            await conn.stop()
            spool.close()

    asyncio.run(scenario())


def test_failure_kinds_tell_network_from_broker():
    assert failure_kind("AWS_ERROR_MQTT5_PING_RESPONSE_TIMEOUT") == "network"
    assert failure_kind("AWS_IO_SOCKET_TIMEOUT") == "network"
    assert failure_kind("AWS_IO_DNS_QUERY_FAILED") == "network"
    assert failure_kind("AWS_IO_SOCKET_CONNECTION_REFUSED") == "broker"
    assert failure_kind("AWS_IO_SOCKET_CLOSED") == "broker"
    assert failure_kind("AWS_ERROR_MQTT5_CONNACK_TIMEOUT") == "broker"
    assert failure_kind("AWS_IO_TLS_ERROR_NEGOTIATION_FAILURE") == "refused"
    assert failure_kind("AWS_ERROR_MQTT5_CONNACK_CONNECTION_REFUSED reason=NOT_AUTHORIZED") == "refused"
    assert failure_kind("AWS_ERROR_MQTT5_USER_REQUESTED_STOP") == "stopped"


def test_policy_full_jitter_window_doubles_to_the_cap():
    p = ReconnectPolicy(1.0, 60.0, rng=random.Random(1))
    windows = []
    for _ in range(10):
        windows.append(min(60.0, 2 ** p.failures))
        assert 0 <= p.next_delay() <= windows[-1]
    assert windows[-1] == 60.0


def test_policy_network_return_forgets_the_backoff():
    p = ReconnectPolicy(1.0, 60.0, network_return_jitter_s=2.0, rng=random.Random(2))
    for _ in range(12):
        p.next_delay()
    assert all(0 <= p.network_returned() <= 2.0 for _ in range(50))
    assert p.failures == 0
    assert p.next_delay() <= 1.0  # the window starts over


def test_policy_a_stable_connection_resets_the_backoff_a_flapping_one_does_not():
    p = ReconnectPolicy(1.0, 60.0, stable_after_s=30, rng=random.Random(3))
    for _ in range(8):
        p.next_delay()
    p.lost(connected_for_s=5)
    assert p.failures == 9
    p.lost(connected_for_s=31)
    assert p.failures == 1


def test_netlink_messages_are_named():
    import struct

    msgs = b"".join(struct.pack("=IHHII", 16 + 4, kind, 0, 0, 0) + b"\0" * 4 for kind in (16, 21, 24, 99))
    assert describe(msgs) == ["link up/changed", "address removed", "route added"]
    assert describe(b"\x01\x02") == []
    assert describe(struct.pack("=IHHII", 3, 16, 0, 0, 0)) == []  # corrupt length: stop, do not loop


def test_probe_tells_reachable_refused_and_unreachable():
    async def scenario() -> tuple[str, str, str]:
        srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        try:
            return (await probe("127.0.0.1", port, 2), await probe("127.0.0.1", closed, 2),
                    await probe("nonexistent.invalid", 8883, 2))
        finally:
            srv.close()

    assert asyncio.run(scenario()) == ("reachable", "refused", "unreachable")


def test_ping_timeout_must_leave_room_within_one_and_a_half_keep_alives():
    with pytest.raises(ValidationError, match="ping_timeout_ms"):
        ConnectionConfig(keep_alive_s=30, ping_timeout_ms=20_000)
    ConnectionConfig(keep_alive_s=30, ping_timeout_ms=15_000)


def test_publish_error_says_offline_for_a_disconnect():
    assert PublishError("x", offline=True).offline and not PublishError("x").offline


def test_status_says_how_long_the_link_is_down_why_and_when_the_next_attempt_is():
    health = LinkHealth(state="waiting", down_since_ts=1.0, down_for_s=95.0, connect_attempts=4,
                        next_attempt_ts=2.0, next_attempt_in_s=12.0, failure_kind="network", network="down")
    link = LinkStatus(endpoint="e", topic="t", encoding="compact", connected=False,
                      last_error="AWS_ERROR_MQTT5_PING_RESPONSE_TIMEOUT", link=health)
    doc = {"agent": {"version": "1", "pid": 1, "thing_name": "gw", "uptime_s": 1.0, "config_hash": "h"},
           "clock_synced": True, "spool": {"path": "/s"}, "uplink": UplinkStatus(True, link).as_dict(),
           "sensors": []}
    assert doc["uplink"]["link"]["next_attempt_in_s"] == 12.0  # nested in the JSON the socket serves
    st = AgentStatus.from_dict(doc)
    assert st.uplink.link is not None and st.uplink.link.link == health
    line = summary_line(st)
    assert "disconnected 95s (PING_RESPONSE_TIMEOUT, network down), 4 attempts, next in 12s" in line, line
