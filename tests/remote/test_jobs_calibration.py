"""calibrate-sensor against real drivers talking to their byte-exact pty emulators: the command
bytes the datasheets give reach the device, the job ends SUCCEEDED; a kind the driver refuses,
a device that answers NAK and a driver without calibration end with a clear reason."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from agent.remote.jobs.journal import Journal
from agent.runtime import Agent
from tests.devices.cubic import CubicDevice
from tests.devices.dynament import DynamentDevice
from tests.devices.pty_host import Fault, PtyHost
from tests.devices.winsen import WinsenDevice
from tests.remote.conftest import eventually, eventually_async, running

# Frames from the datasheets (shared/reference/methane-sensors.md), written out rather than built
# with the drivers' codecs so the test cannot agree with a wrong codec.
WINSEN_READ = bytes.fromhex("ff0186000000000079")
WINSEN_ZERO = bytes.fromhex("ff0187000000000078")
WINSEN_SPAN_2000 = bytes.fromhex("ff018807d0000000a0")
CUBIC_READ = bytes.fromhex("110101ed")
CUBIC_ZERO = bytes.fromhex("110103eb")


def _calibrate(admin, gateway, sensor_id: str, kind: str, value: float | None = None) -> str:
    job_id = f"cal-{uuid.uuid4().hex[:10]}"
    params: dict[str, Any] = {"sensor_id": sensor_id, "kind": kind}
    if value is not None:
        params["value"] = value
    admin.job_create({"action": "calibrate-sensor", "params": params}, [gateway.thing], job_id=job_id)
    return job_id


async def _final(admin, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        ex = admin.job_describe(job_id)["executions"][0]
        return ex if ex["status"] not in ("QUEUED", "IN_PROGRESS") else None

    return await eventually_async(lambda: asyncio.to_thread(done), 20)


def _sensor(sensor_id: str, driver: str, port: Path | str, **settings: Any) -> dict[str, Any]:
    return {"id": sensor_id, "driver": driver, "interval_s": 0.5,
            "settings": {"port": str(port), "timeout_s": 0.5, **settings}}


def test_winsen_zero_and_span_reach_the_device(gateway, admin):
    device = WinsenDevice(raw=120)
    with PtyHost(device, link=gateway.state_dir / "winsen") as host:
        conf = gateway.conf(sensors=[_sensor("ch4-w", "winsen-mh440d", host.port, scale=1.0, unit="ppm")])

        async def scenario() -> None:
            agent = Agent(conf)
            async with running(agent):
                # The sensor is sampling (reads answered) before the calibration starts.
                await eventually(lambda: WINSEN_READ in device.requests)
                zero = await asyncio.to_thread(_calibrate, admin, gateway, "ch4-w", "zero")
                ex = await _final(admin, zero)
                assert ex["status"] == "SUCCEEDED", ex
                assert ex["statusDetails"]["sensor"] == "ch4-w" and ex["statusDetails"]["kind"] == "zero"
                await eventually(lambda: device.calibrations == [(0x87, 0)])
                assert WINSEN_ZERO in device.requests

                span = await asyncio.to_thread(_calibrate, admin, gateway, "ch4-w", "span", 2000)
                ex = await _final(admin, span)
                assert ex["status"] == "SUCCEEDED", ex
                await eventually(lambda: device.calibrations == [(0x87, 0), (0x88, 2000)])
                assert WINSEN_SPAN_2000 in device.requests
                # Every frame on the wire is a whole, known frame: the calibration never
                # interleaved with a read on the shared port.
                assert set(device.requests) <= {WINSEN_READ, WINSEN_ZERO, WINSEN_SPAN_2000}, device.requests
                # Sampling goes on after the calibration.
                n = device.requests.count(WINSEN_READ)
                await eventually(lambda: device.requests.count(WINSEN_READ) > n)
                assert Journal(gateway.state_dir).read() is None

        asyncio.run(scenario())


def test_cubic_zero_acked_span_refused_nak_fails_and_no_calibration_driver_rejected(gateway, admin):
    cubic = CubicDevice(percent_vol=0.5)
    dynament = DynamentDevice(reading=2.5)
    with PtyHost(cubic, link=gateway.state_dir / "cubic") as c_host, \
            PtyHost(dynament, link=gateway.state_dir / "dyn") as d_host:
        conf = gateway.conf(sensors=[
            _sensor("ch4-c", "cubic-sjh5", c_host.port),
            _sensor("ch4-d", "dynament", d_host.port, unit="%LEL"),
        ])

        async def scenario() -> None:
            agent = Agent(conf)
            async with running(agent):
                await eventually(lambda: CUBIC_READ in cubic.requests and dynament.requests)
                zero = await asyncio.to_thread(_calibrate, admin, gateway, "ch4-c", "zero")
                ex = await _final(admin, zero)
                assert ex["status"] == "SUCCEEDED", ex
                assert cubic.zeroed == 1 and CUBIC_ZERO in cubic.requests

                # Span: the driver refuses rather than guessing the gas number; nothing is sent.
                sent = len(cubic.requests)
                span = await asyncio.to_thread(_calibrate, admin, gateway, "ch4-c", "span", 2.5)
                ex = await _final(admin, span)
                assert ex["status"] == "REJECTED", ex
                assert "supports zero calibration only" in ex["statusDetails"]["reason"], ex
                assert set(cubic.requests[sent:]) <= {CUBIC_READ} and cubic.zeroed == 1

                # The device answers the zero command with a NAK: FAILED with the driver's reason.
                cubic.fault = Fault.NAK
                nak = await asyncio.to_thread(_calibrate, admin, gateway, "ch4-c", "zero")
                ex = await _final(admin, nak)
                cubic.fault = Fault.NONE
                assert ex["status"] == "FAILED", ex
                assert ex["statusDetails"]["reason"].startswith("nak:"), ex
                assert str(c_host.port) in ex["statusDetails"]["reason"], ex
                assert cubic.requests.count(CUBIC_ZERO) == 2  # it was sent; the device said no

                # Dynament offers no calibration: REJECTED, and only read requests reach it.
                dyn = await asyncio.to_thread(_calibrate, admin, gateway, "ch4-d", "zero")
                ex = await _final(admin, dyn)
                assert ex["status"] == "REJECTED", ex
                assert ex["statusDetails"]["reason"] == \
                    "sensor 'ch4-d' (driver dynament) does not support calibration", ex
                assert len(set(dynament.requests)) == 1, set(dynament.requests)  # the read request only

                # A sensor that is not configured here.
                gone = await asyncio.to_thread(_calibrate, admin, gateway, "ch4-x", "zero")
                ex = await _final(admin, gone)
                assert ex["status"] == "REJECTED" and "not running on this device" in ex["statusDetails"]["reason"]

        asyncio.run(scenario())
