"""Certificate rotation and the expiry check.

Rotation follows the pattern AWS's own samples use for fleets provisioned by claim: a new key made
on the device, CreateCertificateFromCsr over the device's OWN connection (its policy allows the
``create-from-csr`` topics), RegisterThing with the same template and parameters (the template's
thing resource maps the serial to the same thing and attaches the new certificate), then:

1. the new certificate and key are written next to the old ones (new file names);
2. a fresh connection with the new pair must connect and get a QoS1 publish acknowledged;
3. only then ``identity.json`` is switched atomically (one rename) and the old pair deleted.

If anything before the switch fails, the new files are deleted and the old identity is untouched:
the device keeps running on the old certificate and the error says why. A crash mid-rotation
leaves ``rotation.json``; the next rotation (or start-up) discards that half-finished attempt.
The old certificate stays ACTIVE in IoT Core: deactivating it needs a cloud-side permission a
device should not hold (see docs/provisioning.md).

``rotate_certificate`` is the function API the ``rotate-cert`` command and a future
``rotate-certificate`` job both call.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from provisioning import identity as ident_mod
from provisioning import keys
from provisioning.files import remove, write_atomic, write_json
from provisioning.flow import (
    STATE_FILE,
    VERIFY_TOPIC,
    cert_file_name,
    cleanup_unreferenced,
    key_file_name,
    locked,
    verify_identity,
)
from provisioning.identity import Identity, identity_dir
from provisioning.session import Endpoint, IdentityClient, MqttSession, SessionError

log = logging.getLogger(__name__)

ROTATION_FILE = "rotation.json"


class RotationFailed(Exception):
    """Rotation did not complete. ``rolled_back`` is True when the old identity is in force and
    the new files were removed; ``transient`` when trying again later may help."""

    def __init__(self, reason: str, *, rolled_back: bool = True, transient: bool = False) -> None:
        self.reason = reason
        self.rolled_back = rolled_back
        self.transient = transient
        tail = " (rolled back: still using the old certificate)" if rolled_back else ""
        super().__init__(f"certificate rotation failed: {reason}{tail}")


@dataclass(frozen=True)
class RotationResult:
    thing_name: str
    old_certificate_id: str
    new_certificate_id: str
    not_after: dt.datetime


def discard_pending(state_dir: Path) -> list[str]:
    """Remove what an interrupted rotation left behind (its state file and new key/cert); the
    identity in force is never touched."""
    d = identity_dir(state_dir)
    path = d / ROTATION_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = {}
    current = ident_mod.load(state_dir)
    in_use = {current.cert_file.name, current.key_file.name} if current else set()
    removed = []
    for key in ("key_file", "cert_file"):
        name = data.get(key) if isinstance(data, dict) else None
        if isinstance(name, str) and name not in in_use and "/" not in name and remove(d / name):
            removed.append(name)
    remove(path)
    if removed:
        log.warning("discarded an interrupted certificate rotation", extra={"removed": removed})
    return removed


def _stored_parameters(state_dir: Path) -> tuple[str | None, dict[str, str]]:
    try:
        data = json.loads((identity_dir(state_dir) / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None, {}
    params = data.get("parameters") if isinstance(data, dict) else None
    template = data.get("template_name") if isinstance(data, dict) else None
    return (template if isinstance(template, str) else None,
            {str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {})


def rotate_certificate(
    state_dir: Path,
    endpoint: Endpoint,
    *,
    template_name: str | None = None,
    parameters: dict[str, str] | None = None,
    key_type: keys.KeyType = "ec-p256",
    identity_client: IdentityClient | None = None,
    before_verify: Callable[[Identity], None] | None = None,
    before_commit: Callable[[Identity], None] | None = None,
    max_connect_attempts: int = 4,
    request_timeout_s: int = 30,
    verify_topic: str = VERIFY_TOPIC,
) -> RotationResult:
    """Rotate the device certificate; see the module doc for the steps.

    ``identity_client``: an IdentityClient over the agent's live connection (a job); when None a
    short-lived session with the current certificate is opened. ``template_name``/``parameters``
    default to what provisioning used (recorded in the state file). ``before_verify`` runs just
    before the new pair is proven (tests use it to revoke the new certificate). ``before_commit``
    runs after the proof, just before the switch, under the same rollback: raising there (a job
    that timed out or was cancelled meanwhile) leaves the old identity in force."""
    d = identity_dir(state_dir)
    if not d.is_dir():
        raise RotationFailed("the device has no identity yet; provision it first", rolled_back=False)
    with locked(d):
        discard_pending(state_dir)
        current = ident_mod.load(state_dir)
        if current is None:
            raise RotationFailed("the device has no identity yet; provision it first", rolled_back=False)
        stored_template, stored_params = _stored_parameters(state_dir)
        template = template_name or stored_template or current.template_name
        if not template:
            raise RotationFailed("no template name recorded; pass template_name")
        params = {**stored_params, **(parameters or {})}
        pending: dict[str, object] = {"started_at": time.time(), "old_certificate_id": current.certificate_id}
        rotation_file = d / ROTATION_FILE

        key = keys.generate(key_type)
        key_name = key_file_name(key)
        keys.write_key(d / key_name, key)
        pending["key_file"] = key_name
        write_json(rotation_file, pending)
        candidate: Identity | None = None
        try:
            csr = keys.make_csr(key, current.thing_name).decode()
            session: MqttSession | None = None
            try:
                client = identity_client
                if client is None:
                    session = MqttSession(endpoint, current.cert_file, current.key_file, current.thing_name,
                                          max_attempts=max_connect_attempts, request_timeout_s=request_timeout_s)
                    session.open()
                    client = session.identity()
                res = client.create_certificate_from_csr(csr)
                cert = keys.load_cert_pem(res.certificate_pem.encode(), "CreateCertificateFromCsr answer")
                if not keys.matches(key, cert):
                    raise RotationFailed("IoT Core returned a certificate for a different key than our CSR")
                cert_name = cert_file_name(res.certificate_id)
                write_atomic(d / cert_name, res.certificate_pem.encode(), 0o600)
                pending.update(cert_file=cert_name, certificate_id=res.certificate_id)
                write_json(rotation_file, pending)
                reg = client.register_thing(template, params, res.ownership_token)
            finally:
                if session is not None:
                    session.close()
            if reg.thing_name != current.thing_name:
                raise RotationFailed(
                    f"template {template!r} registered the new certificate to thing {reg.thing_name!r}, "
                    f"not {current.thing_name!r}; check its parameters {params}"
                )
            candidate = replace(
                current,
                certificate_id=res.certificate_id,
                cert_file=d / cert_name,
                key_file=d / key_name,
                device_configuration=reg.device_configuration or current.device_configuration,
                provisioned_at=ident_mod.utc_now_iso(),
                not_after=cert.not_valid_after_utc.isoformat(),
            )
            if before_verify is not None:
                before_verify(candidate)
            verify_identity(candidate, endpoint, topic=verify_topic, max_attempts=max_connect_attempts,
                            timeout_s=request_timeout_s)
            if before_commit is not None:
                before_commit(candidate)
        except SessionError as exc:
            _rollback(d, pending)
            raise RotationFailed(str(exc), transient=exc.transient) from None
        except BaseException:  # RotationFailed, KeyboardInterrupt, anything: never leave half a rotation
            _rollback(d, pending)
            raise
        # Commit: one atomic rename switches the identity; then the old pair goes.
        ident_mod.save(candidate, state_dir)
        remove(rotation_file)
        removed = cleanup_unreferenced(d, {candidate.cert_file.name, candidate.key_file.name})
        log.info("certificate rotated", extra={"thing_name": current.thing_name,
                                               "old_certificate_id": current.certificate_id,
                                               "new_certificate_id": candidate.certificate_id, "removed": removed})
        return RotationResult(current.thing_name, current.certificate_id, candidate.certificate_id,
                              cert.not_valid_after_utc)


def _rollback(d: Path, pending: dict[str, object]) -> None:
    for k in ("key_file", "cert_file"):
        name = pending.get(k)
        if isinstance(name, str):
            remove(d / name)
    remove(d / ROTATION_FILE)
