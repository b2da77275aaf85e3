"""Every fault the issue lists, against every UART driver, over a real pty."""

from __future__ import annotations

import pytest

from drivers.base import DriverError
from tests.devices.pty_host import Fault
from tests.drivers.conftest import eventually
from tests.drivers.uart_cases import CASES

IDS = [c.name for c in CASES]


def _value(ms, quantity):
    return {m.quantity: m.value for m in ms}[quantity]


@pytest.fixture(params=CASES, ids=IDS)
def rig(request, pty_factory):
    case = request.param
    dev = case.device()
    host = pty_factory(dev)
    drv = case.driver(host.port)
    drv.open()
    yield case, dev, host, drv
    drv.close()


@pytest.mark.parametrize(
    ("fault", "kind"),
    [(Fault.SILENT, "timeout"), (Fault.GARBAGE, "garbage"), (Fault.BAD_CHECKSUM, "checksum_error"),
     (Fault.NAK, "nak")],
)
def test_fault_raises_then_recovers(rig, fault, kind):
    case, dev, _host, drv = rig
    if fault is Fault.NAK and not case.has_nak:
        pytest.skip(f"{case.name} has no NAK reply")
    assert _value(drv.read(), case.quantity) == pytest.approx(case.expected)
    dev.fault = fault
    with pytest.raises(DriverError) as info:
        drv.read()
    assert info.value.kind == (case.kinds or {}).get(fault.value, kind)
    dev.fault = Fault.NONE
    ms, _ = eventually(drv.read, 5)
    assert _value(ms, case.quantity) == pytest.approx(case.expected)


def test_noise_before_reply_is_skipped(rig):
    case, dev, _host, drv = rig
    if not case.resyncs:
        pytest.skip(f"{case.name}: the library's framer does not resynchronise behind noise")
    dev.fault = Fault.NOISE_PREFIX
    assert _value(drv.read(), case.quantity) == pytest.approx(case.expected)


def test_port_vanishes_and_comes_back(rig):
    case, _dev, host, drv = rig
    # The precondition (a good read while plugged in) may need a retry on an overloaded machine.
    ms, _ = eventually(drv.read, 10)
    assert _value(ms, case.quantity) == pytest.approx(case.expected)
    host.vanish()
    with pytest.raises(DriverError) as info:
        drv.read()
    assert info.value.kind in {"port_lost", "timeout"}
    # While the port is gone every read fails fast and names the reason; nothing is invented.
    kinds = set()
    for _ in range(3):
        with pytest.raises(DriverError) as again:
            drv.read()
        kinds.add(again.value.kind)
    assert kinds <= {"port_lost", "port_unavailable", "timeout"}
    host.reappear()
    ms, errors = eventually(drv.read, 10)
    assert _value(ms, case.quantity) == pytest.approx(case.expected)
    assert all(e.kind in {"port_lost", "port_unavailable", "timeout"} for e in errors)
