"""sd_notify over a real AF_UNIX datagram socket, and the watchdog gate that stops on a hung loop."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.notify import Notifier, WatchdogGate
from tests.eventually import eventually


def test_without_notify_socket_every_call_is_a_noop():
    n = Notifier.from_env({})
    assert not n.enabled
    n.ready("x")
    n.status("x")
    n.watchdog()
    n.stopping()
    n.reloading()
    assert n.send("READY=1") is False
    assert (n.sent, n.failed) == (0, 0)
    assert n.watchdog_interval_s() is None


def test_messages_arrive_as_systemd_parses_them(notify_socket):
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.path})
    n.ready("spool 0 | last publish never")
    n.status("spool 12 readings")
    n.watchdog()
    n.extend_timeout(2.5)
    n.stopping("flushing spool")
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    msgs = notify_socket.assignments()
    assert msgs[:5] == [
        {"READY": "1", "STATUS": "spool 0 | last publish never"},
        {"STATUS": "spool 12 readings"},
        {"WATCHDOG": "1"},
        {"EXTEND_TIMEOUT_USEC": "2500000"},
        {"STOPPING": "1", "STATUS": "flushing spool"},
    ]
    assert msgs[5]["RELOADING"] == "1"
    assert before <= int(msgs[5]["MONOTONIC_USEC"]) <= after
    assert n.sent == 6


def test_abstract_socket_address():
    name = f"methane-test-{uuid.uuid4().hex}"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(b"\0" + name.encode())
    rx.settimeout(5)
    try:
        Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready()
        assert rx.recv(4096) == b"READY=1"
    finally:
        rx.close()


def test_status_cannot_inject_assignments(notify_socket):
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.path})
    n.status("sensor evil\nREADY=1\r\nMAINPID=1")
    assert notify_socket.assignments() == [{"STATUS": "sensor evil READY=1 MAINPID=1"}]


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_status_is_always_exactly_one_assignment(text):
    got: list[str] = []

    class Capture(Notifier):
        def send(self, message: str) -> bool:
            got.append(message)
            return True

    Capture("/nonexistent").status(text)
    (msg,) = got
    assert msg.startswith("STATUS=")
    assert "\n" not in msg and "\r" not in msg
    assert len(msg) <= len("STATUS=") + 1024


def test_send_errors_never_raise_and_warn_once(tmp_path, caplog):
    clock = [1000.0]
    n = Notifier(str(tmp_path / "gone"), clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="agent.notify"):
        for _ in range(50):
            n.watchdog()
        assert n.failed == 50 and n.sent == 0
        assert len([r for r in caplog.records if r.msg == "sd_notify send failed"]) == 1
        clock[0] += 61
        n.watchdog()
    warnings = [r for r in caplog.records if r.msg == "sd_notify send failed"]
    assert len(warnings) == 2
    assert warnings[1].suppressed == 49


def test_recovers_when_the_manager_comes_back(notify_socket, tmp_path):
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.path})
    n.status("one")
    notify_socket.sock.close()
    os.unlink(notify_socket.path)
    n.status("lost")  # manager gone (daemon-reexec): dropped, no exception
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(notify_socket.path)
    rx.settimeout(5)
    try:
        n.status("two")
        assert rx.recv(4096) == b"STATUS=two"
    finally:
        rx.close()
    assert n.failed == 1


def test_send_never_blocks_when_the_receiver_is_full(notify_socket):
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.path})
    start = time.monotonic()
    for _ in range(5000):  # far beyond the datagram queue (net.unix.max_dgram_qlen) of a reader that sleeps
        n.status("x" * 1000)
    assert time.monotonic() - start < 10
    assert n.failed > 0  # EAGAIN was reported, not waited out


@pytest.mark.parametrize(
    ("env", "timeout"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}, None),
        ({}, None),
    ],
)
def test_watchdog_environment(env, timeout):
    n = Notifier.from_env({"NOTIFY_SOCKET": "/run/x", **env})
    assert n.watchdog_timeout_s() == timeout
    assert n.watchdog_interval_s() == (None if timeout is None else timeout / 2)


def test_gate_decisions_follow_heartbeat_age(notify_socket):
    now = [0.0]
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "2000000"})
    gate = WatchdogGate(n, clock=lambda: now[0])
    assert gate.ping_interval_s == 1.0 and gate.max_age_s == 1.0
    assert gate.check_once() is False  # no beat yet: the loop has not run
    gate.beat()
    assert gate.check_once() is True
    gate.beat("sampler")
    now[0] = 0.9
    gate.beat()
    now[0] = 1.5
    assert gate.stale() == ["sampler"]
    assert gate.check_once() is False
    gate.forget("sampler")
    assert gate.check_once() is True
    msgs = notify_socket.assignments()
    assert [m for m in msgs if "WATCHDOG" in m] == [{"WATCHDOG": "1"}] * 2
    assert {"STATUS": "unhealthy: no heartbeat from main"} in msgs
    assert {"STATUS": "unhealthy: no heartbeat from sampler"} in msgs


def test_gate_is_disarmed_without_watchdog():
    gate = WatchdogGate(Notifier.from_env({"NOTIFY_SOCKET": "/run/x"}))
    assert not gate.armed
    gate.start()  # nothing to run
    gate.beat()
    gate.stop()
    with pytest.raises(ValueError, match="positive"):
        WatchdogGate(Notifier(None), 0)


def test_hung_event_loop_stops_the_pings(notify_socket):
    """An asyncio loop beats from a task; when a callback blocks the loop, the timer thread keeps
    running but WATCHDOG=1 stops, which is what lets systemd restart a hung agent."""
    n = Notifier.from_env({"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "100000"})
    gate = WatchdogGate(n)  # ping every 50 ms, heartbeat must be younger than 50 ms
    hang = threading.Event()
    hanging = threading.Event()  # set by the loop itself just before it blocks
    release = threading.Event()

    async def main() -> None:
        async def heartbeat() -> None:
            while True:
                gate.beat()
                await asyncio.sleep(0.01)

        task = asyncio.create_task(heartbeat())
        while not hang.is_set():
            await asyncio.sleep(0.01)
        hanging.set()
        release.wait(30)  # a blocking call on the loop: the hang
        task.cancel()

    t = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    gate.start()
    t.start()
    try:
        notify_socket.wait_for(lambda msgs: msgs.count("WATCHDOG=1") >= 5)
        hang.set()
        assert hanging.wait(10), "the loop never reached its hang"
        withheld = gate.withheld
        eventually(lambda: gate.withheld >= withheld + 5, 5, 0.02, what="timer thread stopped deciding")
        # Judged by order, not by a time window: a loaded machine may stall the loop (unhealthy,
        # then pings again) before the real hang, but once the loop hangs the last STATUS=unhealthy
        # is followed by no ping at all.
        msgs = notify_socket.drain()
        last_unhealthy = max((i for i, m in enumerate(msgs) if m.startswith("STATUS=unhealthy")), default=None)
        assert last_unhealthy is not None, msgs
        assert "WATCHDOG=1" not in msgs[last_unhealthy:], msgs[last_unhealthy:]
    finally:
        release.set()
        gate.stop()
        t.join(10)
