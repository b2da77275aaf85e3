"""The remotely managed part of the configuration, defined in ONE place (``MANAGED``).

The shadow's ``desired.config`` and ``reported.config`` use this shape, which differs from the TOML
file in one way: sensors are an object keyed by sensor id (shadow arrays are replaced whole, so a
list would make every change resend every sensor). Only sensors that exist in the local file can
be tuned; adding a sensor remotely would mean taking driver settings (device paths) from the
cloud, which the agent refuses.

Everything outside ``MANAGED`` (connection, identity, paths, state_dir, provisioning, remote, the
uplink topic, spool synchronous level, driver settings) is refused with a reason: those decide
which files, identity and topics the process holds, or need a restart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from agent import config as cfg

# section -> fields that desired.config may set. "sensors" is keyed by sensor id.
MANAGED: dict[str, tuple[str, ...]] = {
    "sensors": ("enabled", "interval_s", "alarms"),
    "uplink": ("encoding", "batch_max_bytes", "batch_max_age_s", "max_inflight", "ack_timeout_s", "retry_max_delay_s"),
    "spool": ("max_bytes", "min_free_disk_bytes", "commit_interval_s"),
    "logging": ("level", "format"),
    "clock": ("sync_source",),
}

_WHY_NOT: dict[str, str] = {
    "state_dir": "paths are local only",
    "device": "identity is local only",
    "connection": "connection and credentials are local only",
    "provisioning": "provisioning is local only",
    "remote": "remote management settings are local only",
}
_FIELD_WHY_NOT: dict[tuple[str, str], str] = {
    ("uplink", "topic"): "the topic is bound to the device policy; local only",
    ("spool", "path"): "paths are local only",
    ("spool", "synchronous"): "needs a restart; local only",
    ("sensors", "settings"): "driver settings (ports, addresses) are local only",
    ("sensors", "driver"): "drivers are local only",
    ("sensors", "id"): "sensor ids are local only",
}


class ManagedError(Exception):
    """A desired document that cannot be applied; ``errors`` are (key path, reason) pairs with
    paths relative to ``desired`` (e.g. ``config.sensors.ch4-1.interval_s``)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{p}: {r}" for p, r in errors))


def managed_view(conf: cfg.AgentConfig) -> dict[str, Any]:
    """The managed subset of an applied config, in shadow shape (what ``reported.config`` holds).
    ``None`` values are left out: a null in a shadow document means "delete"."""
    data = conf.model_dump(mode="json", exclude_none=True)
    out: dict[str, Any] = {}
    for section, fields in MANAGED.items():
        if section == "sensors":
            out["sensors"] = {s["id"]: {f: s[f] for f in fields if f in s} for s in data["sensors"]}
        else:
            out[section] = {f: data[section][f] for f in fields if f in data[section]}
    return out


def _prefix(path: str) -> str:
    return f"config.{path}" if path else "config"


def _check(doc: Any, base: cfg.AgentConfig) -> list[tuple[str, str]]:
    """Every refused or unknown key in a managed document, before any validation."""
    if not isinstance(doc, Mapping):
        return [("config", "must be an object")]
    errors: list[tuple[str, str]] = []
    sensor_ids = {s.id for s in base.sensors}
    for section, body in doc.items():
        if section not in MANAGED:
            reason = _WHY_NOT.get(section, f"not remotely managed; managed sections: {', '.join(MANAGED)}")
            errors.append((_prefix(section), reason))
            continue
        if not isinstance(body, Mapping):
            errors.append((_prefix(section), "must be an object"))
            continue
        if section == "sensors":
            for sid, fields in body.items():
                if sid not in sensor_ids:
                    errors.append((_prefix(f"sensors.{sid}"), "no such sensor in the local config"))
                elif not isinstance(fields, Mapping):
                    errors.append((_prefix(f"sensors.{sid}"), "must be an object"))
                else:
                    errors += _fields("sensors", f"sensors.{sid}", fields)
        else:
            errors += _fields(section, section, body)
    return errors


def _fields(section: str, path: str, body: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for f in body:
        if f not in MANAGED[section]:
            reason = _FIELD_WHY_NOT.get(
                (section, f), f"not remotely managed; managed keys: {', '.join(MANAGED[section])}"
            )
            out.append((_prefix(f"{path}.{f}"), reason))
    return out


_SENSOR_INDEX = re.compile(r"^sensors\[(\d+)\]")


def to_config(base: cfg.AgentConfig, doc: Any) -> cfg.AgentConfig:
    """``base`` (the local file's config) with the managed document ``doc`` laid over it, through
    the one validation. Raises ManagedError naming every bad key; nothing is partially applied."""
    errors = _check(doc, base)
    if errors:
        raise ManagedError(errors)
    data = base.model_dump(mode="json")
    index = {s["id"]: i for i, s in enumerate(data["sensors"])}
    for section, body in doc.items():
        if section == "sensors":
            for sid, fields in body.items():
                data["sensors"][index[sid]].update(fields)
        else:
            data[section].update(body)
    try:
        return cfg.validate(data, "shadow desired.config")
    except cfg.ConfigError as exc:
        ids = [s["id"] for s in data["sensors"]]

        def rename(path: str) -> str:
            m = _SENSOR_INDEX.match(path)
            if m and int(m.group(1)) < len(ids):
                path = f"sensors.{ids[int(m.group(1))]}" + path[m.end() :]
            return _prefix(path)

        raise ManagedError([(rename(p), r) for p, r in exc.errors]) from None


def subset_equal(desired: Any, reported: Any) -> bool:
    """True when every field of ``desired`` has the same value in ``reported`` (how IoT Core
    computes a delta: fields only in reported never count)."""
    if isinstance(desired, Mapping):
        return isinstance(reported, Mapping) and all(
            k in reported and subset_equal(v, reported[k]) for k, v in desired.items()
        )
    return bool(desired == reported)
