"""`methane-agent run` as systemd runs it: a real notify socket, WATCHDOG_USEC, SIGHUP and SIGTERM,
and (on kernels with PR_SET_MDWE) the same memory policy as MemoryDenyWriteExecute=yes."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.spool import Spool
from tests.eventually import eventually

CONFIG = """state_dir = "{state}"
[device]
thing_name = "gw-0001"
[connection]
endpoint = "{endpoint}"
port = {port}
{tls}
[spool]
commit_interval_s = 0.2
min_free_disk_bytes = 1024
[[sensors]]
id = "sim-1"
driver = "simulated"
interval_s = {interval}
"""


def write_config(
    path: Path, state: Path, interval: float = 0.05, endpoint: str = "", port: int = 8883, tls: dict | None = None
) -> None:
    lines = "\n".join(f'{k} = "{v}"' for k, v in (tls or {}).items())
    path.write_text(CONFIG.format(state=state, endpoint=endpoint, port=port, tls=lines, interval=interval))


def start_agent(config: Path, notify_path: str, tmp_path: Path, prefix: list[str] | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_", "METHANE_AGENT__"))}
    env.update(NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="1000000")
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [*(prefix or []), sys.executable, "-m", "agent", "run", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def wait_log(tmp_path: Path, pattern: str, timeout: float = 10.0) -> str:
    log = tmp_path / "agent.log"

    def matched() -> str:
        text = log.read_text(errors="replace")
        return text if re.search(pattern, text) else ""

    return eventually(matched, timeout, what=lambda: f"{pattern!r} not in log:\n{log.read_text(errors='replace')}")


def test_ready_watchdog_status_reload_and_stop(notify_socket, tmp_path):
    config = tmp_path / "agent.toml"
    write_config(config, tmp_path / "state")
    proc = start_agent(config, notify_socket.path, tmp_path)
    try:
        msgs = notify_socket.wait_for(lambda m: any(x.startswith("READY=1") for x in m), timeout=30)
        ready = next(x for x in msgs if x.startswith("READY=1"))
        status = dict(line.split("=", 1) for line in ready.split("\n"))["STATUS"]
        assert "spool=" in status and "last publish" in status, status
        assert "offline-mode" in status
        # WATCHDOG_USEC=1 s: pings every 0.5 s while the loop beats.
        notify_socket.wait_for(lambda m: m.count("WATCHDOG=1") >= 3, timeout=10)

        # SIGHUP with an invalid file: refused, nothing changes, the agent keeps running and is ready again.
        good = config.read_text()
        config.write_text(good.replace("commit_interval_s = 0.2", "commit_interval_s = -1"))
        n_ready = sum(x.startswith("READY=1") for x in notify_socket.drain())
        proc.send_signal(signal.SIGHUP)
        notify_socket.wait_for(lambda m: sum(x.startswith("READY=1") for x in m) > n_ready, timeout=10)
        assert any(x.startswith("RELOADING=1\nMONOTONIC_USEC=") for x in notify_socket.received)
        wait_log(tmp_path, r"reload refused.*commit_interval_s")
        assert proc.poll() is None
        # A valid change is applied through the same path.
        config.write_text(good.replace("commit_interval_s = 0.2", "commit_interval_s = 0.3"))
        proc.send_signal(signal.SIGHUP)
        wait_log(tmp_path, r"config applied.*changed=spool")

        # SIGTERM: STOPPING=1, exit 0 well inside TimeoutStopSec, every reading committed.
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(25) == 0
        assert time.monotonic() - t0 < 10
        assert "STOPPING=1" in [x.split("\n")[0] for x in notify_socket.drain()]
        log = wait_log(tmp_path, r"msg=stopped")
        m = re.search(r"msg=stopped spool_readings=(\d+)", log)
        assert m, log
        committed = int(m.group(1))
        sp = Spool(tmp_path / "state" / "spool.db", max_bytes=1 << 30, min_free_disk_bytes=0, commit_interval_s=1)
        sp.open()
        try:
            assert sp.stats().readings == committed > 0
        finally:
            sp.close()
    finally:
        stop(proc)


@pytest.mark.parametrize("breakage", ["latin-1", "directory"])
def test_failed_reload_keeps_the_config_says_so_and_leaves_reloading(notify_socket, tmp_path, breakage):
    """A config that cannot even be read (not UTF-8, or a directory where the file was) on SIGHUP:
    the agent keeps running on the old config, logs why, reports it in status, and tells systemd
    READY=1 again (else the unit stays "reloading")."""
    from agent.status import query

    config = tmp_path / "agent.toml"
    write_config(config, tmp_path / "state")
    good = config.read_text()
    proc = start_agent(config, notify_socket.path, tmp_path)
    try:
        notify_socket.wait_for(lambda m: any(x.startswith("READY=1") for x in m), timeout=30)
        if breakage == "latin-1":
            config.write_bytes((good + "# café\n").encode("latin-1"))
            reason = "not UTF-8 text"
        else:
            config.unlink()
            config.mkdir()
            reason = "is a directory"
        n_ready = sum(x.startswith("READY=1") for x in notify_socket.drain())
        proc.send_signal(signal.SIGHUP)
        msgs = notify_socket.wait_for(lambda m: sum(x.startswith("READY=1") for x in m) > n_ready, timeout=15)
        reloading = max(i for i, x in enumerate(msgs) if x.startswith("RELOADING=1"))
        assert any(x.startswith("READY=1") for x in msgs[reloading:]), msgs
        wait_log(tmp_path, rf"reload refused; the running configuration is unchanged.*{reason}")
        assert proc.poll() is None
        st = query(tmp_path / "state" / "status.sock")
        assert reason in st["agent"]["last_reload_error"] and st["agent"]["reloads"] == 0
    finally:
        stop(proc)


def _mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(66, 0, 0, 0, 0) >= 0  # PR_GET_MDWE (Linux >= 6.3)


MDWE_WRAPPER = (
    "import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); "
    "assert libc.prctl(65, 1, 0, 0, 0) == 0, 'PR_SET_MDWE failed'; "  # PR_MDWE_REFUSE_EXEC_GAIN, kept across exec
    "os.execv(sys.argv[1], sys.argv[1:])"
)


@pytest.mark.skipif(not _mdwe_supported(), reason="kernel without PR_SET_MDWE (Linux < 6.3)")
def test_agent_tolerates_memory_deny_write_execute(notify_socket, tmp_path, emulator):
    """MemoryDenyWriteExecute=yes refuses writable+executable mappings. The kernel's PR_SET_MDWE
    (Linux 6.3, added as the native form of systemd's filter) applies the same rule and survives
    exec, so the agent runs under it here: the daemon (sqlite, zlib, ctypes adjtimex, sd_notify)
    and the doctor (awscrt MQTT5 over mutual TLS, ssl, cryptography) must all work."""
    mdwe = [sys.executable, "-c", MDWE_WRAPPER]
    config = tmp_path / "agent.toml"
    write_config(config, tmp_path / "state")
    proc = start_agent(config, notify_socket.path, tmp_path, prefix=mdwe)
    try:
        notify_socket.wait_for(lambda m: any(x.startswith("READY=1") for x in m), timeout=30)
        notify_socket.wait_for(lambda m: m.count("WATCHDOG=1") >= 2, timeout=10)
        assert re.search(r"^MemoryDenyWriteExecute:\s+1", Path(f"/proc/{proc.pid}/status").read_text(), re.M) or (
            "MemoryDenyWriteExecute" not in Path(f"/proc/{proc.pid}/status").read_text()
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(25) == 0
    finally:
        stop(proc)

    info = emulator.info
    online = tmp_path / "online.toml"
    write_config(
        online,
        tmp_path / "state2",
        endpoint=info.endpoint,
        port=info.port,
        tls={"ca_file": info.ca_file, "cert_file": info.device.cert_file, "key_file": info.device.key_file},
    )
    r = subprocess.run(
        [*mdwe, sys.executable, "-m", "agent", "doctor", "--config", str(online), "--skip", "sensors"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert "PASS tls:" in r.stdout and "PASS mqtt:" in r.stdout, r.stdout + r.stderr


def test_online_agent_keeps_its_watchdog_fed(notify_socket, tmp_path, emulator):
    """Connected to the broker, the main loop must keep beating: no STATUS=unhealthy, pings continue."""
    info = emulator.info
    config = tmp_path / "agent.toml"
    write_config(
        config,
        tmp_path / "state",
        interval=0.1,
        endpoint=info.endpoint,
        port=info.port,
        tls={"ca_file": info.ca_file, "cert_file": info.device.cert_file, "key_file": info.device.key_file},
    )
    proc = start_agent(config, notify_socket.path, tmp_path)
    try:
        notify_socket.wait_for(lambda m: any(x.startswith("READY=1") for x in m), timeout=30)
        wait_log(tmp_path, r"msg=connected")
        n = notify_socket.drain().count("WATCHDOG=1")
        notify_socket.wait_for(lambda m: m.count("WATCHDOG=1") >= n + 6, timeout=10)
        assert not [x for x in notify_socket.received if "unhealthy" in x], notify_socket.received
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(25) == 0
    finally:
        stop(proc)
