"""INIR start-up sequence (SGX: [C] configuration, then [B] engineering; [H] for on-demand): sent on
every (re)open, each command must be answered [AK], and a [NA] or garbage answer is a clear DriverError
that closes the port so the next read starts over."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DriverError
from drivers.codec_error import CodecError, NakError
from drivers.inir import codec
from drivers.inir.driver import InirDriver, InirSettings
from tests.devices.inir import InirDevice
from tests.devices.pty_host import Fault
from tests.drivers.conftest import eventually

FAST = {"timeout_s": 0.6, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2, "warmup_s": 0}


def _by_q(ms):
    return {m.quantity: m for m in ms}


def test_check_ack_vectors():
    assert codec.check_ack(b"5b414b5d", b"[B]") is True  # reference §8: [B] -> [AK]
    assert codec.check_ack(b"0000005b\n\r00002710\n\r0000005d", b"[B]") is False  # a streamed frame: keep reading
    with pytest.raises(NakError, match=r"\[NA\] to \[C\]"):
        codec.check_ack(b"5b4e415d", b"[C]")
    with pytest.raises(CodecError, match=r"expected \[AK\] after \[H\]"):
        codec.check_ack(b"zz", b"[H]")


@given(st.binary(max_size=40))
def test_check_ack_never_crashes(data):
    try:
        acked = codec.check_ack(data, b"[C]")
    except CodecError:
        return
    assert acked is (data.strip().lower() == b"5b414b5d")  # only the exact [AK] token acknowledges


def test_stream_startup_then_engineering_frames(pty_factory):
    dev = InirDevice(ppm=12_345, temp_c=21.0)
    d = InirDriver(InirSettings(port=pty_factory(dev).port, **FAST))
    try:
        d.open()
        assert dev.requests == [b"[C]", b"[B]"]
        assert dev.mode == "engineering"
        ms = _by_q(d.read())
    finally:
        d.close()
    assert ms["methane"].value == 12_345
    assert ms["sensor_temperature"].value == pytest.approx(21.0, abs=0.06)
    assert dev.requests == [b"[C]", b"[B]"]  # stream mode sends nothing per read


def test_on_demand_startup_adds_h(pty_factory):
    dev = InirDevice(ppm=700, streaming=True)  # met in normal mode: the sequence puts it in on-demand
    d = InirDriver(InirSettings(port=pty_factory(dev).port, mode="on_demand", **FAST))
    try:
        assert _by_q(d.read())["methane"].value == 700
    finally:
        d.close()
    assert dev.requests == [b"[C]", b"[B]", b"[H]", b"[Q]"]
    assert dev.mode == "on_demand"


def test_reconnect_resends_startup(pty_factory):
    dev = InirDevice(ppm=5_000)
    host = pty_factory(dev)
    d = InirDriver(InirSettings(port=host.port, **FAST))
    try:
        assert _by_q(d.read())["methane"].value == 5_000
        host.vanish()
        dev.mode = "normal"  # the adapter came back with a power-cycled sensor
        with pytest.raises(DriverError):
            d.read()
        host.reappear()
        ms, _ = eventually(d.read, 10)
    finally:
        d.close()
    assert _by_q(ms)["methane"].value == 5_000
    assert dev.requests == [b"[C]", b"[B]", b"[C]", b"[B]"]
    assert dev.mode == "engineering"


@pytest.mark.parametrize("refused", [b"[C]", b"[B]"])
def test_nak_to_startup_is_clear_error_and_retried(pty_factory, refused):
    dev = InirDevice(ppm=800)
    dev.nak_commands = {refused}
    d = InirDriver(InirSettings(port=pty_factory(dev).port, **FAST))
    try:
        with pytest.raises(DriverError) as info:
            d.open()
        assert info.value.kind == "nak"
        assert f"[NA] to {refused.decode()}" in info.value.message
        assert "start-up command" in info.value.message
        assert dev.requests[-1] == refused  # it stopped at the refused command
        dev.nak_commands = set()
        ms, errors = eventually(d.read, 5)
    finally:
        d.close()
    assert _by_q(ms)["methane"].value == 800
    assert {e.kind for e in errors} <= {"port_unavailable"}  # waiting out the backoff, nothing else
    assert dev.requests[-2:] == [b"[C]", b"[B]"]  # the whole sequence again after reopening


@pytest.mark.parametrize(("fault", "kind"), [(Fault.GARBAGE, "garbage"), (Fault.SILENT, "timeout")])
def test_garbage_or_silence_to_startup_is_clear_error(pty_factory, fault, kind):
    dev = InirDevice(ppm=900, streaming=False)
    dev.fault = fault
    d = InirDriver(InirSettings(port=pty_factory(dev).port, mode="on_demand", **FAST))
    try:
        with pytest.raises(DriverError) as info:
            d.read()
        assert info.value.kind == kind
        assert "start-up command [C]" in info.value.message
        dev.fault = Fault.NONE
        ms, _ = eventually(d.read, 5)
    finally:
        d.close()
    assert _by_q(ms)["methane"].value == 900
    assert dev.requests[-4:] == [b"[C]", b"[B]", b"[H]", b"[Q]"]


def test_startup_can_be_turned_off(pty_factory):
    dev = InirDevice(ppm=42)
    d = InirDriver(InirSettings(port=pty_factory(dev).port, startup_commands=False, **FAST))
    try:
        ms = _by_q(d.read())
    finally:
        d.close()
    assert ms["methane"].value == 42 and dev.requests == [] and dev.mode == "normal"
