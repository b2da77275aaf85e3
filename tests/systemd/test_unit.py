"""The unit file passes `systemd-analyze verify` with no output and scores <= 2.0 offline.

verify exits 0 even when it reports problems, so the tests fail on any output. verify also checks
that ExecStart exists: the unit is verified inside a temporary root (``--root``) holding the unit,
a stand-in executable at the ExecStart path, /bin/kill for ExecReload and a copy of the host's
system units (sysinit.target and friends must resolve)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "methane-agent.service"
EXEC = "/opt/methane-agent/venv/bin/methane-agent"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


def make_root(root: Path, unit_text: str) -> Path:
    (root / "etc/systemd/system").mkdir(parents=True)
    unit = root / "etc/systemd/system/methane-agent.service"
    unit.write_text(unit_text)
    exe = root / EXEC.lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    (root / "bin").mkdir()
    shutil.copy2("/bin/kill", root / "bin/kill")
    for units in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if Path(units).is_dir():
            shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
            break
    return unit


def verify(root: Path) -> str:
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", "/etc/systemd/system/methane-agent.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (r.stdout + r.stderr).strip()


def exposure(unit: Path, cwd: Path) -> float:
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    m = re.search(r"Overall exposure level for methane-agent\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


def test_unit_verifies_clean(tmp_path):
    make_root(tmp_path, UNIT.read_text())
    assert verify(tmp_path) == ""


def test_verify_check_can_fail(tmp_path):
    """The clean-verify assertion above means something: a typo in the unit produces output."""
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=strickt\nProtectSytem=yes")
    make_root(tmp_path, broken)
    out = verify(tmp_path)
    assert "strickt" in out and "ProtectSytem" in out


def test_missing_exec_is_reported(tmp_path):
    make_root(tmp_path, UNIT.read_text())
    (tmp_path / EXEC.lstrip("/")).unlink()
    assert "not executable" in verify(tmp_path)


def test_security_exposure_at_most_2(tmp_path):
    assert exposure(UNIT, tmp_path) <= 2.0


def test_exposure_check_can_fail(tmp_path):
    weak = tmp_path / "methane-agent.service"
    text = UNIT.read_text()
    for directive in (
        "CapabilityBoundingSet=",
        "SystemCallFilter=",
        "ProtectSystem=",
        "PrivateUsers=",
        "RestrictNamespaces=",
    ):
        text = "\n".join(line for line in text.splitlines() if not line.startswith(directive))
    weak.write_text(text)
    assert exposure(weak, tmp_path) > 2.0


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_has_the_contract_the_agent_relies_on():
    d = directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["ExecStart"] == [f"{EXEC} run --config /etc/methane-agent/agent.toml"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["Restart"] == ["always"]
    assert d["User"] == ["methane-agent"]
    assert set(d["SupplementaryGroups"][0].split()) == {"dialout", "i2c"}
    assert d["StateDirectoryMode"] == ["0700"] and d["UMask"] == ["0077"]
    assert d["DevicePolicy"] == ["closed"]
    allowed = {v.split()[0] for v in d["DeviceAllow"]}
    assert allowed == {"char-ttyS", "char-ttyAMA", "char-ttyUSB", "char-ttyACM", "char-i2c"}
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    # Stop must finish inside systemd's patience, and the watchdog must leave the agent time to ping.
    assert int(d["TimeoutStopSec"][0]) >= 10
    assert int(d["WatchdogSec"][0]) >= 10
