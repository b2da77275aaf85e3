"""Fleet provisioning by claim (the MQTT "Identity" API): CreateKeysAndCertificate,
CreateCertificateFromCsr and RegisterThing, as IoT Core answers them (reference §2).

Pure logic over the registry and the CA: ``handle`` takes one request with the requesting client's
id (stamped by the broker plugin) and returns the replies, all marked ``direct`` because they carry
private keys and tokens meant for that one connection.

Error codes: ``InvalidCertificateOwnershipToken`` with "Certificate ownership token cannot be
empty." is confirmed from IoT Core; the other codes and messages below are the emulator's best
reading of the docs (UNVERIFIED, see docs/emulator.md) and live in ``ERRORS`` so they change in
one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from emulator.pki import CertificateAuthority, PkiError, cert_id
from emulator.registry import Registry, RegistryError, ResourceConflictError, TokenError
from emulator.services import templates
from emulator.services.outgoing import Outgoing, encode

log = logging.getLogger(__name__)

TOKEN_TTL_S = 3600.0
HOOK_TIMEOUT_S = 5.0
CERT_CN = "AWS-IoT-Certificate"
SUBSCRIPTIONS = (
    "$aws/certificates/create/+",
    "$aws/certificates/create-from-csr/+",
    "$aws/provisioning-templates/+/provision/+",
)
Hook = Callable[[dict[str, Any]], Mapping[str, Any]]

# (statusCode, errorCode) per failure kind.
ERRORS: dict[str, tuple[int, str]] = {
    "token": (400, "InvalidCertificateOwnershipToken"),
    "payload": (400, "InvalidPayload"),
    "parameters": (400, "InvalidParameters"),
    "csr": (400, "InvalidCSR"),
    "template": (404, "ResourceNotFound"),
    "denied": (403, "AccessDenied"),
    "conflict": (409, "ResourceConflict"),
    "internal": (500, "InternalFailure"),
}


class Rejected(Exception):
    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(message)

    def document(self) -> dict[str, Any]:
        status, code = ERRORS[self.kind]
        return {"statusCode": status, "errorCode": code, "errorMessage": self.message}


@dataclass(frozen=True)
class Template:
    name: str
    body: dict[str, Any]
    hook: Hook | None = None


def load_template_file(name: str, path: Path, hook: Hook | None = None) -> Template:
    return Template(name, templates.load_template(path.read_bytes(), str(path)), hook)


def command_hook(argv: Sequence[str], timeout_s: float = HOOK_TIMEOUT_S) -> Hook:
    """A pre-provisioning hook run as a program (argv, no shell): the hook event JSON on stdin,
    the response JSON on stdout, within ``timeout_s`` (IoT Core allows a Lambda 5 s)."""
    args = list(argv)
    if not args:
        raise ValueError("hook command needs at least the program")

    def run(event: dict[str, Any]) -> Mapping[str, Any]:
        proc = subprocess.run(args, input=json.dumps(event).encode(), capture_output=True, timeout=timeout_s,
                              check=False, shell=False)
        if proc.returncode != 0:
            raise HookError(f"hook exited with {proc.returncode}: {proc.stderr.decode(errors='replace')[-200:]}")
        doc = json.loads(proc.stdout)
        if not isinstance(doc, Mapping):
            raise HookError("hook printed JSON that is not an object")
        return doc

    return run


class HookError(RuntimeError):
    pass


class ProvisioningService:
    subscriptions = SUBSCRIPTIONS

    def __init__(self, registry: Registry, ca: CertificateAuthority, template_list: Sequence[Template],
                 clock: Callable[[], float] = time.time, token_ttl_s: float = TOKEN_TTL_S) -> None:
        self.registry = registry
        self.ca = ca
        self.templates = {t.name: t for t in template_list}
        self.clock = clock
        self.token_ttl_s = token_ttl_s

    def handle(self, topic: str, payload: bytes, client_id: str, claim_cert_id: str) -> list[Outgoing]:
        parts = topic.split("/")
        if len(parts) == 4 and parts[:2] == ["$aws", "certificates"] and parts[2] in ("create", "create-from-csr"):
            op, fmt = parts[2], parts[3]
        elif len(parts) == 5 and parts[:2] == ["$aws", "provisioning-templates"] and parts[3] == "provision":
            op, fmt = "provision", parts[4]
        else:
            return []
        if fmt != "json":
            # CBOR is not implemented: answer in JSON on the rejected topic so the device learns why.
            err = Rejected("payload", f"Payload format {fmt!r} is not supported by the emulator; use json.")
            return [Outgoing(f"{topic}/rejected", encode(err.document()), direct=True)]
        try:
            if op == "create":
                self._parse(payload, allow_empty=True)
                doc = self.create_keys_and_certificate()
            elif op == "create-from-csr":
                doc = self.create_certificate_from_csr(self._parse(payload))
            else:
                doc = self.register_thing(parts[2], self._parse(payload), client_id, claim_cert_id)
        except Rejected as rej:
            log.info("provisioning request rejected", extra={"topic": topic, "client_id": client_id,
                                                             "error": rej.message})
            return [Outgoing(f"{topic}/rejected", encode(rej.document()), direct=True)]
        return [Outgoing(f"{topic}/accepted", encode(doc), direct=True)]

    @staticmethod
    def _parse(payload: bytes, allow_empty: bool = False) -> dict[str, Any]:
        if allow_empty and not payload.strip():
            return {}
        try:
            doc = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Rejected("payload", "Invalid JSON") from None
        if not isinstance(doc, dict):
            raise Rejected("payload", "Payload must be a JSON object.")
        return doc

    # -- operations ------------------------------------------------------------------------------
    def _new_pending(self, cert_pem: str) -> dict[str, str]:
        cid = cert_id(cert_pem)
        token = secrets.token_urlsafe(96)
        self.registry.add_certificate(cid, cert_pem, "PENDING_ACTIVATION", ownership_token=token,
                                      token_ttl_s=self.token_ttl_s, created=self.clock())
        return {"certificateId": cid, "certificatePem": cert_pem, "certificateOwnershipToken": token}

    def create_keys_and_certificate(self) -> dict[str, str]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CERT_CN)]))
               .sign(key, hashes.SHA256()))
        cert_pem = self.ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), CERT_CN)
        doc = self._new_pending(cert_pem)
        doc["privateKey"] = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
        return doc

    def create_certificate_from_csr(self, req: Mapping[str, Any]) -> dict[str, str]:
        csr = req.get("certificateSigningRequest")
        if not isinstance(csr, str) or not csr.strip():
            raise Rejected("csr", "certificateSigningRequest is required and must be a PEM string.")
        try:
            cert_pem = self.ca.sign_csr(csr, CERT_CN)
        except PkiError as exc:
            raise Rejected("csr", f"Invalid certificate signing request: {exc}") from None
        return self._new_pending(cert_pem)

    def register_thing(self, template_name: str, req: Mapping[str, Any], client_id: str,
                       claim_cert_id: str) -> dict[str, Any]:
        template = self.templates.get(template_name)
        if template is None:
            raise Rejected("template", f"Template {template_name} does not exist.")
        token = req.get("certificateOwnershipToken")
        if not isinstance(token, str) or not token:
            raise Rejected("token", "Certificate ownership token cannot be empty.")
        params = req.get("parameters", {})
        if params is None:
            params = {}
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise Rejected("parameters", "parameters must be an object of string values.")
        try:
            cid = self.registry.take_token(token, now=self.clock())
        except TokenError as exc:
            raise Rejected("token", str(exc)) from None
        try:
            return self._register(template, cid, dict(params), client_id, claim_cert_id)
        except Rejected:
            self.registry.release_token(cid)  # the device may correct its request and retry
            raise

    def _register(self, template: Template, cid: str, params: dict[str, str], client_id: str,
                  claim_cert_id: str) -> dict[str, Any]:
        cert = self.registry.certificate(cid)
        if cert is None or cert.status != "PENDING_ACTIVATION":
            raise Rejected("token", "Invalid certificate ownership token.")
        if template.hook is not None:
            params = self._run_hook(template, cert.pem, cid, params, client_id, claim_cert_id)
        try:
            plan = templates.evaluate(template.body, params, cid)
        except templates.TemplateError as exc:
            if exc.parameter_problem:
                raise Rejected("parameters", str(exc)) from None
            log.error("provisioning template cannot be evaluated", extra={"template": template.name,
                                                                            "error": str(exc)})
            raise Rejected("internal", "Template evaluation failed.") from None
        policies = []
        for p in plan.policies:
            if p.policy_name is not None:
                if self.registry.policy(p.policy_name) is None:
                    raise Rejected("template", f"Policy {p.policy_name} does not exist.")
                policies.append(p.policy_name)
            else:
                assert p.policy_document is not None
                doc_json = json.dumps(p.policy_document, sort_keys=True)
                name = hashlib.sha256(doc_json.encode()).hexdigest()
                self.registry.put_policy(name, p.policy_document)
                policies.append(name)
        thing = None
        if plan.thing is not None:
            t = plan.thing
            thing = {"name": t.thing_name, "attributes": t.attributes, "groups": list(t.thing_groups),
                     "thing_type": t.thing_type_name, "billing_group": t.billing_group,
                     "override_settings": t.override_settings}
        status = plan.certificate.status if plan.certificate is not None else None
        try:
            self.registry.apply_provisioning(cid, thing, status, policies)
        except ResourceConflictError as exc:
            raise Rejected("conflict", str(exc)) from None
        except RegistryError as exc:
            raise Rejected("internal", str(exc)) from None
        out: dict[str, Any] = {"deviceConfiguration": plan.device_configuration}
        if plan.thing is not None:
            out["thingName"] = plan.thing.thing_name
        return out

    def _run_hook(self, template: Template, cert_pem: str, cid: str, params: dict[str, str], client_id: str,
                  claim_cert_id: str) -> dict[str, str]:
        assert template.hook is not None
        event = {"claimCertificateId": claim_cert_id, "certificateId": cid, "certificatePem": cert_pem,
                 "templateArn": f"arn:aws:iot:local:000000000000:provisioningtemplate/{template.name}",
                 "clientId": client_id, "parameters": dict(params)}
        try:
            answer = template.hook(event)
        except (HookError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
            log.warning("pre-provisioning hook failed", extra={"template": template.name, "error": str(exc)})
            raise Rejected("denied", "Pre-provisioning hook failed or denied the request.") from None
        if not isinstance(answer, Mapping) or answer.get("allowProvisioning") is not True:
            raise Rejected("denied", "Pre-provisioning hook failed or denied the request.")
        overrides = answer.get("parameterOverrides") or {}
        if not isinstance(overrides, Mapping) or not all(isinstance(v, str) for v in overrides.values()):
            raise Rejected("denied", "Pre-provisioning hook returned invalid parameterOverrides.")
        return {**params, **{str(k): v for k, v in overrides.items()}}
