"""``methane-agent provision --config FILE [--force]`` and ``methane-agent rotate-cert --config FILE``.

Exit codes: 0 done (or already provisioned), 2 configuration error, 3 refused (template/parameters
rejected, permissions, certificate refused: fix something first), 4 temporary failure (network:
run again later; the state file lets the next run resume)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent import config as cfg
from agent.commands.config_cmd import EXIT_CONFIG

EXIT_REFUSED = 3
EXIT_TEMPORARY = 4


def _load(path: str) -> cfg.AgentConfig | None:
    try:
        return cfg.load(Path(path))
    except cfg.ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def _provision(args: argparse.Namespace) -> int:
    from agent.identity_setup import IdentitySetupError, provisioning_settings, retire_claim_key
    from provisioning.flow import Provisioner, ProvisioningError, is_transient
    from provisioning.identity import IdentityError, PermissionProblem
    from provisioning.keys import CredentialError
    from provisioning.serial import SerialError
    from provisioning.session import SessionError

    conf = _load(args.config)
    if conf is None:
        return EXIT_CONFIG
    if conf.provisioning.claim_cert_file is None or conf.provisioning.claim_key_file is None:
        print(f"{args.config}: set provisioning.claim_cert_file and provisioning.claim_key_file", file=sys.stderr)
        return EXIT_CONFIG
    try:
        settings = provisioning_settings(conf)
        outcome = Provisioner(settings).run(force=args.force)
    except IdentitySetupError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except (PermissionProblem, SerialError, CredentialError, IdentityError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_REFUSED
    except SessionError as exc:
        print(f"provisioning failed: {exc}", file=sys.stderr)
        return EXIT_TEMPORARY if exc.transient else EXIT_REFUSED
    except ProvisioningError as exc:
        print(f"provisioning failed: {exc}", file=sys.stderr)
        return EXIT_TEMPORARY if is_transient(exc) else EXIT_REFUSED
    ident = outcome.identity
    retire_claim_key(conf)
    if outcome.already_provisioned:
        print(f"already provisioned as {ident.thing_name} (certificate {ident.certificate_id[:12]}); "
              "use --force to provision again")
    else:
        print(f"provisioned as {ident.thing_name} (certificate {ident.certificate_id[:12]}), verified by connecting")
    if args.json:
        print(json.dumps({"thing_name": ident.thing_name, "certificate_id": ident.certificate_id,
                          "endpoint": ident.endpoint, "device_configuration": ident.device_configuration,
                          "already_provisioned": outcome.already_provisioned, "steps": outcome.steps}))
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from provisioning import identity as ident_mod
    from provisioning.flow import ProvisioningBusy
    from provisioning.rotation import RotationFailed, rotate_certificate
    from provisioning.session import Endpoint

    conf = _load(args.config)
    if conf is None:
        return EXIT_CONFIG
    try:
        ident = ident_mod.load(conf.state_dir)
    except ident_mod.IdentityError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_REFUSED
    endpoint_host = conf.connection.endpoint or (ident.endpoint if ident else "")
    if not endpoint_host:
        print("no endpoint: set connection.endpoint", file=sys.stderr)
        return EXIT_CONFIG
    endpoint = Endpoint(endpoint_host, conf.connection.port, conf.connection.ca_file)
    try:
        res = rotate_certificate(conf.state_dir, endpoint, key_type=conf.provisioning.key_type,
                                 template_name=None, parameters=None)
    except RotationFailed as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_TEMPORARY if exc.transient else EXIT_REFUSED
    except ProvisioningBusy as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_TEMPORARY
    print(f"rotated {res.thing_name}: certificate {res.old_certificate_id[:12]} -> {res.new_certificate_id[:12]}, "
          f"valid until {res.not_after:%Y-%m-%d}; restart the agent (or let it reconnect) to use it")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("provision", help="become a registered thing by fleet provisioning with the claim certificate")
    p.add_argument("--config", required=True)
    p.add_argument("--force", action="store_true", help="provision again although an identity exists")
    p.add_argument("--json", action="store_true", help="also print the identity as JSON")
    p.set_defaults(func=_provision)
    r = sub.add_parser("rotate-cert", help="new key and certificate over the device's own connection")
    r.add_argument("--config", required=True)
    r.set_defaults(func=_rotate)
