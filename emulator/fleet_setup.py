"""What an operator does in the AWS console before devices can provision, done for the emulator at
start: create the IoT policies from ``config/``, register the claim certificate with the claim
policy, register the fleet provisioning template, and register the emulator's own admin and
ready-made device identities. Also builds the broker's authz plugin.

Unless a test passes a hook of its own, RegisterThing goes through the project's pre-provisioning
hook (``cloud/preprovision``, as the Lambda runs it in AWS) with ``allowlist`` (default: open)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cloud.preprovision.allowlist import OpenAllowlist
from cloud.preprovision.ports import Allowlist
from emulator import authz
from emulator.broker import AuthzPlugin
from emulator.pki import CertificateAuthority, cert_id
from emulator.registry import Registry
from emulator.services.preprovision import project_hook
from emulator.services.provisioning import Hook, Template, load_template_file

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
TEMPLATE_FILE = CONFIG_DIR / "fleet-provisioning-template.json"
DEVICE_POLICY_FILE = CONFIG_DIR / "iot-policy-device.json"
CLAIM_POLICY_FILE = CONFIG_DIR / "iot-policy-claim.json"
TEMPLATE_NAME = "methane-fleet"
DEVICE_POLICY = "methane-device"
CLAIM_POLICY = "methane-claim"
CLAIM_IDENTITY = "claim-methane-fleet"


@dataclass(frozen=True)
class FleetSetup:
    registry: Registry
    plugin: AuthzPlugin
    template: Template
    claim_cert_file: Path
    claim_key_file: Path


def prepare(state_dir: Path, ca: CertificateAuthority, admin_cert: Path, device_cert: Path, thing: str,
            hook: Hook | None = None, template_file: Path = TEMPLATE_FILE,
            template_name: str = TEMPLATE_NAME, allowlist: Allowlist | None = None) -> FleetSetup:
    registry = Registry(state_dir / "registry")
    registry.put_policy(DEVICE_POLICY, json.loads(DEVICE_POLICY_FILE.read_text()))
    registry.put_policy(CLAIM_POLICY, json.loads(CLAIM_POLICY_FILE.read_text()))
    admin_pem = admin_cert.read_text()
    registry.add_certificate(cert_id(admin_pem), admin_pem, "ACTIVE", role="admin")
    dev_pem = device_cert.read_text()
    dev_id = cert_id(dev_pem)
    if registry.certificate(dev_id) is None:  # a revoked ready-made device stays revoked across restarts
        registry.add_certificate(dev_id, dev_pem, "ACTIVE", policies=[DEVICE_POLICY])
        registry.put_thing(thing, {"site": "site-1"}, principals=[dev_id])
    claim_cert, claim_key = ca.issue_client(CLAIM_IDENTITY)
    claim_pem = claim_cert.read_text()
    claim_id = cert_id(claim_pem)
    if registry.certificate(claim_id) is None:
        registry.add_certificate(claim_id, claim_pem, "ACTIVE", policies=[CLAIM_POLICY])
    if hook is None:
        hook = project_hook(registry, [claim_id], allowlist or OpenAllowlist())
    registry.write_authz()
    library = authz.build_plugin()
    plugin = AuthzPlugin(library, registry.authz_file, state_dir / "broker" / authz.STATS_FILE)
    template = load_template_file(template_name, template_file, hook)
    return FleetSetup(registry, plugin, template, claim_cert, claim_key)
