"""The one config model. The TOML file, environment overrides, a shadow delta, a config-update job
and SIGHUP all pass through ``load``/``validate`` here, so every path rejects the same bad input
with the same message and applies the same result."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, ValidationError, field_validator, model_validator

from agent.alarms.config import AlarmConfig, check_rules
from agent.alarms.leak import LeakConfig
from agent.alarms.outputs.config import ModbusCoilOutput, OutputConfig
from agent.egress import DEFAULT_UPLOAD_HOSTS, pattern_error
from drivers import registry

ENV_PREFIX = "METHANE_AGENT__"
SENSOR_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
THING_NAME = r"^[a-zA-Z0-9:_-]{1,128}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DeviceConfig(_Section):
    thing_name: Annotated[str, Field(pattern=THING_NAME)] | None = Field(
        None, description="IoT thing name; taken from the identity file when provisioned"
    )
    site_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "site-1"


class ConnectionConfig(_Section):
    endpoint: str = Field("", description="IoT Core ATS data endpoint; empty = run offline (spool only)")
    port: int = Field(8883, ge=1, le=65535)
    ca_file: Path | None = Field(None, description="CA bundle; None = system trust store")
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str | None = Field(None, max_length=128, description="default: the thing name")
    keep_alive_s: int = Field(
        60, ge=30, le=1200, description="MQTT keep-alive; IoT Core clamps to 30..1200 (see agent/link/README.md)"
    )
    ping_timeout_ms: int = Field(
        15_000, ge=1000, le=600_000, description="a PINGREQ unanswered this long = dead link; <= keep_alive_s/2"
    )
    min_reconnect_delay_ms: int = Field(
        10_000, ge=100, le=600_000,
        description="first full-jitter window after the broker dropped us; 10 s keeps a fleet's herd in check",
    )
    max_reconnect_delay_ms: int = Field(
        60_000, ge=1000, le=3_600_000, description="full-jitter window cap while the broker is down"
    )
    connect_timeout_ms: int = Field(10_000, ge=1000, le=120_000, description="TCP connect and CONNACK, each")
    probe_interval_s: float = Field(
        5.0, ge=1, le=300, description="while the network is down: TCP-probe the endpoint this often"
    )
    network_return_jitter_ms: int = Field(
        2000, ge=0, le=60_000, description="reconnect within this long once the network is back"
    )
    network_events: Literal["netlink", "none"] = Field(
        "netlink", description="kernel link/address/route events prompt an immediate probe"
    )
    iot_core_limits: bool = Field(
        True, description="client-side flow control at IoT Core's 100 publishes/s and 512 KiB/s"
    )

    @model_validator(mode="after")
    def _reconnect_bounds(self) -> ConnectionConfig:
        if self.min_reconnect_delay_ms > self.max_reconnect_delay_ms:
            raise ValueError("min_reconnect_delay_ms must not exceed max_reconnect_delay_ms")
        if self.ping_timeout_ms > self.keep_alive_s * 500:
            raise ValueError(
                f"ping_timeout_ms ({self.ping_timeout_ms}) must be at most half of keep_alive_s "
                f"({self.keep_alive_s * 500} ms): a dead link is then noticed within 1.5 x keep-alive"
            )
        return self


class SensorConfig(_Section):
    id: Annotated[str, Field(pattern=SENSOR_ID)]
    driver: str
    enabled: bool = True
    interval_s: float = Field(1.0, ge=0.01, le=86_400, description="sampling interval, monotonic clock")
    settings: dict[str, Any] = Field(default_factory=dict, description="driver-specific, validated by the driver")
    alarms: list[AlarmConfig] = Field(default_factory=list)
    leak: LeakConfig | None = Field(None, description="leak events on this methane sensor (agent/alarms/README.md)")

    @model_validator(mode="after")
    def _driver_settings(self) -> SensorConfig:
        try:
            model = registry.settings_model(self.driver)
        except registry.UnknownDriverError as exc:
            raise ValueError(str(exc.args[0])) from None
        # Validate now so a bad setting is reported at load time with its key path.
        try:
            driver_settings = model.model_validate(self.settings)
        except ValidationError as exc:
            first = errors_of(exc)
            raise ValueError("; ".join(f"settings.{path}: {reason}" for path, reason in first)) from None
        check_rules(self.alarms, getattr(driver_settings, "lel_vol_percent", None))
        fast = self.leak.fast_interval_s if self.leak else None
        if fast is not None and fast >= self.interval_s:
            raise ValueError(f"leak.fast_interval_s ({fast}) must be shorter than interval_s ({self.interval_s})")
        return self

    def driver_settings(self) -> Any:
        return registry.settings_model(self.driver).model_validate(self.settings)


class SpoolConfig(_Section):
    path: Path | None = Field(None, description="SQLite file; default <state_dir>/spool.db")
    max_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024, description="byte budget of unsent readings")
    min_free_disk_bytes: int = Field(
        200 * 1024 * 1024, ge=0, description="keep this much free on the file system for the OS and logs"
    )
    commit_interval_s: float = Field(1.0, gt=0, le=60, description="group commit: at most this long in RAM")
    synchronous: Literal["NORMAL", "FULL"] = Field(
        "NORMAL", description="SQLite synchronous level; FULL also survives power loss of the last commit"
    )


def check_topic(v: str) -> str:
    if any(c in v for c in "+#\x00"):
        raise ValueError("topic must not contain wildcards or NUL")
    try:
        v.format(site="s", thing="t")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"unknown placeholder in topic: {exc}") from None
    return v


class UplinkConfig(_Section):
    topic: str = Field("dt/methane/{site}/{thing}/telemetry", description="placeholders: {site} {thing}")
    encoding: Literal["json", "compact"] = "compact"
    batch_max_bytes: int = Field(
        5120, ge=256, le=128 * 1024, description="payload+topic budget; 5120 fills one billed IoT Core unit"
    )
    batch_max_age_s: float = Field(60.0, ge=0.1, le=3600, description="send a partial batch after this long")
    max_inflight: int = Field(8, ge=1, le=100, description="batches awaiting PUBACK at once")
    ack_timeout_s: float = Field(30.0, ge=1, le=600)
    retry_max_delay_s: float = Field(60.0, ge=1, le=3600)

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        return check_topic(v)


class AlarmsConfig(_Section):
    """Alarm and leak events (agent/alarms/README.md). Local only: the topics are bound to the device
    policy."""

    topic: str = Field("dt/methane/{site}/{thing}/alarm", description="alarm events, QoS 1, plain JSON")
    leak_topic: str = Field("dt/methane/{site}/{thing}/leak", description="leak events, QoS 1, plain JSON")
    keep_sent_events: int = Field(10_000, ge=100, le=1_000_000, description="sent events kept for `events`")
    outputs: list[OutputConfig] = Field(default_factory=list, description="relays/sirens driven by alarm levels")

    @field_validator("topic", "leak_topic")
    @classmethod
    def _topics(cls, v: str) -> str:
        return check_topic(v)

    @model_validator(mode="after")
    def _outputs(self) -> AlarmsConfig:
        names: set[str] = set()
        lines: dict[str, ModbusCoilOutput] = {}
        for o in self.outputs:
            if o.name in names:
                raise ValueError(f"duplicate output name {o.name!r}")
            names.add(o.name)
            if isinstance(o, ModbusCoilOutput):
                first = lines.setdefault(o.port, o)
                if (first.baud, first.parity, first.stopbits) != (o.baud, o.parity, o.stopbits):
                    raise ValueError(f"outputs {first.name} and {o.name} share {o.port} with different line settings")
                if first is not o and (first.slave, first.coil) == (o.slave, o.coil):
                    raise ValueError(f"outputs {first.name} and {o.name} drive the same coil")
        return self


class ClockConfig(_Section):
    sync_source: Literal["auto", "timesyncd", "adjtimex", "assume_synced"] = Field(
        "auto", description="how clock_synced is decided; auto = timesyncd flag file, else adjtimex(2)"
    )


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["logfmt", "json"] = "logfmt"


class ProvisioningConfig(_Section):
    """Fleet provisioning by claim (provisioning/). Used only while the device has no identity in
    ``<state_dir>/identity/`` (or for ``provision --force``)."""

    enabled: bool = Field(False, description="provision at start when no identity exists")
    claim_cert_file: Path | None = Field(None, description="claim certificate (shared by the fleet)")
    claim_key_file: Path | None = Field(None, description="claim private key; must be 0600 or 0400")
    template_name: Annotated[str, Field(pattern=r"^[0-9A-Za-z_-]{1,36}$")] = Field(
        "methane-fleet", description="fleet provisioning template name (IoT Core allows 36 characters)"
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="RegisterThing parameters, e.g. SiteId; SerialNumber is added"
    )
    key_type: Literal["ec-p256", "rsa-2048"] = Field("ec-p256", description="device key made on the device")
    method: Literal["csr", "create-keys"] = Field(
        "csr", description="csr: key never leaves the device; create-keys: IoT Core makes the key"
    )
    serial_source: str = Field(
        "auto", description="auto | cpuinfo | device-tree | machine-id | file:/path (SerialNumber source)"
    )

    @field_validator("serial_source")
    @classmethod
    def _serial_source(cls, v: str) -> str:
        if v in ("auto", "cpuinfo", "device-tree", "machine-id") or (v.startswith("file:") and len(v) > 5):
            return v
        raise ValueError("must be auto, cpuinfo, device-tree, machine-id or file:/path")

    @model_validator(mode="after")
    def _claim_files(self) -> ProvisioningConfig:
        if self.enabled and (self.claim_cert_file is None or self.claim_key_file is None):
            raise ValueError("enabled provisioning needs claim_cert_file and claim_key_file")
        return self


ACTION_NAMES = (
    "config-update", "restart-agent", "reboot", "calibrate-sensor", "rotate-certificate", "upload-diagnostics",
    "acknowledge-alarm",
)


class ThresholdBounds(_Section):
    min: float = Field(..., description="lowest alarm threshold a remote change may set")
    max: float = Field(..., description="highest alarm threshold a remote change may set")

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdBounds:
        if self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class RemoteBounds(_Section):
    """Local limits no shadow delta or config-update job can cross (agent/remote/bounds.py). The
    defaults are the safe ones: a remote change never shrinks the spool's budget below the file's,
    never evicts unsent readings, never samples faster than ``min_interval_s``, never turns a
    methane sensor or its alarms off, and never moves an alarm threshold without bounds here."""

    min_interval_s: float = Field(
        1.0, ge=0.01, le=86_400,
        description="remote interval_s never below this (the file's own value may always be restored)",
    )
    spool_max_bytes_min: int | None = Field(
        None, ge=64 * 1024, description="remote spool.max_bytes never below this; default: the file's value"
    )
    min_free_disk_bytes_min: int | None = Field(
        None, ge=0, description="remote spool.min_free_disk_bytes never below this; default: the file's value"
    )
    allow_disabling_methane: bool = Field(
        False, description="let a remote change disable a methane sensor or remove its alarms"
    )
    alarm_thresholds: dict[str, ThresholdBounds] = Field(
        default_factory=dict,
        description="per quantity, the range a remote alarm threshold may take; quantities without an "
        "entry keep the file's thresholds",
    )


class RemoteConfig(_Section):
    """Remote management (agent/remote/README.md): the named Device Shadow and allowlisted Jobs.
    Local-only: none of these keys can be changed from the cloud."""

    shadow_enabled: bool = Field(True, description="follow the named shadow's desired config and report status")
    shadow_name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9:_-]{1,64}$")] = Field(
        "methane-agent", description="named shadow holding desired config and reported status"
    )
    jobs_enabled: bool = Field(True, description="run allowlisted IoT Jobs actions")
    allow_reboot: bool = Field(False, description="the reboot action is refused unless this is true")
    reboot_command: list[str] = Field(
        default_factory=lambda: ["systemctl", "reboot"], min_length=1,
        description="argv run (no shell) by the reboot action",
    )
    reported_min_interval_s: float = Field(
        60.0, ge=1, le=86_400, description="routine status drift is reported at most this often (billed)"
    )
    action_timeout_s: float = Field(300.0, ge=1, le=86_400, description="default timeout of a job action")
    action_timeouts_s: dict[str, float] = Field(
        default_factory=dict, description="per-action timeout overrides, e.g. {upload-diagnostics = 60}"
    )
    diagnostics_max_bytes: int = Field(
        256 * 1024, ge=1024, le=16 * 1024 * 1024, description="size cap of an upload-diagnostics bundle"
    )
    diagnostics_upload_hosts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_UPLOAD_HOSTS),
        description="host patterns upload-diagnostics may PUT to (https on 443; 'host:port' allows another port)",
    )
    diagnostics_upload_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="non-public networks (CIDR) an upload may still reach, e.g. an on-prem server",
    )
    log_ring_lines: int = Field(500, ge=10, le=10_000, description="recent log lines kept in memory for diagnostics")
    request_timeout_s: int = Field(30, ge=2, le=300, description="shadow/jobs request timeout")
    bounds: RemoteBounds = Field(default_factory=RemoteBounds)

    @field_validator("action_timeouts_s")
    @classmethod
    def _known_actions(cls, v: dict[str, float]) -> dict[str, float]:
        for name, t in v.items():
            if name not in ACTION_NAMES:
                raise ValueError(f"unknown action {name!r}; known: {', '.join(ACTION_NAMES)}")
            if not 1 <= t <= 86_400:
                raise ValueError(f"timeout of {name!r} must be 1..86400 s")
        return v

    @field_validator("diagnostics_upload_hosts")
    @classmethod
    def _host_patterns(cls, v: list[str]) -> list[str]:
        errors = [e for e in map(pattern_error, v) if e]
        if errors:
            raise ValueError("; ".join(errors))
        return v

    def timeout_for(self, action: str) -> float:
        return self.action_timeouts_s.get(action, self.action_timeout_s)


class AgentConfig(_Section):
    state_dir: Path = Field(Path("/var/lib/methane-agent"), description="spool, identity, status socket")
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    connection: ConnectionConfig = Field(default_factory=ConnectionConfig)
    sensors: list[SensorConfig] = Field(default_factory=list)
    spool: SpoolConfig = Field(default_factory=SpoolConfig)
    uplink: UplinkConfig = Field(default_factory=UplinkConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    provisioning: ProvisioningConfig = Field(default_factory=ProvisioningConfig)
    remote: RemoteConfig = Field(default_factory=RemoteConfig)
    alarms: AlarmsConfig = Field(default_factory=AlarmsConfig)

    @model_validator(mode="after")
    def _unique_sensor_ids(self) -> AgentConfig:
        seen: set[str] = set()
        for s in self.sensors:
            if s.id in seen:
                raise ValueError(f"duplicate sensor id {s.id!r}")
            seen.add(s.id)
        for o in self.alarms.outputs:
            unknown = [sid for sid in o.sensors if sid not in seen]
            if unknown:
                raise ValueError(f"alarms.outputs {o.name}: unknown sensor(s) {', '.join(unknown)}")
        return self

    @property
    def spool_path(self) -> Path:
        return self.spool.path or self.state_dir / "spool.db"

    @property
    def status_socket(self) -> Path:
        return self.state_dir / "status.sock"

    @property
    def control_socket(self) -> Path:
        return self.state_dir / "control.sock"

    @property
    def events_path(self) -> Path:
        return self.state_dir / "events.db"

    def digest(self) -> str:
        """Stable hash of the effective config, reported so the cloud can see what is applied."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ConfigRejected(Exception):
    """A valid config that cannot be applied live (or at all); nothing was changed."""


class ConfigError(Exception):
    """Invalid configuration. ``errors`` lists (key path, reason), ready to print."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {path}: {reason}" for path, reason in errors)
        super().__init__(f"invalid configuration in {source}:\n{lines}")


_NESTED = re.compile(r"(settings(?:\.[\w\[\]]+)*): (.*?)(?:; (?=settings)|$)")


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "<root>"


def errors_of(exc: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in exc.errors(include_url=False):
        # Drop pydantic's internal model-validator location parts like "function-after[...]".
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p))
        msg = e["msg"].removeprefix("Value error, ")
        path = _key_path(loc)
        nested = _NESTED.findall(msg)
        if nested:  # a sub-model's errors (driver settings) carry their own key paths
            out.extend((f"{path}.{sub}", reason) for sub, reason in nested)
        else:
            out.append((path, msg))
    return out


def _set_path(data: dict[str, Any], path: list[str], raw: str) -> None:
    node: Any = data
    for part in path[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(node, list):
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``METHANE_AGENT__UPLINK__ENCODING=json`` overrides ``uplink.encoding``; values are JSON when
    they parse as JSON (numbers, booleans, lists), else strings. ``SENSORS__0__INTERVAL_S`` indexes
    lists."""
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not path:
            continue
        try:
            _set_path(data, path, raw)
        except (IndexError, ValueError, TypeError, AttributeError):
            raise ConfigError(f"environment variable {key}", [(".".join(path), "no such list entry")]) from None
    return data


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative paths in the file are relative to the file's folder, as a field engineer expects."""

    def fix(section: Any, key: str) -> None:
        if isinstance(section, dict) and isinstance(section.get(key), str):
            p = Path(section[key])
            if not p.is_absolute():
                section[key] = str(base / p)

    fix(data, "state_dir")
    for k in ("ca_file", "cert_file", "key_file"):
        fix(data.get("connection"), k)
    fix(data.get("spool"), "path")
    for k in ("claim_cert_file", "claim_key_file"):
        fix(data.get("provisioning"), k)


def validate(data: Mapping[str, Any], source: str = "config") -> AgentConfig:
    try:
        return AgentConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(source, errors_of(exc)) from None


def read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), [("<file>", "file not found")]) from None
    except PermissionError:
        raise ConfigError(str(path), [("<file>", "permission denied")]) from None
    except IsADirectoryError:
        raise ConfigError(str(path), [("<file>", "is a directory, not a TOML file")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [("<file>", f"not UTF-8 text (byte {exc.start}): TOML files are UTF-8")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [("<toml>", str(exc))]) from None
    except OSError as exc:
        raise ConfigError(str(path), [("<file>", f"unreadable: {exc.strerror or exc}")]) from None
    _resolve_paths(data, path.resolve().parent)
    return data


def load(path: Path, environ: Mapping[str, str] | None = None) -> AgentConfig:
    data = apply_env(read_file(path), os.environ if environ is None else environ)
    return validate(data, str(path))




