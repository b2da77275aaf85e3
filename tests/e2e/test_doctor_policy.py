"""`methane-agent doctor`'s MQTT round trip passes under the shipped least-privilege device policy
(config/iot-policy-device.json), enforced by the emulator's policy plugin as IoT Core would."""

from __future__ import annotations

import subprocess
import sys

from tests.e2e.conftest import ROOT, write_config


def test_doctor_round_trip_allowed_by_the_device_policy(fleet_emulator, tmp_path):
    emu = fleet_emulator
    config = write_config(tmp_path / "agent.toml", emu.info, tmp_path / "state")
    r = subprocess.run(
        [sys.executable, "-m", "agent", "doctor", "--config", str(config), "--skip", "clock", "--skip", "sensors"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )
    assert "PASS mqtt:" in r.stdout, r.stdout + r.stderr
    # Topics the policy does not grant fail the same check: another thing's, and the device's own
    # under a site other than the one recorded on its thing.
    for topic in ("dt/methane/site-1/other-thing/doctor", "dt/methane/other-site/gw-0001/doctor"):
        r = subprocess.run(
            [sys.executable, "-m", "agent", "doctor", "--config", str(config), "--skip", "clock", "--skip",
             "sensors", "--topic", topic],
            cwd=ROOT, capture_output=True, text=True, timeout=90,
        )
        assert "FAIL mqtt:" in r.stdout, topic + r.stdout + r.stderr
