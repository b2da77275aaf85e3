"""Shared helpers of the alarm tests: a feature built from a TOML snippet, and a spool stand-in that
numbers readings like the real one (the alarm feature only needs ``append``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent import config as cfg
from agent.alarms.feature import AlarmFeature
from agent.reading import Reading


def load_toml(tmp_path: Path, text: str) -> cfg.AgentConfig:
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return cfg.load(p, environ={})


def feature_from_toml(tmp_path: Path, text: str, **kw: Any) -> AlarmFeature:
    conf = load_toml(tmp_path, text)
    kw.setdefault("outputs", conf.alarms.outputs)
    return AlarmFeature(conf.sensors, tmp_path / "events.db", site="s", device="d", clock_synced=lambda: True, **kw)


class FakeSpool:
    def __init__(self) -> None:
        self.seq = 100
        self.got: list[Reading] = []

    def append(self, items: list[Any]) -> list[Reading]:
        out = []
        for i in items:
            self.seq += 1
            out.append(Reading(self.seq, i.ts_ms, i.clock_synced, i.sensor_id, i.quantity, i.value, i.unit,
                               i.flags, i.alarm))
        self.got += out
        return out
