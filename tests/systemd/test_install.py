"""systemd/install.sh into temporary roots: idempotent, right owners and modes, config never
overwritten, uninstall keeps data, purge removes it."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.systemd.test_unit import make_root, verify

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "systemd" / "install.sh"
IS_ROOT = os.geteuid() == 0


def seed_accounts(root: Path, *, with_i2c: bool = False) -> None:
    """A minimal /etc as a fresh Debian image has it, so useradd --root can work in the root."""
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    groups = ["root:x:0:", "dialout:x:20:"] + (["i2c:x:997:"] if with_i2c else [])
    (etc / "group").write_text("\n".join(groups) + "\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("".join(f"{g.split(':')[0]}:*::\n" for g in groups))
    (etc / "shadow").chmod(0o640)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            content = os.readlink(p)
        elif p.is_file():
            content = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            content = None
        out[str(p.relative_to(root))] = (stat.filemode(st.st_mode), st.st_uid, st.st_gid, content)
    return out


def ids(root: Path, name: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == name:
            return int(f[2]), int(f[3])
    raise AssertionError(f"user {name} not in {root}/etc/passwd")


def group_members(root: Path, group: str) -> list[str]:
    for line in (root / "etc/group").read_text().splitlines():
        f = line.split(":")
        if f[0] == group:
            return [m for m in f[3].split(",") if m]
    raise AssertionError(f"group {group} not in {root}/etc/group")


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


@pytest.mark.skipif(not IS_ROOT, reason="owners can only be set as root")
def test_install_twice_gives_the_same_tree(tmp_path):
    seed_accounts(tmp_path)
    first = run("--root", str(tmp_path), "--venv-from", sys.prefix)
    assert "methane-agent provision --config /etc/methane-agent/agent.toml" in first.stdout
    assert "systemctl enable --now methane-agent" in first.stdout
    tree = snapshot(tmp_path)
    second = run("--root", str(tmp_path), "--venv-from", sys.prefix)
    assert "keeping existing /etc/methane-agent/agent.toml" in second.stdout
    assert "created" not in second.stdout
    assert snapshot(tmp_path) == tree

    uid, gid = ids(tmp_path, "methane-agent")
    assert uid < 1000  # a system account
    expect = {
        "etc/methane-agent": (0o750, 0, gid),
        "etc/methane-agent/agent.toml": (0o640, 0, gid),
        "var/lib/methane-agent": (0o700, uid, gid),
        "var/lib/methane-agent/claim": (0o700, uid, gid),  # claim files; the agent deletes them once provisioned
        "var/log/methane-agent": (0o750, uid, gid),
        "opt/methane-agent": (0o755, 0, 0),
        "etc/systemd/system/methane-agent.service": (0o644, 0, 0),
    }
    for rel, (m, u, g) in expect.items():
        st = (tmp_path / rel).lstat()
        assert (mode(tmp_path / rel), st.st_uid, st.st_gid) == (m, u, g), rel
    assert (tmp_path / "etc/methane-agent/agent.toml").read_text() == (REPO / "config/agent.example.toml").read_text()
    assert (tmp_path / "etc/systemd/system/methane-agent.service").read_text() == (
        REPO / "systemd/methane-agent.service"
    ).read_text()
    assert os.readlink(tmp_path / "opt/methane-agent/venv") == sys.prefix
    # Plain Debian has no i2c group: created, with the udev rule that gives it the buses.
    assert "methane-agent" in group_members(tmp_path, "i2c")
    assert "methane-agent" in group_members(tmp_path, "dialout")
    assert 'SUBSYSTEM=="i2c-dev", GROUP="i2c"' in (tmp_path / "etc/udev/rules.d/60-methane-agent-i2c.rules").read_text()
    assert (tmp_path / "etc/modules-load.d/methane-agent.conf").read_text().split()[-3:] == [
        "i2c-dev",
        "usbserial",
        "cdc_acm",
    ]


@pytest.mark.skipif(not IS_ROOT, reason="useradd needs root")
def test_existing_i2c_group_is_used_not_recreated(tmp_path):
    seed_accounts(tmp_path, with_i2c=True)
    out = run("--root", str(tmp_path), "--skip-venv").stdout
    assert "created group i2c" not in out
    assert "i2c:x:997:methane-agent" in (tmp_path / "etc/group").read_text()
    assert not (tmp_path / "etc/udev/rules.d/60-methane-agent-i2c.rules").exists()


def test_user_config_is_never_overwritten(tmp_path):
    conf = tmp_path / "etc/methane-agent/agent.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('state_dir = "/srv/agent"\n')
    conf.chmod(0o600)
    run("--root", str(tmp_path), "--skip-venv")
    assert conf.read_text() == 'state_dir = "/srv/agent"\n'
    assert mode(conf) == 0o600


def test_without_accounts_in_the_root_user_creation_is_skipped(tmp_path):
    out = run("--root", str(tmp_path), "--skip-venv").stdout
    assert "skipping creation of user methane-agent" in out
    assert not (tmp_path / "etc/passwd").exists()
    assert mode(tmp_path / "var/lib/methane-agent") == 0o700
    assert mode(tmp_path / "etc/methane-agent") == 0o750
    assert not (tmp_path / "opt/methane-agent/venv").exists()


@pytest.mark.skipif(not IS_ROOT, reason="useradd needs root")
def test_uninstall_keeps_data_and_purge_removes_it(tmp_path):
    seed_accounts(tmp_path)
    run("--root", str(tmp_path), "--venv-from", sys.prefix)
    spool = tmp_path / "var/lib/methane-agent/spool.db"
    spool.write_bytes(b"readings")
    out = run("--root", str(tmp_path), "--uninstall").stdout
    assert "kept /etc/methane-agent" in out
    assert not (tmp_path / "etc/systemd/system/methane-agent.service").exists()
    assert not (tmp_path / "opt/methane-agent").exists()
    assert not (tmp_path / "etc/udev/rules.d/60-methane-agent-i2c.rules").exists()
    assert not (tmp_path / "etc/modules-load.d/methane-agent.conf").exists()
    assert "methane-agent:" not in (tmp_path / "etc/passwd").read_text()
    assert spool.read_bytes() == b"readings"
    assert (tmp_path / "etc/methane-agent/agent.toml").exists()
    # Uninstalling again is harmless; reinstalling keeps the data and the config.
    run("--root", str(tmp_path), "--uninstall")
    run("--root", str(tmp_path), "--skip-venv")
    assert spool.read_bytes() == b"readings"
    run("--root", str(tmp_path), "--uninstall", "--purge")
    for rel in ("etc/methane-agent", "var/lib/methane-agent", "var/log/methane-agent", "opt/methane-agent"):
        assert not (tmp_path / rel).exists(), rel


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--purge"], "--purge only goes with --uninstall"),
        (["--bogus"], "unknown argument: --bogus"),
        (["--venv-from", "/nonexistent"], "is not a venv"),
        (["--root"], "--root needs a directory"),
        (["--python", "/bin/false"], "older than 3.11"),
    ],
)
def test_bad_arguments_are_refused_and_change_nothing(tmp_path, args, message):
    target = tmp_path / "root"
    target.mkdir()
    r = run("--root", str(target), *args, check=False) if args != ["--root"] else run(*args, check=False)
    assert r.returncode != 0
    assert message in r.stderr
    if args not in (["--venv-from", "/nonexistent"], ["--python", "/bin/false"]):
        assert list(target.iterdir()) == []


def test_missing_root_is_refused(tmp_path):
    r = run("--root", str(tmp_path / "nope"), check=False)
    assert r.returncode != 0 and "is not a directory" in r.stderr


@pytest.mark.slow
def test_real_venv_from_the_hash_pinned_lock_then_verify(tmp_path):
    """The real pip path: venv, `pip install --require-hashes -r requirements.lock`, the project with
    --no-deps; the installed CLI works and the installed unit verifies clean inside the root."""
    python = shutil.which("python3.11") or sys.executable
    # Install from a snapshot of the sources: others may edit the shared tree while pip runs, and
    # the venv is keyed by a hash of the sources.
    src = tmp_path / "src"
    src.mkdir()
    for part in (
        "requirements.lock",
        "pyproject.toml",
        "README.md",
        "agent",
        "drivers",
        "provisioning",
        "iotmqtt",
        "emulator",
        "cloud",
        "config",
        "systemd",
        "docs",
    ):
        if (REPO / part).is_dir():
            shutil.copytree(REPO / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif (REPO / part).exists():
            shutil.copy2(REPO / part, src / part)
    script = src / "systemd/install.sh"
    tmp_path = tmp_path / "root"
    tmp_path.mkdir()

    def run(*args):
        r = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    run("--root", str(tmp_path), "--python", python)
    venv = tmp_path / "opt/methane-agent/venv"
    assert venv.is_symlink() and os.readlink(venv).startswith("venvs/")
    exe = venv / "bin/methane-agent"
    r = subprocess.run(
        [str(exe), "config", "validate", str(tmp_path / "etc/methane-agent/agent.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    again = run("--root", str(tmp_path), "--python", python).stdout
    assert "is up to date" in again
    assert len(list((tmp_path / "opt/methane-agent/venvs").iterdir())) == 1
    # systemd-analyze verify against the installed tree (host system units copied in for targets).
    if shutil.which("systemd-analyze"):
        vroot = tmp_path / "verify"
        make_root(vroot, (tmp_path / "etc/systemd/system/methane-agent.service").read_text())
        assert verify(vroot) == ""
