"""Runs the checks in order, skipping what a failed prerequisite makes pointless."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.doctor import local, network
from agent.doctor.report import Result

CHECKS = ("config", "identity", "clock", "dns", "tls", "mqtt", "sensors", "disk")


@dataclass
class DoctorOptions:
    timeout_s: float = 5.0
    skip: set[str] = field(default_factory=set)
    topic: str = "dt/methane/{site}/{thing}/doctor"
    client_id: str | None = None


def run_checks(config_path: Path, opts: DoctorOptions | None = None) -> list[Result]:
    opts = opts or DoctorOptions()
    out: list[Result] = []
    first, conf = local.check_config(config_path)
    out.append(first)
    if conf is None:
        return out

    creds = local.Credentials(conf)
    cert = None
    ident_ok = False
    if "identity" not in opts.skip:
        r, cert = local.check_identity(creds)
        ident_ok = r.status != "FAIL"
        out.append(r)
    if "clock" not in opts.skip:
        out.append(local.check_clock(cert, local.clock_state()))

    c = conf.connection
    network_checks = [n for n in ("dns", "tls", "mqtt") if n not in opts.skip]
    if not c.endpoint:
        out.extend(
            Result(
                "WARN",
                n,
                "connection.endpoint is empty: offline mode, readings stay in the spool",
                "set connection.endpoint",
            )
            for n in network_checks
        )
    else:
        reachable = True
        if "dns" in network_checks:
            r = network.check_dns(c.endpoint, c.port, opts.timeout_s)
            reachable = r.status == "PASS"
            out.append(r)
        for n in ("tls", "mqtt"):
            if n not in network_checks:
                continue
            if not reachable or not ident_ok or creds.cert is None or creds.key is None:
                why = "endpoint does not resolve" if not reachable else "no usable identity"
                out.append(Result("FAIL", n, f"not attempted: {why}", "fix the checks above first"))
                continue
            if n == "tls":
                r = network.check_tls(c.endpoint, c.port, c.ca_file, creds.cert, creds.key, opts.timeout_s)
                reachable = r.status == "PASS"
            else:
                thing = creds.thing or "unknown-thing"
                topic = opts.topic.format(site=conf.device.site_id, thing=thing)
                client_id = opts.client_id or c.client_id or thing
                r = network.check_mqtt(
                    c.endpoint, c.port, c.ca_file, creds.cert, creds.key, client_id, topic, opts.timeout_s
                )
            out.append(r)
    if "sensors" not in opts.skip:
        out.extend(local.check_sensors(conf, opts.timeout_s))
    if "disk" not in opts.skip:
        out.append(local.check_disk(conf))
    return out
