from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from awscrt import mqtt5

from emulator import Emulator, EmulatorInfo
from emulator.broker import AclRule, default_acl, render_acl
from emulator.state import STATE_FILE, StateError
from tests.mqtt_client import MqttClient

REPO = Path(__file__).resolve().parents[2]


def test_render_acl_patterns_first_then_user_blocks():
    text = render_acl(
        [
            AclRule("readwrite", "#", "admin"),
            AclRule("read", "a/%u/#"),
            AclRule("write", "$aws/#", "admin"),
            AclRule("readwrite", "$aws/certificates/create/#", "claim-1"),
        ]
    )
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert lines == [
        "pattern read a/%u/#",
        "user admin",
        "topic readwrite #",
        "topic write $aws/#",
        "user claim-1",
        "topic readwrite $aws/certificates/create/#",
    ]


@pytest.mark.parametrize(
    ("access", "topic", "user"),
    [("read", "a\nuser admin", None), ("read", "", None), ("read", "t", "ad min"), ("read", "t", "x\n")],
)
def test_acl_rule_rejects_injection(access, topic, user):
    with pytest.raises(ValueError):
        AclRule(access, topic, user)


def test_default_acl_claims_must_start_with_claim():
    with pytest.raises(ValueError, match="must start with 'claim'"):
        default_acl(["gw-0001"])
    text = render_acl(default_acl(["claim-a"]))
    assert "user claim-a\ntopic readwrite $aws/certificates/create/#" in text
    assert "pattern readwrite $aws/things/%u/#" in text
    assert "topic readwrite $aws/#" in text  # admin: '#' alone does not cover '$' topics


def test_emulator_json_and_state_persist_across_restarts(tmp_path):
    state = tmp_path / "emu"
    with Emulator(state, thing="site7-gw") as emu:
        info = emu.info
        raw = json.loads((state / STATE_FILE).read_text())
        assert raw["endpoint"] == "localhost" and raw["port"] == info.port
        assert raw["device"]["thing_name"] == "site7-gw"
        for key in ("ca_file", "admin_cert_file", "admin_key_file"):
            assert Path(raw[key]).is_file()
        assert EmulatorInfo.load(state) == info
        ca_pem = info.ca_file.read_text()
        dev_pem = info.device.cert_file.read_text()
        port = info.port
    with Emulator(state, thing="site7-gw") as emu:  # same CA, same certs, previous port
        assert emu.info.ca_file.read_text() == ca_pem
        assert emu.info.device.cert_file.read_text() == dev_pem
        assert emu.info.port == port
        with MqttClient.for_device(emu.info) as dev:  # the old identity still works
            assert dev.publish("dt/methane/s/site7-gw/t", b"x").reason_code == (
                mqtt5.PubackReasonCode.NO_MATCHING_SUBSCRIBERS
            )


def test_emulator_info_load_errors_name_the_problem(tmp_path):
    with pytest.raises(StateError, match="not found"):
        EmulatorInfo.load(tmp_path)
    (tmp_path / STATE_FILE).write_text("{nope")
    with pytest.raises(StateError, match="not valid JSON"):
        EmulatorInfo.load(tmp_path)
    (tmp_path / STATE_FILE).write_text('{"endpoint": "localhost"}')
    with pytest.raises(StateError, match="missing key 'device'"):
        EmulatorInfo.load(tmp_path)
    (tmp_path / STATE_FILE).write_text("[1, 2]")
    with pytest.raises(StateError, match="malformed"):
        EmulatorInfo.load(tmp_path)


class _Recorder:
    def __init__(self, events, name, fail=False):
        self.events, self.name, self.fail = events, name, fail

    def start(self, info):
        if self.fail:
            raise RuntimeError(f"{self.name} cannot start")
        self.events.append(("start", self.name, info.port))

    def stop(self):
        self.events.append(("stop", self.name))


def test_components_start_after_broker_and_stop_in_reverse(tmp_path):
    events = []
    emu = Emulator(tmp_path / "emu", components=[_Recorder(events, "a"), _Recorder(events, "b")])
    with emu:
        assert emu.broker.running()
        port = emu.info.port
        assert events == [("start", "a", port), ("start", "b", port)]
    assert events[2:] == [("stop", "b"), ("stop", "a")]
    assert not emu.broker.running()


def test_failing_component_stops_everything_started(tmp_path):
    events = []
    emu = Emulator(tmp_path / "emu", components=[_Recorder(events, "a"), _Recorder(events, "bad", fail=True)])
    with pytest.raises(RuntimeError, match="bad cannot start"):
        emu.start()
    assert events[-1] == ("stop", "a")
    assert not emu.broker.running()


def _serve(tmp_path, *extra):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "emulator", "serve", "--state-dir", str(tmp_path / "st"), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_until_signal_and_exits_zero(tmp_path, sig):
    proc = _serve(tmp_path, "--thing", "gw-cli")
    try:
        line = proc.stdout.readline()
        assert line.startswith("emulator ready endpoint=localhost port="), line + proc.stderr.read()
        info = EmulatorInfo.load(tmp_path / "st")
        assert f"port={info.port} " in line and info.device.thing_name == "gw-cli"
        with MqttClient.for_device(info):
            pass
        proc.send_signal(sig)
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "st" / "broker" / "mosquitto.log").read_text()
    assert "terminating" in log  # mosquitto was stopped cleanly, not orphaned


def test_serve_rejects_bad_thing_name(tmp_path):
    proc = _serve(tmp_path, "--thing", "bad/name")
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "invalid identity 'bad/name'" in err


def test_serve_reports_port_in_use(tmp_path):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        proc = _serve(tmp_path, "--port", str(port))
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"port {port} is in use" in err


def test_serve_exits_nonzero_when_mosquitto_dies(tmp_path):
    proc = _serve(tmp_path)
    try:
        assert proc.stdout.readline().startswith("emulator ready")
        pid = int((tmp_path / "st" / "broker" / "mosquitto.pid").read_text())
        assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"/usr/sbin/mosquitto\0")
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(30) == 1
        assert "mosquitto exited unexpectedly" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
