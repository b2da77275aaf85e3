"""Local bounds that a remote change (shadow delta, config-update job) can never cross, from
``[remote.bounds]`` in the file (agent.config.RemoteBounds).

Validation (agent.config) says whether a value is possible at all; these bounds say whether the
cloud may set it on this device. They are checked against the local file's config (``base``), so
a remote layer can always put back what the file says. A refusal is a (key path, reason) pair in
the shadow's shape, reported in ``reported.config_errors`` like any other invalid key, and the
whole document changes nothing.

Why each rule exists (issue 10, item 2): one delta shrinking ``spool.max_bytes`` evicted the
unsent backlog, alarms included; ``interval_s = 0.01`` or an alarm threshold under ambient turns
every reading into a commit and a publish; ``enabled = false`` silences the methane sensor."""

from __future__ import annotations

from agent import config as cfg
from drivers.methane import MethaneSettings

Errors = list[tuple[str, str]]


def is_methane(sensor: cfg.SensorConfig) -> bool:
    """A sensor that measures methane: a methane driver, a methane channel, or a methane alarm."""
    settings = sensor.driver_settings()
    if isinstance(settings, MethaneSettings):
        return True
    channels = getattr(settings, "channels", None)
    if isinstance(channels, list) and any(str(c).startswith("methane") for c in channels):
        return True
    return any(a.quantity.startswith("methane") for a in sensor.alarms)


def check(
    base: cfg.AgentConfig, new: cfg.AgentConfig, *, running: cfg.AgentConfig | None = None,
    spool_bytes: int | None = None,
) -> Errors:
    """Every bound ``new`` (``base`` with a remote layer on top) crosses. ``running``: the config
    in force, and ``spool_bytes``: what the spool holds now; a budget shrinking below it would
    evict unsent readings at once."""
    bounds = base.remote.bounds
    used = spool_bytes if running is not None and new.spool.max_bytes < running.spool.max_bytes else None
    return [*_spool(base.spool, new.spool, bounds, used), *_sensors(base, new, bounds)]


def _spool(base: cfg.SpoolConfig, new: cfg.SpoolConfig, b: cfg.RemoteBounds, used: int | None) -> Errors:
    out: Errors = []
    floor = base.max_bytes if b.spool_max_bytes_min is None else b.spool_max_bytes_min
    if new.max_bytes != base.max_bytes and new.max_bytes < floor:
        out.append(("config.spool.max_bytes", f"below the local floor {floor} (remote.bounds.spool_max_bytes_min; "
                    "by default a remote change never shrinks the spool budget below the file's)"))
    elif used is not None and new.max_bytes < used:
        out.append(("config.spool.max_bytes",
                    f"the spool holds {used} bytes of unsent readings; {new.max_bytes} would evict some"))
    if new.min_free_disk_bytes > base.min_free_disk_bytes:
        out.append(("config.spool.min_free_disk_bytes",
                    f"above the local value {base.min_free_disk_bytes} (a larger reserve shrinks the spool budget)"))
    reserve_floor = base.min_free_disk_bytes if b.min_free_disk_bytes_min is None else b.min_free_disk_bytes_min
    if new.min_free_disk_bytes < min(reserve_floor, base.min_free_disk_bytes):
        out.append(("config.spool.min_free_disk_bytes",
                    f"below the local floor {min(reserve_floor, base.min_free_disk_bytes)} "
                    "(remote.bounds.min_free_disk_bytes_min)"))
    return out


def _sensors(base: cfg.AgentConfig, new: cfg.AgentConfig, b: cfg.RemoteBounds) -> Errors:
    out: Errors = []
    local = {s.id: s for s in base.sensors}
    for s in new.sensors:
        old = local.get(s.id)
        if old is None:  # managed.py refuses sensors the file lacks; nothing to bound here
            continue
        path = f"config.sensors.{s.id}"
        if s.interval_s != old.interval_s and s.interval_s < b.min_interval_s:
            out.append((f"{path}.interval_s",
                        f"below the local floor remote.bounds.min_interval_s = {b.min_interval_s:g}"))
        methane = is_methane(old)
        if methane and old.enabled and not s.enabled and not b.allow_disabling_methane:
            out.append((f"{path}.enabled", "a methane sensor cannot be disabled remotely "
                        "(remote.bounds.allow_disabling_methane = false)"))
        if s.alarms != old.alarms:
            out += _alarms(path, old, s, b, methane)
    return out


def _thresholds(alarms: list[cfg.AlarmConfig]) -> set[tuple[str, str, float]]:
    """(quantity, level, value) of every threshold: warn, alarm and clear, per direction."""
    out = set()
    for a in alarms:
        suffix = "" if a.direction == "rising" else " (falling)"
        for kind, value in (("warn", a.warn), ("alarm", a.alarm), ("clear", a.clear)):
            if value is not None:
                out.add((a.quantity, kind + suffix, value))
    return out


# Not thresholds, but each can silence an alarm as surely as removing it (a one-hour on-delay, no
# latch, no fault): local only for methane unless the file allows disabling its alarms.
_BEHAVIOUR = ("unit", "clear_margin", "on_delay_readings", "on_delay_s", "off_delay_readings", "off_delay_s",
              "latch", "fault", "fault_after_errors", "stale_after_s")


def _alarms(path: str, old: cfg.SensorConfig, new: cfg.SensorConfig, b: cfg.RemoteBounds, methane: bool) -> Errors:
    out: Errors = []
    if methane and not b.allow_disabling_methane:
        kept = {(q, k) for q, k, _ in _thresholds(new.alarms)}
        for q, kind, _ in sorted(_thresholds(old.alarms)):
            if q.startswith("methane") and (q, kind) not in kept:
                out.append((f"{path}.alarms", f"removes the {kind} level on {q}; a methane sensor's alarms "
                            "cannot be disabled remotely (remote.bounds.allow_disabling_methane = false)"))
        olds = {(a.quantity, a.direction): a for a in old.alarms}
        for a in new.alarms:
            prev = olds.get((a.quantity, a.direction))
            if prev is None or not a.quantity.startswith("methane"):
                continue
            changed = [k for k in _BEHAVIOUR if getattr(a, k) != getattr(prev, k)]
            if changed:
                out.append((f"{path}.alarms", f"{a.quantity}: {', '.join(changed)} of a methane alarm are local "
                            "only (remote.bounds.allow_disabling_methane = false)"))
    unchanged = _thresholds(old.alarms)
    for q, kind, value in sorted(_thresholds(new.alarms) - unchanged):
        limit = b.alarm_thresholds.get(q)
        if limit is None:
            out.append((f"{path}.alarms", f"{q} {kind} = {value:g}: alarm thresholds of {q} are local only "
                        f"(no remote.bounds.alarm_thresholds.{q})"))
        elif not limit.min <= value <= limit.max:
            out.append((f"{path}.alarms", f"{q} {kind} = {value:g} is outside the local bounds "
                        f"[{limit.min:g}, {limit.max:g}]"))
    return out
