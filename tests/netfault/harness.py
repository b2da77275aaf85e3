"""Link faults for real: two network namespaces joined by a veth pair, the emulator (mosquitto
with mutual TLS, the telemetry recorder) in one, the agent in the other, and a tc filter on the
agent's end that drops every IP packet in both directions - a half-open link, as a dead 5G bearer
looks to TCP: no FIN, no RST, nothing.

netem is not built into every kernel (it is not here); a classic-BPF program attached with
``tc filter ... bpf da`` that returns TC_ACT_SHOT (2) for every packet works wherever cls_bpf and
the clsact qdisc do. Everything the harness creates (two namespaces, the veth pair inside them,
10.250.0.0/30) lives only inside its own namespaces and is removed by ``close`` (also after a
failure); the host's own network is never touched. Needs root (CI runs as root).

Used by tests/netfault/ and bench/bench_link.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import ROOT, AgentProc

BROKER_IP = "10.250.0.1"
AGENT_IP = "10.250.0.2"
# Classic BPF for `tc filter ... bpf da`: drop IPv4 (TC_ACT_SHOT = 2), let the rest pass
# (TC_ACT_UNSPEC = -1). ARP keeps working, as it does on a cellular interface whose bearer died
# somewhere beyond the first hop: the neighbour never fails, so TCP is not told "host unreachable"
# and only the agent's own timers can notice.
#   ldh [12]; jeq #0x0800, drop, pass; drop: ret #2; pass: ret #-1
DROP_IPV4 = "4,40 0 0 12,21 0 1 2048,6 0 0 2,6 0 0 4294967295"


class Unavailable(RuntimeError):
    """Namespaces, veth or the tc BPF drop filter cannot be used here (not root, old kernel)."""


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise Unavailable(f"ip {' '.join(args)}: {r.stderr.strip()}")


def _tc(*args: str, check: bool = True) -> bool:
    r = subprocess.run(["tc", *args], capture_output=True, text=True, timeout=20)
    if r.returncode != 0 and check:
        raise Unavailable(f"tc {' '.join(args)}: {r.stderr.strip()}")
    return r.returncode == 0


class NetFault:
    """``with NetFault() as net:`` two fresh namespaces ``net.broker_ns`` and ``net.agent_ns``.
    ``blackhole()`` drops everything on the agent's link, ``restore()`` lifts it; ``link_down()`` /
    ``link_up()`` flap the agent's interface instead (the kernel then sends netlink events)."""

    def __init__(self, tag: str | None = None) -> None:
        tag = tag or f"{os.getpid() % 100000}"
        self.broker_ns = f"mlf-b{tag}"
        self.agent_ns = f"mlf-a{tag}"
        self.broker_if = f"mlfb{tag}"[:15]
        self.agent_if = f"mlfa{tag}"[:15]
        self.blackholed = False

    def open(self) -> NetFault:
        if os.geteuid() != 0:
            raise Unavailable("network namespaces need root")
        self.close()  # leftovers of a crashed run with the same pid
        try:
            _ip("netns", "add", self.broker_ns)
            _ip("netns", "add", self.agent_ns)
            _ip("-n", self.broker_ns, "link", "add", self.broker_if, "type", "veth", "peer", "name", self.agent_if,
                "netns", self.agent_ns)
            _ip("-n", self.broker_ns, "addr", "add", f"{BROKER_IP}/30", "dev", self.broker_if)
            _ip("-n", self.agent_ns, "addr", "add", f"{AGENT_IP}/30", "dev", self.agent_if)
            for ns, dev in ((self.broker_ns, self.broker_if), (self.agent_ns, self.agent_if)):
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "link", "set", dev, "up")
            # Prove the drop filter works here before anyone relies on it, then lift it again.
            self.blackhole()
            self.restore()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove both namespaces (the veth pair goes with them). Safe to call twice."""
        for ns in (self.agent_ns, self.broker_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.blackholed = False

    def __enter__(self) -> NetFault:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def blackhole(self) -> None:
        """Every IP packet on the agent's link vanishes, both ways. The interface stays up and no
        netlink event is sent: only the agent's own timers can tell."""
        if self.blackholed:
            return
        # On ingress at both ends, never on egress: a packet dropped by the sender's own qdisc is
        # reported to its TCP (a local drop), which then gives up within seconds - nothing like a
        # packet that leaves and vanishes on the way.
        self.blackholed = True
        for ns, dev in self._ends():
            _tc("-n", ns, "qdisc", "add", "dev", dev, "clsact")
            _tc("-n", ns, "filter", "add", "dev", dev, "ingress", "bpf", "da", "bytecode", DROP_IPV4)

    def restore(self) -> None:
        if self.blackholed:
            for ns, dev in self._ends():
                _tc("-n", ns, "qdisc", "del", "dev", dev, "clsact", check=False)
            self.blackholed = False

    def _ends(self) -> tuple[tuple[str, str], tuple[str, str]]:
        return (self.agent_ns, self.agent_if), (self.broker_ns, self.broker_if)

    def link_down(self) -> None:
        _ip("-n", self.agent_ns, "link", "set", self.agent_if, "down")

    def link_up(self) -> None:
        _ip("-n", self.agent_ns, "link", "set", self.agent_if, "up")

    def exec_in(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]


def prepare_pki(state_dir: Path) -> None:
    """The emulator's CA and a server certificate that also names BROKER_IP (the agent verifies the
    broker by the address it dials); the emulator reuses both when it starts."""
    from emulator.pki import CertificateAuthority

    ca = CertificateAuthority.load_or_create(state_dir / "pki")
    ca.ensure_server(("localhost", "127.0.0.1", BROKER_IP))


class EmulatorInNs:
    """``methane-agent emulator serve --host 0.0.0.0`` inside the broker namespace."""

    def __init__(self, net: NetFault, state_dir: Path, log: Path) -> None:
        self.net = net
        self.state_dir = state_dir
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None

    def start(self, timeout_s: float = 60) -> EmulatorInNs:
        prepare_pki(self.state_dir)
        args = [*self.net.exec_in(self.net.broker_ns), sys.executable, "-m", "agent", "emulator", "serve",
                "--state-dir", str(self.state_dir), "--host", "0.0.0.0"]
        if self.port is not None:
            args += ["--port", str(self.port)]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if m := re.search(r"emulator ready .*port=(\d+)", line):
                self.port = int(m.group(1))
                return self
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"emulator did not start in the broker namespace: {self.log.read_text()[-2000:]}")

    def info(self) -> Any:
        from emulator import EmulatorInfo

        return EmulatorInfo.load(self.state_dir)

    def telemetry(self, thing: str, upto: int | None = None) -> dict[str, Any]:
        args = [sys.executable, "-m", "agent", "emulator", "telemetry", "--state-dir", str(self.state_dir),
                "--thing", thing, "--json"]
        if upto is not None:
            args += ["--upto", str(upto)]
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"telemetry: {r.stderr}")
        out: dict[str, Any] = json.loads(r.stdout)
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


def agent_config(path: Path, info: Any, port: int, state: Path, *, link_keys: bool = True, **over: Any) -> Path:
    """The agent dialling the broker across the veth link, at ``over['interval']`` s per reading
    (4 simulated channels), keep-alive ``over['keep_alive_s']`` (default 30). ``link_keys=False``
    leaves out the keys added with the network watch, for the agent as it was before them (the
    bench's baseline)."""
    ka = over.get("keep_alive_s", 30)
    link = f"""ping_timeout_ms = {over.get("ping_timeout_ms", ka * 500)}
probe_interval_s = {over.get("probe_interval_s", 5.0)}
network_events = "{over.get("network_events", "netlink")}"
""" if link_keys else ""
    text = f"""
state_dir = "{state}"
[device]
thing_name = "{info.device.thing_name}"
site_id = "site-1"  # the emulator registers gw-0001 at site-1; its policy binds topics to it
[connection]
endpoint = "{BROKER_IP}"
port = {port}
ca_file = "{info.ca_file}"
cert_file = "{info.device.cert_file}"
key_file = "{info.device.key_file}"
keep_alive_s = {ka}
connect_timeout_ms = {over.get("connect_timeout_ms", 10000)}
max_reconnect_delay_ms = {over.get("max_reconnect_delay_ms", 60000)}
{link}[spool]
commit_interval_s = 0.2
min_free_disk_bytes = 1048576
[uplink]
batch_max_age_s = {over.get("batch_max_age_s", 1.0)}
ack_timeout_s = {over.get("ack_timeout_s", 30)}
retry_max_delay_s = {over.get("retry_max_delay_s", 60)}
[logging]
level = "INFO"
[[sensors]]
id = "sim-1"
driver = "simulated"
interval_s = {over.get("interval", 0.08)}
settings = {{ seed = 7 }}
"""
    path.write_text(text)
    return path


def agent_in_ns(net: NetFault, config: Path, log: Path, env: dict[str, str] | None = None) -> AgentProc:
    """``methane-agent run`` inside the agent namespace (tests/e2e's AgentProc behind ``ip netns exec``)."""
    return AgentProc(config, log, env, prefix=net.exec_in(net.agent_ns))
