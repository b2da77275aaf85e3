"""Regenerates tests/cloud/payloads/: real telemetry batches and alarm events as the agent sends
them, captured from the emulator's broker (``python -m tests.cloud.capture_payloads [telemetry]
[alarms]``, both by default). The handler tests replay them."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from emulator import Emulator
from tests.e2e.conftest import AgentProc, write_config
from tests.e2e.test_alarms import plume_config
from tests.mqtt_client import MqttClient

OUT = Path(__file__).resolve().parent / "payloads"


def capture(encoding: str, count: int) -> list[tuple[str, bytes]]:
    with tempfile.TemporaryDirectory() as tmp, Emulator(Path(tmp) / "emu") as emu:
        info = emu.info
        with MqttClient.for_admin(info) as spy:
            spy.subscribe("dt/methane/+/+/telemetry")
            config = write_config(Path(tmp) / "agent.toml", info, Path(tmp) / "state", encoding=encoding,
                                  interval=0.25, batch_max_age_s=1.0)
            agent = AgentProc(config, Path(tmp) / "agent.log").start()
            try:
                got = spy.drain(count, timeout=60)
            finally:
                agent.terminate()
    return [(m.topic, m.payload) for m in got]


def capture_alarms() -> list[dict]:
    """The events of one scripted plume through the agent's alarm feature (warn 10 %LEL, alarm
    20 %LEL): raised, escalated, cleared to warn, cleared to normal; each payload exactly as sent."""
    with tempfile.TemporaryDirectory() as tmp, Emulator(Path(tmp) / "emu") as emu:
        info = emu.info
        with MqttClient.for_admin(info) as spy:
            spy.subscribe("dt/methane/+/+/alarm")
            config = plume_config(Path(tmp) / "agent.toml", info, Path(tmp) / "state", start_s=2, latch=False)
            agent = AgentProc(config, Path(tmp) / "agent.log").start()
            try:
                got = spy.drain(4, timeout=60)
            finally:
                agent.terminate()
    return [{"topic": m.topic, "content_type": m.content_type, "payload": m.payload.decode()} for m in got]


def main(argv: list[str]) -> int:
    OUT.mkdir(exist_ok=True)
    what = set(argv) or {"telemetry", "alarms"}
    if "telemetry" in what:
        index = []
        for encoding, n in (("compact", 3), ("json", 1)):
            for i, (topic, payload) in enumerate(capture(encoding, n)):
                name = f"{encoding}-{i + 1}.bin"
                (OUT / name).write_bytes(payload)
                index.append({"file": name, "topic": topic, "encoding": encoding})
        (OUT / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    if "alarms" in what:
        (OUT / "alarm-events.json").write_text(json.dumps(capture_alarms(), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
