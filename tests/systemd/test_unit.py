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


def _proc_mount_options(d: dict[str, list[str]]) -> str:
    """The procfs options systemd derives from ProtectProc= and ProcSubset= (systemd.exec(5))."""
    opts = []
    protect = d.get("ProtectProc", ["default"])[-1]
    if protect != "default":
        opts.append(f"hidepid={protect}")
    if d.get("ProcSubset", ["all"])[-1] == "pid":
        opts.append("subset=pid")
    return ",".join(opts) or "defaults"


READS = """
from agent.remote.jobs.actions import ActionEnv
from pathlib import Path
print(ActionEnv().boot_id())
print(len(Path("/proc/net/if_inet6").read_text()) >= 0)
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_the_units_proc_shows_what_the_agent_reads():
    """/proc mounted as the unit has systemd mount it (in a private mount and pid namespace): the
    reboot job's boot id and the network info of the reported status must stay readable."""
    import sys

    opts = _proc_mount_options(directives(UNIT.read_text()))
    script = f"mount -t proc -o {opts} proc /proc && exec {sys.executable} -c '{READS}'"
    r = subprocess.run(["unshare", "--mount", "--pid", "--fork", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    if "Operation not permitted" in r.stderr and "mount" in r.stderr:
        pytest.skip("cannot mount /proc here (needs root in a user namespace)")
    assert r.returncode == 0, f"proc options {opts!r}: {r.stderr}"
    boot_id, net = r.stdout.split()
    assert re.fullmatch(r"[0-9a-f-]{36}", boot_id) and net == "True"


def test_a_crash_loop_never_leaves_the_unit_failed_for_good():
    """systemd stops restarting once more than StartLimitBurst starts fall within
    StartLimitIntervalSec (default 10 per 10 s, from DefaultStartLimit*): with Restart=always a
    crash loop must never hit that, or an unattended site stays down until someone comes."""
    d = directives(UNIT.read_text())
    interval = float(d.get("StartLimitIntervalSec", ["10"])[-1].removesuffix("s"))
    burst = int(d.get("StartLimitBurst", ["5"])[-1])
    restart_sec = float(d["RestartSec"][-1].removesuffix("s"))
    starts_per_interval = interval / restart_sec + 1
    assert interval == 0 or burst > starts_per_interval, (interval, burst, restart_sec)
