"""Checks that need no network: config, identity files, clock, sensors, disk."""

from __future__ import annotations

import datetime as dt
import errno
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent import config as cfg
from agent.clock import TIMESYNCD_FLAG, adjtimex_synced
from agent.doctor.report import Result
from drivers import registry
from drivers.base import WARMING_UP, DriverError
from provisioning import identity as ident

CERT_WARN_DAYS = 30


def check_config(path: Path) -> tuple[Result, cfg.AgentConfig | None]:
    try:
        conf = cfg.load(path)
    except cfg.ConfigError as exc:
        errors = "; ".join(f"{p}: {r}" for p, r in exc.errors[:5])
        more = f" (+{len(exc.errors) - 5} more)" if len(exc.errors) > 5 else ""
        return (
            Result("FAIL", "config", f"{path}: {errors}{more}", f"methane-agent config validate {path}"),
            None,
        )
    enabled = sum(s.enabled for s in conf.sensors)
    return Result("PASS", "config", f"{path} valid ({enabled} sensor(s) enabled, hash {conf.digest()})"), conf


class Credentials:
    """Where the device certificate and key are: the config names them, else the provisioned identity."""

    def __init__(self, conf: cfg.AgentConfig) -> None:
        self.cert: Path | None = conf.connection.cert_file
        self.key: Path | None = conf.connection.key_file
        self.thing = conf.device.thing_name or ""
        self.source = "config"
        self.error: str | None = None
        if self.cert is None or self.key is None:
            try:
                found = ident.load(conf.state_dir)
            except ident.IdentityError as exc:
                self.error = str(exc)
                return
            if found is not None:
                self.cert, self.key = found.cert_file, found.key_file
                self.thing = self.thing or found.thing_name
                self.source = f"identity in {ident.identity_dir(conf.state_dir)}"


def check_identity(creds: Credentials, now: dt.datetime | None = None) -> tuple[Result, x509.Certificate | None]:
    name = "identity"
    if creds.error:
        return Result("FAIL", name, creds.error, "re-provision: methane-agent provision --config FILE"), None
    if creds.cert is None or creds.key is None:
        return (
            Result(
                "FAIL",
                name,
                "no device certificate: connection.cert_file/key_file unset and the device is not provisioned",
                "methane-agent provision --config FILE, or set connection.cert_file and key_file",
            ),
            None,
        )
    try:
        ident.check_permissions([creds.key])
    except ident.PermissionProblem as exc:
        why = "; ".join(f"{p}: {w}" for p, w in exc.problems)
        return Result(
            "FAIL", name, f"private key not private: {why}", f"chown {exc.user}: {creds.key} && chmod 600 {creds.key}"
        ), None
    try:
        cert = x509.load_pem_x509_certificate(creds.cert.read_bytes())
    except FileNotFoundError:
        return Result(
            "FAIL", name, f"certificate {creds.cert} missing", "re-provision or fix connection.cert_file"
        ), None
    except PermissionError:
        return Result(
            "FAIL", name, f"certificate {creds.cert}: permission denied", f"chown {ident.current_user()}: {creds.cert}"
        ), None
    except ValueError as exc:
        return Result("FAIL", name, f"certificate {creds.cert} does not parse: {exc}", "re-provision the device"), None
    try:
        key = serialization.load_pem_private_key(creds.key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        return Result("FAIL", name, f"private key {creds.key} does not parse: {exc}", "re-provision the device"), None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        return Result(
            "FAIL", name, f"{creds.key} is not the key of {creds.cert}", "point key_file at the certificate's key"
        ), cert
    now = now or dt.datetime.now(dt.UTC)
    days = (cert.not_valid_after_utc - now).total_seconds() / 86400
    subject = cert.subject.rfc4514_string()
    where = f"{subject}, {creds.source}, key mode {os.stat(creds.key).st_mode & 0o777:04o}"
    if days < 0:
        return Result(
            "FAIL",
            name,
            f"certificate expired {-days:.0f} days ago ({where})",
            "rotate or re-provision the certificate",
        ), cert
    if days < CERT_WARN_DAYS:
        return Result(
            "WARN", name, f"certificate expires in {days:.0f} days ({where})", "rotate the certificate soon"
        ), cert
    return Result("PASS", name, f"certificate valid for {days:.0f} more days ({where})"), cert


def clock_state(
    timedatectl: str | None = "timedatectl",
    flag_file: Path = TIMESYNCD_FLAG,
    adjtimex: Callable[[], bool | None] = adjtimex_synced,
) -> tuple[bool | None, str]:
    """(synchronised?, how we know). timedatectl asks systemd-timedated, which knows about timesyncd,
    chrony and ntpd; without a running systemd, the timesyncd flag file; then the kernel's own
    STA_UNSYNC bit via adjtimex(2), read-only. None when nothing can tell."""
    exe = shutil.which(timedatectl) if timedatectl else None
    if exe:
        try:
            r = subprocess.run(
                [exe, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.TimeoutExpired):
            r = None
        if r is not None and r.returncode == 0 and r.stdout.strip() in ("yes", "no"):
            return r.stdout.strip() == "yes", "timedatectl NTPSynchronized"
    if flag_file.exists():
        return True, str(flag_file)
    state = adjtimex()
    return state, "adjtimex(2) STA_UNSYNC"


def check_clock(
    cert: x509.Certificate | None, state: tuple[bool | None, str], now: dt.datetime | None = None
) -> Result:
    synced, how = state
    now = now or dt.datetime.now(dt.UTC)
    if cert is not None and now < cert.not_valid_before_utc:
        return Result(
            "FAIL",
            "clock",
            f"clock says {now:%Y-%m-%d %H:%M}Z, before the certificate is valid "
            f"({cert.not_valid_before_utc:%Y-%m-%d}): TLS will fail",
            "enable time sync (timedatectl set-ntp true) and check NTP/5G time reaches the device",
        )
    if synced is None:
        return Result(
            "WARN", "clock", f"synchronisation unknown (no answer from {how})", "install systemd-timesyncd or chrony"
        )
    if not synced:
        return Result(
            "WARN",
            "clock",
            f"not synchronised (by {how}): readings are flagged clock_synced=false",
            "timedatectl set-ntp true; allow UDP 123 or use the modem's network time",
        )
    return Result("PASS", "clock", f"synchronised (by {how})")


def _device_paths(settings: Any) -> list[str]:
    """Device nodes a driver's settings name: the serial ``port``, ``device``/``path`` strings under
    /dev, and an I2C ``bus`` number as /dev/i2c-N."""
    out = []
    port = getattr(settings, "port", None)  # SerialSettings.port is always a device path (or a link to one)
    if isinstance(port, str) and port:
        out.append(port)
    for key in ("device", "path"):
        v = getattr(settings, key, None)
        if isinstance(v, str) and v.startswith("/dev/"):
            out.append(v)
    bus = getattr(settings, "bus", None)
    if isinstance(bus, int) and not isinstance(bus, bool):
        out.append(f"/dev/i2c-{bus}")
    return out


def _probe_node(path: str) -> tuple[str, str] | None:
    """None if the node opens read-write; else (status, why)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return "FAIL", f"{path} does not exist"
    except PermissionError:
        return "FAIL", f"{path}: permission denied for {ident.current_user()}"
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return "WARN", f"{path} is busy (the running agent holds it?)"
        return "FAIL", f"{path}: {exc.strerror}"
    os.close(fd)
    return None


def _read_once(sensor: cfg.SensorConfig, timeout_s: float) -> tuple[str, str]:
    """One driver read in a worker thread, bounded by ``timeout_s`` even if a driver misbehaves."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            drv = registry.create(sensor.driver, sensor.driver_settings())
            drv.open()
            try:
                box["m"] = drv.read()
            finally:
                drv.close()
        except DriverError as exc:
            box["err"] = f"{exc.kind}: {exc.message}"
        except OSError as exc:
            box["err"] = f"{type(exc).__name__}: {exc}"

    t = threading.Thread(target=work, name=f"doctor-{sensor.id}", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        return "FAIL", f"no answer within {timeout_s:.0f}s"
    if "err" in box:
        return "FAIL", box["err"]
    ms = box.get("m", [])
    if not ms:
        return "FAIL", "read returned no values"
    shown = ", ".join(f"{m.quantity}={m.value:g} {m.unit}" for m in ms[:3])
    if any(WARMING_UP in m.flags for m in ms):
        return "WARN", f"answering but warming up: {shown}"
    return "PASS", f"answering: {shown}"


def check_sensors(conf: cfg.AgentConfig, timeout_s: float) -> list[Result]:
    out = []
    for s in conf.sensors:
        name = f"sensor {s.id}"
        if not s.enabled:
            out.append(Result("PASS", name, "disabled in config: not checked"))
            continue
        settings = s.driver_settings()
        problem = None
        for node in _device_paths(settings):
            problem = _probe_node(node)
            if problem:
                break
        if problem:
            status, why = problem
            fix = (
                "stop the service for this check: systemctl stop methane-agent"
                if status == "WARN"
                else "check wiring and the path in the config; the user needs group dialout (serial) or i2c"
            )
            out.append(Result(status, name, f"{s.driver}: {why}", fix))  # type: ignore[arg-type]
            continue
        read_timeout = float(getattr(settings, "timeout_s", 1.0)) * 3 + timeout_s
        status, why = _read_once(s, read_timeout)
        out.append(
            Result(status, name, f"{s.driver}: {why}", "check power, wiring, baud rate and the sensor's address")  # type: ignore[arg-type]
        )
    if not conf.sensors:
        out.append(Result("WARN", "sensors", "no sensors configured", "add [[sensors]] to the config"))
    return out


def check_disk(conf: cfg.AgentConfig, statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> Result:
    where = conf.spool_path.parent
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = statvfs(str(probe))
    free = st.f_bavail * st.f_frsize
    need = conf.spool.min_free_disk_bytes
    mib = 1024 * 1024
    detail = f"{free / mib:.0f} MiB free on {probe}, headroom spool.min_free_disk_bytes={need / mib:.0f} MiB"
    if free < need:
        return Result(
            "FAIL",
            "disk",
            detail + ": the spool cannot store a single reading",
            "free space on the card or lower spool.min_free_disk_bytes",
        )
    if free < need + conf.spool.max_bytes:
        return Result(
            "WARN",
            "disk",
            detail + f", less than that plus spool.max_bytes ({conf.spool.max_bytes / mib:.0f} MiB):"
            " an outage fills the card first",
            "lower spool.max_bytes or free space",
        )
    return Result("PASS", "disk", detail)
