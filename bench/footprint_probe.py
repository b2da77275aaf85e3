"""``methane-agent`` that writes the names of every module it loaded to ``$FOOTPRINT_MODULES_OUT``
when it exits (bench_footprint's answer to "what does the daemon carry"; ``-X importtime`` misses
modules loaded through importlib). ``python -m bench.footprint_probe run --config FILE``.

``NOT_IN_RUN`` is what a steady ``methane-agent run`` (simulated sensors, compact encoding,
connected, shadow and jobs on) must not have loaded: other commands, the emulator and cloud side,
certificate parsing and provisioning, drivers and outputs it is not configured for, and job actions
no job has named yet. bench_footprint reports any it finds, and tests/e2e/test_footprint.py fails
on them (docs/architecture.md, "Memory")."""

from __future__ import annotations

import atexit
import json
import os
import sys

NOT_IN_RUN = (
    # other commands and the parts only they use
    "agent.commands.alarms_cmd", "agent.commands.decode_cmd", "agent.commands.doctor_cmd",
    "agent.commands.provision_cmd", "agent.commands.sensor_cmd", "agent.doctor",
    "emulator", "cloud", "fleet", "boto3", "zstandard",
    # provisioning and certificate parsing: expiry comes from identity.json
    "provisioning.flow", "provisioning.keys", "provisioning.rotation", "cryptography", "tenacity",
    # what the configuration does not use: the JSON encoder, Modbus, serial, I2C, GPIO outputs
    "agent.payload.jsonfmt", "pymodbus", "serial", "smbus2", "gpiozero",
    # job actions load when a job names them (upload-diagnostics brings http.client)
    "agent.remote.jobs.actions.diagnostics", "agent.remote.jobs.actions.rotate", "http.client", "urllib.request",
)  # fmt: skip


def not_in_run(loaded: set[str] | list[str]) -> list[str]:
    """The modules of ``loaded`` that ``NOT_IN_RUN`` names (a package counts with its submodules)."""
    return sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in NOT_IN_RUN))


def _dump() -> None:
    out = os.environ.get("FOOTPRINT_MODULES_OUT")
    if out:
        with open(out, "w") as f:
            json.dump(sorted(sys.modules), f)


if __name__ == "__main__":
    atexit.register(_dump)
    from agent.cli import main

    sys.exit(main(sys.argv[1:]))
