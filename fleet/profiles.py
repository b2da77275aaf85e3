"""Site profiles: what each simulated gateway measures and how it is configured.

A gateway is the agent's real config file (TOML) with two simulated sensor heads of four channels
each (8 channels at 1 Hz): a ~2 ppm methane background with a daily cycle and noise, occasional
leak plumes, a few heads that fail intermittently or start warming up. A share of the fleet
(``legacy``) runs an older hardware profile whose sensor ids differ, so a config change written for
the current profile is refused there (the rollout scenario's "bad config for part of the fleet")."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHANNELS = ["methane", "temperature", "humidity", "pressure"]
CURRENT_SENSORS = ("ch4", "env")
LEGACY_SENSORS = ("ch4-legacy", "env-legacy")
DEVICES_PER_SITE = 10
INTERVAL_S = 1.0
READINGS_PER_GATEWAY_S = 2 * len(CHANNELS) / INTERVAL_S  # two heads of four channels


@dataclass(frozen=True)
class Endpoint:
    """Where the fleet connects and provisions: the emulator, or a real IoT Core account."""

    host: str
    port: int
    ca_file: Path | None
    claim_cert_file: Path
    claim_key_file: Path
    template_name: str


@dataclass(frozen=True)
class DeviceProfile:
    index: int
    serial: str
    site: str
    legacy: bool
    faulty: bool
    warming: bool

    @property
    def sensor_ids(self) -> tuple[str, str]:
        return LEGACY_SENSORS if self.legacy else CURRENT_SENSORS


def fleet_profiles(n: int, seed: int, legacy_fraction: float) -> list[DeviceProfile]:
    """``n`` gateways, ten per site; every ``round(1/legacy_fraction)``-th is legacy, so the bad
    share is spread through the rollout order; ~2 % have a failing head, ~5 % start warming up."""
    rng = random.Random(seed)
    step = round(1 / legacy_fraction) if legacy_fraction > 0 else 0
    out = []
    for i in range(n):
        out.append(DeviceProfile(
            index=i, serial=f"sim{seed:03d}{i:06d}", site=f"site-{i // DEVICES_PER_SITE + 1:04d}",
            legacy=bool(step) and i % step == step - 1, faulty=rng.random() < 0.02, warming=rng.random() < 0.05,
        ))
    return out


def _sensor(sid: str, seed: int, p: DeviceProfile, rng: random.Random, head: int) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "seed": seed, "channels": CHANNELS,
        "ambient_ppm": round(rng.uniform(1.8, 2.3), 2),       # the site's methane background
        "daily_swing_ppm": round(rng.uniform(0.05, 0.4), 2),   # night-time inversions raise it
        "noise_ppm": round(rng.uniform(0.01, 0.05), 3),
        "leaks_per_hour": round(rng.uniform(0.05, 1.0), 2),    # occasional plumes
    }
    if p.faulty and head == 0:
        settings["fault_rate"] = 0.05
    if p.warming:
        settings["warmup_s"] = 120.0
    return {"id": sid, "driver": "simulated", "interval_s": INTERVAL_S, "settings": settings,
            "alarms": [{"quantity": "methane", "alarm": 1000.0, "clear_margin": 100.0, "latch": False}]}


def write_config(p: DeviceProfile, folder: Path, ep: Endpoint, *, batch_max_age_s: float,
                 max_reconnect_delay_ms: int, log_level: str, min_reconnect_delay_ms: int | None = None) -> Path:
    """The gateway's own TOML file (and its serial-number file), as an installer would write them."""
    folder.mkdir(parents=True, exist_ok=True)
    serial_file = folder / "serial"
    serial_file.write_text(p.serial + "\n")
    rng = random.Random(p.index)
    sensors = [_sensor(sid, p.index * 2 + h, p, rng, h) for h, sid in enumerate(p.sensor_ids)]
    conf: dict[str, Any] = {
        "state_dir": str(folder / "state"),
        "device": {"site_id": p.site},
        "connection": {"endpoint": ep.host, "port": ep.port, "keep_alive_s": 60,
                       **({"min_reconnect_delay_ms": min_reconnect_delay_ms} if min_reconnect_delay_ms else {}),
                       "max_reconnect_delay_ms": max_reconnect_delay_ms,
                       **({"ca_file": str(ep.ca_file)} if ep.ca_file else {})},
        "spool": {"commit_interval_s": 1.0},
        "uplink": {"batch_max_age_s": batch_max_age_s},
        "logging": {"level": log_level},
        "clock": {"sync_source": "assume_synced"},
        "provisioning": {"enabled": True, "claim_cert_file": str(ep.claim_cert_file),
                         "claim_key_file": str(ep.claim_key_file), "template_name": ep.template_name,
                         "parameters": {"SiteId": p.site}, "serial_source": f"file:{serial_file}"},
        "remote": {"reported_min_interval_s": 300.0, "log_ring_lines": 20},
        "sensors": sensors,
    }
    path = folder / "agent.toml"
    path.write_text(_toml(conf))
    return path


def _toml(conf: dict[str, Any]) -> str:
    """Minimal TOML writer for the shapes above (tomllib reads, nothing in the stdlib writes)."""
    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    lines = [f"{k} = {val(v)}" for k, v in conf.items() if not isinstance(v, dict | list)]
    for k, v in conf.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {val(vv)}" for kk, vv in v.items()]
    for s in conf.get("sensors", []):
        lines += ["", "[[sensors]]"] + [f"{k} = {val(v)}" for k, v in s.items() if k != "alarms"]
        for a in s.get("alarms", []):
            lines += ["", "  [[sensors.alarms]]"] + [f"  {k} = {val(v)}" for k, v in a.items()]
    return "\n".join(lines) + "\n"
