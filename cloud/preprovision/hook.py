"""The fleet's pre-provisioning hook: one pure decision per RegisterThing request.

IoT Core calls the hook (a Lambda; the emulator calls the same function) before it renders the
provisioning template, with the event documented for payloadVersion ``2020-04-01``
(``claimCertificateId``, ``certificateId``, ``certificatePem``, ``templateArn``, ``clientId``,
``parameters``), and expects ``{"allowProvisioning": bool, "parameterOverrides": {str: str}}``.

Why it exists: the device policy lets every device call RegisterThing (certificate rotation needs
it), the template derives the thing name from the caller's ``SerialNumber``, and RegisterThing
attaches the new certificate to a thing that already exists. Without this hook any gateway, or
anyone holding the fleet's shared claim key, could attach a certificate of their own to another
gateway's thing and become it. The rules:

- a thing that does not exist yet is created only for a request made with one of the fleet's
  claim certificates, and only for a serial on the allowlist (manufactured units);
- a thing that exists is registered again only when the requesting certificate
  (``claimCertificateId``) is already attached to that very thing: the device rotating its own
  certificate. The claim certificate can never re-register an existing thing (re-enrolment of a
  wiped gateway means an operator deletes the thing first);
- everything else is denied, and every decision is logged with its reason (never the PEM).

Overrides: the site a thing joins is not the device's to choose when it is known. A new thing gets
the site its allowlist entry pins (if any); a rotating thing keeps the site recorded on it, so a
device cannot move itself under another site's topics (the device policy binds the site segment
of its topics to the thing's ``site`` attribute).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud.preprovision.ports import Allowlist, LookupFailed, ThingDirectory

log = logging.getLogger(__name__)

CERT_ID_RE = re.compile(r"^[0-9a-f]{64}$")
SERIAL_RE = re.compile(r"^[A-Za-z0-9:_-]{1,64}$")
THING_NAME_RE = re.compile(r"^[A-Za-z0-9:_-]{1,128}$")
SITE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # the agent's device.site_id rule
MAX_PARAMETERS = 32
MAX_VALUE_CHARS = 2048


@dataclass(frozen=True)
class HookConfig:
    """What the hook must be told about the fleet. ``thing_name_format`` mirrors the template's
    ThingName (``methane-`` + SerialNumber in config/fleet-provisioning-template.json)."""

    claim_certificate_ids: frozenset[str]
    thing_name_format: str = "methane-{serial}"
    serial_parameter: str = "SerialNumber"
    site_parameter: str = "SiteId"
    site_attribute: str = "site"


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str
    thing_name: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)

    def response(self) -> dict[str, Any]:
        """IoT Core's answer format; overrides only when provisioning is allowed."""
        return {"allowProvisioning": self.allow, "parameterOverrides": dict(self.overrides) if self.allow else {}}


class _Denied(Exception):
    def __init__(self, reason: str, thing_name: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.thing_name = thing_name


def _cert_id(event: Mapping[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str) or not CERT_ID_RE.fullmatch(value):
        raise _Denied(f"{key} is missing or not a certificate id (64 lowercase hex characters)")
    return value


def _parameters(event: Mapping[str, Any]) -> dict[str, str]:
    raw = event.get("parameters")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or len(raw) > MAX_PARAMETERS:
        raise _Denied(f"parameters must be an object of at most {MAX_PARAMETERS} strings")
    out: dict[str, str] = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(v) > MAX_VALUE_CHARS:
            raise _Denied("parameters must map strings to strings")
        out[k] = v
    return out


def _decide(event: Any, config: HookConfig, things: ThingDirectory, allowlist: Allowlist) -> Decision:
    if not isinstance(event, Mapping):
        raise _Denied("event is not a JSON object")
    requester = _cert_id(event, "claimCertificateId")
    _cert_id(event, "certificateId")
    params = _parameters(event)
    serial = params.get(config.serial_parameter)
    if serial is None or not SERIAL_RE.fullmatch(serial):
        raise _Denied(f"{config.serial_parameter} is missing or not 1-64 of [A-Za-z0-9:_-]")
    thing_name = config.thing_name_format.format(serial=serial)
    if not THING_NAME_RE.fullmatch(thing_name):
        raise _Denied(f"thing name {thing_name!r} is not a valid thing name")
    asked_site = params.get(config.site_parameter)
    if asked_site is not None and not SITE_RE.fullmatch(asked_site):
        # The site becomes a topic level the device policy grants (Attributes[site]): no '/', no wildcards.
        raise _Denied(f"{config.site_parameter} is not 1-64 of [A-Za-z0-9_-]")
    is_claim = requester in config.claim_certificate_ids

    try:
        thing = things.describe(thing_name)
    except LookupFailed as exc:
        raise _Denied(f"thing registry lookup failed: {exc}", thing_name) from None
    if thing is None:
        if not is_claim:
            raise _Denied("a new thing can only be registered with the fleet's claim certificate; the requesting "
                          "certificate is not one", thing_name)
        try:
            entry = allowlist.lookup(serial)
        except LookupFailed as exc:
            raise _Denied(f"allowlist lookup failed: {exc}", thing_name) from None
        if entry is None:
            raise _Denied(f"serial {serial!r} is not on the allowlist", thing_name)
        overrides: dict[str, str] = {}
        if entry.site is not None:
            overrides[config.site_parameter] = entry.site
        return Decision(True, "new thing from the claim certificate, serial on the allowlist"
                        + (f", site pinned to {entry.site!r}" if entry.site and entry.site != asked_site else ""),
                        thing_name, overrides)
    if is_claim:
        raise _Denied("the claim certificate may not register a thing that already exists (re-enrolment: delete "
                      "the thing first)", thing_name)
    if requester not in thing.principals:
        raise _Denied("the requesting certificate is not attached to this thing", thing_name)
    overrides = {}
    site = thing.attributes.get(config.site_attribute)
    if site is not None and SITE_RE.fullmatch(site):
        overrides[config.site_parameter] = site
    return Decision(True, "rotation: the requesting certificate is attached to this thing"
                    + (f", site kept at {site!r}" if site and site != asked_site else ""), thing_name, overrides)


def decide(event: Any, config: HookConfig, things: ThingDirectory, allowlist: Allowlist) -> Decision:
    """Allow or deny one RegisterThing request (never raises for any input; ports that fail deny)."""
    try:
        decision = _decide(event, config, things, allowlist)
    except _Denied as denied:
        decision = Decision(False, denied.reason, denied.thing_name)
    fields = {"allow": decision.allow, "reason": decision.reason, "thing_name": decision.thing_name,
              "overrides": decision.overrides}
    if isinstance(event, Mapping):
        for key in ("claimCertificateId", "certificateId", "clientId", "templateArn"):
            value = event.get(key)
            if isinstance(value, str):
                fields[key] = value[:256]
    if decision.allow:
        log.info("pre-provisioning hook allowed: %s", decision.reason, extra=fields)
    else:
        log.warning("pre-provisioning hook denied: %s", decision.reason, extra=fields)
    return decision


def respond(event: Any, config: HookConfig, things: ThingDirectory, allowlist: Allowlist) -> dict[str, Any]:
    """``decide`` in IoT Core's answer format."""
    return decide(event, config, things, allowlist).response()
