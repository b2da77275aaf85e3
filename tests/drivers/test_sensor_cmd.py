from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agent.cli import main
from tests.devices.dynament import DynamentDevice
from tests.devices.pty_host import Fault
from tests.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]


def _lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_read_json_against_emulator(pty_factory, capsys):
    host = pty_factory(DynamentDevice(reading=2.5))
    rc = main(["sensor", "read", "--driver", "dynament", "--port", host.port, "--setting", "unit=%vol",
               "--setting", "warmup_s=0", "--count", "2", "--interval", "0", "--json"])
    assert rc == 0
    rows = _lines(capsys)
    methane = [r for r in rows if r["quantity"] == "methane"]
    assert [r["read"] for r in methane] == [1, 2]
    assert methane[0] == {"read": 1, "driver": "dynament", "quantity": "methane", "value": 25000.0,
                          "unit": "ppm", "flags": []}


def test_failed_reads_print_error_objects_and_exit_nonzero(pty_factory, capsys):
    dev = DynamentDevice(reading=1.0)
    dev.fault = Fault.SILENT
    host = pty_factory(dev)
    rc = main(["sensor", "read", "--driver", "dynament", "--port", host.port, "--setting", "unit=ppm",
               "--setting", "timeout_s=0.2", "--count", "2", "--interval", "0", "--json"])
    assert rc == 1
    rows = _lines(capsys)
    assert [(r["read"], r["error"]) for r in rows] == [(1, "timeout"), (2, "timeout")]


def test_missing_port_is_a_clear_error(capsys):
    rc = main(["sensor", "read", "--driver", "dynament", "--setting", "unit=ppm"])
    assert rc == 2
    assert "setting port: Field required" in capsys.readouterr().err
    rc = main(["sensor", "read", "--driver", "nope", "--port", "/dev/null"])
    assert rc == 2
    assert "unknown driver 'nope'" in capsys.readouterr().err


def test_port_that_does_not_exist(tmp_path, capsys):
    rc = main(["sensor", "read", "--driver", "cubic-sjh5", "--port", str(tmp_path / "ttyUSB9"), "--json"])
    assert rc == 1
    assert _lines(capsys)[0]["error"] == "port_unavailable"


def test_list_names_every_driver(capsys):
    assert main(["sensor", "list", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert {"dynament", "cubic-sjh5", "inir", "winsen-mh440d", "nmea-gps"} <= set(table)
    assert table["winsen-mh440d"]["scale"]["required"] is True


def test_serve_entry_point_with_cli(tmp_path):
    link = tmp_path / "ch4"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "tests.devices.serve", "cubic-sjh5", "--link", str(link),
                               "--value", "1.5"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        def linked() -> bool:
            assert server.poll() is None, "the device emulator exited"
            return link.exists()

        eventually(linked, 20, what="emulator did not create its link")
        out = subprocess.run([sys.executable, "-m", "agent.cli", "sensor", "read", "--driver", "cubic-sjh5",
                              "--port", str(link), "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert {r["quantity"]: r["value"] for r in rows}["methane"] == 15000.0
