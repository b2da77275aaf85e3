"""A device config pointing at the running emulator, rewritten per test."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def write_config(emulator, tmp_path) -> Callable[..., Path]:
    info = emulator.info

    def write(connection: dict | None = None, spool: dict | None = None, sensors: str | None = None) -> Path:
        conn = {
            "endpoint": info.endpoint,
            "port": info.port,
            "ca_file": str(info.ca_file),
            "cert_file": str(info.device.cert_file),
            "key_file": str(info.device.key_file),
            "connect_timeout_ms": 3000,
        }
        conn.update(connection or {})
        sp = {"min_free_disk_bytes": 1024, "max_bytes": 1024 * 1024}
        sp.update(spool or {})
        text = f'state_dir = "{tmp_path / "state"}"\n[device]\nthing_name = "{info.device.thing_name}"\n'
        text += "[connection]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in conn.items())
        text += "[spool]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in sp.items())
        text += sensors if sensors is not None else '[[sensors]]\nid = "sim-1"\ndriver = "simulated"\n'
        path = tmp_path / "agent.toml"
        path.write_text(text)
        return path

    return write


def doctor(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "doctor", "--config", str(config), "--timeout", "3", *extra],
        capture_output=True,
        text=True,
        timeout=90,
    )


def lines_by_name(out: str) -> dict[str, str]:
    """{check name: status} from the one-line-per-check output."""
    res = {}
    for line in out.splitlines():
        status, rest = line.split(" ", 1)
        assert status in ("PASS", "WARN", "FAIL"), line
        res[rest.split(":", 1)[0]] = status
    return res
