"""Fixtures: an emulator with fleet provisioning (real mosquitto + authz plugin + provisioning
service), provisioning Settings pointing at it, and a fake hardware root with a serial number."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from emulator import Emulator
from provisioning.flow import Settings
from provisioning.session import Endpoint

SERIAL = "10000000c0ffee42"
THING = f"methane-{SERIAL}"


@pytest.fixture
def hardware_root(tmp_path) -> Path:
    root = tmp_path / "hw"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(f"processor\t: 0\nHardware\t: BCM2835\nSerial\t\t: {SERIAL}\nModel\t\t: Pi 4\n")
    return root


def start_emulator(path: Path, **kw) -> Emulator:
    emu = Emulator(path, fleet_provisioning=True, **kw)
    emu.start()
    return emu


@pytest.fixture
def fleet(fleet_emulator) -> Emulator:
    """The shared ``fleet_emulator`` (tests/conftest.py) under this area's name."""
    return fleet_emulator


def make_settings(emu: Emulator, state_dir: Path, hardware_root: Path, **kw) -> Settings:
    info = emu.info
    assert info is not None and info.claim_cert_file and info.claim_key_file and info.template_name
    base = dict(
        state_dir=state_dir,
        endpoint=Endpoint(info.endpoint, info.port, info.ca_file),
        claim_cert_file=info.claim_cert_file,
        claim_key_file=info.claim_key_file,
        template_name=info.template_name,
        parameters={"SiteId": "site-7"},
        hardware_root=hardware_root,
        max_connect_attempts=3,
        request_timeout_s=10,
    )
    base.update(kw)
    return Settings(**base)


@pytest.fixture
def settings(fleet, tmp_path, hardware_root) -> Callable[..., Settings]:
    def make(**kw) -> Settings:
        return make_settings(fleet, tmp_path / "state", hardware_root, **kw)

    return make


def fingerprint(*paths: Path) -> list[tuple[str, int, int]]:
    """Content hash, mode and mtime of files: proves they were not touched."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode, st.st_mtime_ns))
    return out
