"""Fixtures shared by every test area. Keep this small: area fixtures go in tests/<area>/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator import Emulator


@pytest.fixture
def emulator(tmp_path) -> Iterator[Emulator]:
    """A running emulator (mosquitto with mutual TLS) in a fresh state dir on a free loopback port.
    ``emulator.info`` holds the endpoint, port, CA and the admin and device (gw-0001) identities;
    ``emulator.broker`` can ``restart()``, ``kill()`` and ``reload()``."""
    emu = Emulator(tmp_path / "emulator")
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def fleet_emulator(tmp_path) -> Iterator[Emulator]:
    """A running emulator as ``emulator serve`` runs it: the per-certificate authz plugin and fleet
    provisioning behind the project's pre-provisioning hook (open allowlist). ``.fleet.registry``
    is its IoT registry; ``.info`` also holds the claim certificate and the template name."""
    emu = Emulator(tmp_path / "emulator", fleet_provisioning=True)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def telemetry(emulator):
    """The telemetry recorder attached to ``emulator``: ``received(thing)``, ``duplicates(thing)``,
    ``gaps(thing, upto)``, ``wait_for(thing, seqs)``, ``flush()``."""
    from emulator.recorder import TelemetryRecorder

    rec = TelemetryRecorder()
    emulator.add_component(rec)
    return rec  # stopped by the emulator fixture with the other components
