"""Fleet provisioning by claim as a resumable, idempotent state machine.

Steps, each recorded in ``identity/provisioning.json`` (0600, atomic) before the next starts::

    new -> key-created -> certificate-created -> thing-registered -> identity-written -> verified

A crash or a lost network at any point resumes from the last recorded step:

- a key already made is reused (the CSR is re-made from it);
- a certificate already created is reused while its ownership token is fresher than
  ``TOKEN_MAX_AGE_S`` (IoT Core expires it at one hour); an older token, a wall clock that went
  backwards, or a RegisterThing that rejects the token, all mean creating the certificate again;
- a certificate whose answer was lost (crash before the state was saved) is simply orphaned:
  IoT Core deletes a certificate nobody registered within the hour;
- a crash after RegisterThing was sent but before its answer was saved: the ownership token is
  spent and the project's pre-provisioning hook refuses the claim certificate for a thing that
  now exists, so the flow first tries the stored pair as the thing ``thing_name_format`` names
  (the shipped template's ``methane-<serial>``); if it connects, RegisterThing went through and
  provisioning goes on from there (the template's deviceConfiguration answer is lost with the
  crash); if the broker refuses it, it registers as usual;
- after ``identity-written`` only the verification (connect with the new certificate and publish
  to the thing's own topic) is repeated.

On a device that is already provisioned and verified nothing happens unless ``force``. The claim
credentials are only ever read. Secrets (keys, ownership tokens) never reach a log line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from provisioning import identity as ident_mod
from provisioning import keys
from provisioning.files import ensure_dir, remove, remove_stale_temps, write_atomic, write_json
from provisioning.identity import Identity, identity_dir
from provisioning.serial import read_serial
from provisioning.session import (
    ConnectFailed,
    Endpoint,
    IdentityClient,
    MqttSession,
    ServiceRejected,
    SessionError,
)

log = logging.getLogger(__name__)

STATE_FILE = "provisioning.json"
LOCK_FILE = ".lock"
TOKEN_MAX_AGE_S = 55 * 60
CLOCK_SKEW_S = 300
VERIFY_TOPIC = "$aws/things/{thing}/shadow/get"
STEPS = ("new", "key-created", "certificate-created", "thing-registered", "identity-written", "verified")
Method = Literal["csr", "create-keys"]
Checkpoint = Callable[[str], None]


class ProvisioningError(Exception):
    """Provisioning stopped. ``transient`` says whether trying again later (network back) can help."""

    transient = False


class ProvisioningBusy(ProvisioningError):
    transient = True


class RegistrationRejected(ProvisioningError):
    def __init__(self, template: str, parameters: dict[str, str], cause: ServiceRejected) -> None:
        self.template = template
        self.parameters = dict(parameters)
        self.cause = cause
        params = ", ".join(f"{k}={v!r}" for k, v in sorted(parameters.items()))
        super().__init__(
            f"RegisterThing with template {template!r} and parameters {{{params}}} was rejected: "
            f"{cause.status_code} {cause.error_code}: {cause.error_message.rstrip('.')}. "
            "The claim credentials are untouched; fix the template, the parameters or the "
            "pre-provisioning hook and run provisioning again."
        )


class VerificationFailed(ProvisioningError):
    def __init__(self, thing: str, cause: SessionError) -> None:
        self.cause = cause
        self.transient = cause.transient
        super().__init__(f"the new identity {thing!r} could not be proven: {cause}")


def is_transient(exc: BaseException) -> bool:
    return bool(getattr(exc, "transient", False))


@dataclass(frozen=True)
class Settings:
    """What provisioning needs, handed over by the agent (provisioning never imports agent/)."""

    state_dir: Path
    endpoint: Endpoint
    claim_cert_file: Path
    claim_key_file: Path
    template_name: str
    parameters: dict[str, str] = field(default_factory=dict)
    key_type: keys.KeyType = "ec-p256"
    method: Method = "csr"
    serial_source: str = "auto"
    hardware_root: Path = Path("/")
    max_connect_attempts: int = 4
    request_timeout_s: int = 30
    verify_topic: str = VERIFY_TOPIC
    # The thing name the template makes from the serial; only used to finish a registration whose
    # answer a crash lost (see the module docstring).
    thing_name_format: str = "methane-{serial}"


@dataclass
class Outcome:
    identity: Identity
    already_provisioned: bool
    steps: list[str] = field(default_factory=list)


# --- state file ------------------------------------------------------------------------------------
class State:
    def __init__(self, directory: Path, data: dict[str, Any]) -> None:
        self.dir = directory
        self.data = data

    @property
    def path(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def step(self) -> str:
        return str(self.data.get("step", "new"))

    def at_least(self, step: str) -> bool:
        return STEPS.index(self.step) >= STEPS.index(step)

    def advance(self, step: str, **fields: Any) -> None:
        self.data.update(fields)
        self.data["step"] = step
        self.data["updated_at"] = time.time()
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data, 0o600)

    @classmethod
    def load(cls, directory: Path) -> State | None:
        path = directory / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            # A torn write is impossible (atomic rename); a hand-edited file that no longer parses
            # is treated as "no progress": redoing steps is always safe.
            log.warning("provisioning state unreadable, starting over", extra={"path": str(path)})
            return None
        if not isinstance(data, dict) or data.get("step") not in STEPS:
            log.warning("provisioning state malformed, starting over", extra={"path": str(path)})
            return None
        return cls(directory, data)

    @classmethod
    def new(cls, directory: Path, settings: Settings) -> State:
        return cls(directory, {"format": 1, "step": "new", "method": settings.method,
                               "key_type": settings.key_type, "started_at": time.time()})


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """One provisioning or rotation at a time per state dir (the service and an operator's CLI
    might both try)."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ProvisioningBusy(f"another provisioning or rotation holds {directory / LOCK_FILE}") from None
        yield
    finally:
        os.close(fd)


def token_expired(created_at: float, now: float) -> bool:
    age = now - created_at
    return age > TOKEN_MAX_AGE_S or age < -CLOCK_SKEW_S


def key_file_name(key: keys.PrivateKey) -> str:
    return f"key-{keys.public_fingerprint(key)}.pem"


def cert_file_name(certificate_id: str) -> str:
    return f"cert-{certificate_id[:16]}.pem"


def verify_identity(
    ident: Identity, endpoint: Endpoint, *, topic: str = VERIFY_TOPIC, max_attempts: int = 4, timeout_s: int = 30
) -> None:
    """Prove an identity: MQTT5 connect with its certificate (client id = thing name, as the
    device policy demands) and a QoS1 publish to the thing's own topic acknowledged with success.
    Raises SessionError (ConnectFailed says whether the certificate was refused)."""
    with MqttSession(endpoint, ident.cert_file, ident.key_file, ident.thing_name,
                     max_attempts=max_attempts, request_timeout_s=timeout_s) as s:
        s.publish(topic.format(thing=ident.thing_name), b"{}")


def cleanup_unreferenced(directory: Path, keep: set[str]) -> list[str]:
    """Remove key/cert generations no identity or pending state refers to (old pairs after
    --force or rotation, orphans of crashed runs): key material must not linger."""
    removed: list[str] = []
    for p in sorted(directory.glob("*.pem")):
        if (p.name.startswith("key-") or p.name.startswith("cert-")) and p.name not in keep:
            remove(p)
            removed.append(p.name)
    return removed


class Provisioner:
    def __init__(
        self,
        settings: Settings,
        *,
        checkpoint: Checkpoint | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self.dir = identity_dir(settings.state_dir)
        self._checkpoint = checkpoint or (lambda _name: None)
        self._clock = clock
        self._session: MqttSession | None = None
        self.steps: list[str] = []

    # -- public ------------------------------------------------------------------------------------
    def run(self, force: bool = False) -> Outcome:
        ensure_dir(self.s.state_dir)
        ensure_dir(self.dir)
        with locked(self.dir):
            try:
                return self._run(force)
            finally:
                self._close_claim()

    # -- steps -------------------------------------------------------------------------------------
    def _run(self, force: bool) -> Outcome:
        remove_stale_temps(self.dir)
        state = State.load(self.dir)
        current = self._current_identity(state)
        if current is not None and not force and (state is None or state.step == "verified"):
            log.info("already provisioned", extra={"thing_name": current.thing_name})
            return Outcome(current, already_provisioned=True)
        if state is None or (state.step == "verified" and (force or current is None)):
            state = State.new(self.dir, self.s)
            state.save()
            self._mark("new")
        if not state.at_least("identity-written"):
            self._provision(state)
        ident = ident_mod.load(self.s.state_dir)
        if ident is None:
            raise ProvisioningError(f"{self.dir / ident_mod.IDENTITY_FILE} vanished during provisioning")
        self._verify(state, ident)
        return Outcome(ident, already_provisioned=False, steps=self.steps)

    def _current_identity(self, state: State | None) -> Identity | None:
        try:
            return ident_mod.load(self.s.state_dir)
        except ident_mod.IdentityError:
            if state is not None and state.step != "verified":
                return None  # half-made by a crashed run; the state file says how to go on
            raise

    def _provision(self, state: State) -> None:
        ident_mod.check_permissions([self.s.claim_key_file])
        if "serial" not in state.data:
            serial = read_serial(self.s.serial_source, self.s.hardware_root)
            state.data["serial"] = serial
            state.save()
        serial = str(state.data["serial"])
        method: Method = "create-keys" if state.data.get("method") == "create-keys" else "csr"
        params = {"SerialNumber": serial, **self.s.parameters}

        if not state.at_least("thing-registered"):
            self._register(state, method, serial, params)
        thing_name = str(state.data["thing_name"])
        device_configuration = {str(k): str(v) for k, v in dict(state.data.get("device_configuration") or {}).items()}

        self._close_claim()  # the claim session's job is done; never keep it open longer
        new = Identity(
            thing_name=thing_name,
            endpoint=self.s.endpoint.host,
            certificate_id=str(state.data["certificate_id"]),
            cert_file=self.dir / str(state.data["cert_file"]),
            key_file=self.dir / str(state.data["key_file"]),
            device_configuration=device_configuration,
            template_name=self.s.template_name,
            provisioned_at=ident_mod.utc_now_iso(),
            not_after=keys.load_cert(self.dir / str(state.data["cert_file"])).not_valid_after_utc.isoformat(),
        )
        ident_mod.save(new, self.s.state_dir)
        state.advance("identity-written")
        self._mark("identity-written")

    def _register(self, state: State, method: Method, serial: str, params: dict[str, str]) -> None:
        if state.data.get("register_sent") and state.at_least("certificate-created") \
                and self._registration_went_through(state, serial, params):
            return
        for attempt in (1, 2):
            if not state.at_least("certificate-created") or self._token_stale(state):
                self._create_certificate(state, method, serial)
            state.advance(state.step, register_sent=True)  # from here a crash may leave the thing registered
            try:
                reg = self._claim().register_thing(self.s.template_name, params, str(state.data["ownership_token"]))
            except ServiceRejected as exc:
                if _token_problem(exc) and attempt == 1:
                    log.warning("ownership token refused, creating the certificate again",
                                extra={"error_code": exc.error_code})
                    state.advance("key-created" if method == "csr" else "new")
                    continue
                raise RegistrationRejected(self.s.template_name, params, exc) from None
            break
        self._checkpoint("registration-received")
        state.advance("thing-registered", thing_name=reg.thing_name, device_configuration=reg.device_configuration,
                      template_name=self.s.template_name, parameters=params)
        self._mark("thing-registered")
        log.info("thing registered", extra={"thing_name": reg.thing_name, "template": self.s.template_name})

    def _registration_went_through(self, state: State, serial: str, params: dict[str, str]) -> bool:
        """After a crash that may have lost RegisterThing's answer: does the stored pair already
        connect as the thing? Refused means it was never registered (go on as usual); a network
        failure propagates (transient: try again later, the token is still within its hour)."""
        thing_name = self.s.thing_name_format.format(serial=serial)
        probe = Identity(thing_name=thing_name, endpoint=self.s.endpoint.host,
                         certificate_id=str(state.data["certificate_id"]),
                         cert_file=self.dir / str(state.data["cert_file"]),
                         key_file=self.dir / str(state.data["key_file"]))
        self._close_claim()
        try:
            verify_identity(probe, self.s.endpoint, topic=self.s.verify_topic, max_attempts=1,
                            timeout_s=self.s.request_timeout_s)
        except ConnectFailed as exc:
            if exc.transient:
                raise
            log.info("stored certificate not registered yet, registering", extra={"thing_name": thing_name})
            return False
        log.info("registration found after a lost answer", extra={"thing_name": thing_name})
        state.advance("thing-registered", thing_name=thing_name, device_configuration={},
                      template_name=self.s.template_name, parameters=params)
        self._mark("thing-registered")
        return True

    def _token_stale(self, state: State) -> bool:
        if state.at_least("thing-registered"):
            return False
        try:
            created = float(state.data.get("certificate_created_at", 0))
        except (TypeError, ValueError):
            created = 0.0  # unreadable age: treat as expired, recreating is always safe
        if token_expired(created, self._clock()):
            log.info("ownership token too old, creating the certificate again",
                     extra={"certificate_id": state.data.get("certificate_id")})
            return True
        return False

    def _create_certificate(self, state: State, method: Method, serial: str) -> None:
        if method == "csr":
            key = self._device_key(state)
            csr = keys.make_csr(key, serial).decode()
            res = self._claim().create_certificate_from_csr(csr)
            self._checkpoint("certificate-received")
            cert = keys.load_cert_pem(res.certificate_pem.encode(), "CreateCertificateFromCsr answer")
            if not keys.matches(key, cert):
                raise ProvisioningError("IoT Core returned a certificate for a different key than our CSR")
            key_name = str(state.data["key_file"])
        else:
            res = self._claim().create_keys_and_certificate()
            self._checkpoint("certificate-received")
            assert res.private_key_pem is not None
            key = keys.load_key_pem(res.private_key_pem.encode(), "CreateKeysAndCertificate answer")
            cert = keys.load_cert_pem(res.certificate_pem.encode(), "CreateKeysAndCertificate answer")
            if not keys.matches(key, cert):
                raise ProvisioningError("CreateKeysAndCertificate returned a key that does not match its certificate")
            key_name = key_file_name(key)
            keys.write_key_pem(self.dir / key_name, res.private_key_pem.encode())
        cert_name = cert_file_name(res.certificate_id)
        write_atomic(self.dir / cert_name, res.certificate_pem.encode(), 0o600)
        state.advance(
            "certificate-created",
            key_file=key_name,
            cert_file=cert_name,
            certificate_id=res.certificate_id,
            ownership_token=res.ownership_token,
            certificate_created_at=self._clock(),
            register_sent=False,
        )
        self._mark("certificate-created")
        log.info("certificate created", extra={"certificate_id": res.certificate_id, "method": method})

    def _device_key(self, state: State) -> keys.PrivateKey:
        name = state.data.get("key_file")
        if name and (self.dir / str(name)).exists():
            return keys.load_key(self.dir / str(name))
        key_type: keys.KeyType = "rsa-2048" if state.data.get("key_type") == "rsa-2048" else "ec-p256"
        key = keys.generate(key_type)
        name = key_file_name(key)
        keys.write_key(self.dir / name, key)
        state.advance("key-created", key_file=name)
        self._mark("key-created")
        log.info("device key created", extra={"key_type": key_type, "key_id": name})
        return key

    def _verify(self, state: State, ident: Identity) -> None:
        self._close_claim()
        try:
            verify_identity(ident, self.s.endpoint, topic=self.s.verify_topic,
                            max_attempts=self.s.max_connect_attempts, timeout_s=self.s.request_timeout_s)
        except SessionError as exc:
            raise VerificationFailed(ident.thing_name, exc) from None
        keep = {ident.cert_file.name, ident.key_file.name}
        state.advance("verified", ownership_token=None, verified_at=time.time())
        removed = cleanup_unreferenced(self.dir, keep)
        self._mark("verified")
        log.info("identity verified", extra={"thing_name": ident.thing_name,
                                             "certificate_id": ident.certificate_id, "removed": removed})

    # -- helpers -----------------------------------------------------------------------------------
    def _mark(self, step: str) -> None:
        self.steps.append(step)
        self._checkpoint(step)

    def _claim(self) -> IdentityClient:
        if self._session is None:
            session = MqttSession(
                self.s.endpoint, self.s.claim_cert_file, self.s.claim_key_file,
                client_id=f"provision-{os.urandom(6).hex()}",
                max_attempts=self.s.max_connect_attempts, request_timeout_s=self.s.request_timeout_s,
            )
            session.open()
            self._session = session
        return self._session.identity()

    def _close_claim(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            session.close()


def _token_problem(exc: ServiceRejected) -> bool:
    text = f"{exc.error_code} {exc.error_message}".lower()
    return "ownershiptoken" in text.replace(" ", "") or ("token" in text and ("expired" in text or "invalid" in text))


def provision(settings: Settings, force: bool = False, checkpoint: Checkpoint | None = None) -> Outcome:
    return Provisioner(settings, checkpoint=checkpoint).run(force)


__all__ = [
    "ConnectFailed",
    "Endpoint",
    "Outcome",
    "ProvisioningError",
    "RegistrationRejected",
    "Settings",
    "VerificationFailed",
    "is_transient",
    "provision",
    "verify_identity",
]
