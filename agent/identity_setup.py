"""Start-up identity: provision when needed, fill the config from the identity, refuse unsafe files.

``prepare_identity(conf)`` runs before the agent's connection is built:

1. no identity in ``<state_dir>/identity/`` and ``provisioning.enabled``: run fleet provisioning by
   claim. While the network is down it keeps trying with capped full-jitter backoff inside the one
   process (a gateway that boots without a link must not crash-loop under systemd); a refusal that
   will repeat identically (template or parameters rejected, claim certificate refused, bad files)
   raises :class:`IdentitySetupError` at once with the reason.
2. returns the config with ``device.thing_name``, ``connection.cert_file``/``key_file`` and (when
   empty) ``connection.endpoint`` taken from the identity.
   Precedence: **explicit config wins** (an operator can point at a key in a TPM-backed path or
   pin a thing name), and a value that differs from the identity is logged as a warning. One
   exception is refused outright: ``connection.cert_file`` pointing at the claim certificate.
   ``device.site_id`` left unset takes the site the thing was registered with (the template's
   ``siteId``, which the pre-provisioning hook may have pinned): the device policy only lets a
   thing publish under the site recorded on it.
3. checks that the private key, certificate and identity.json are owned by the running user and
   not accessible to group/others (0600 or 0400), else raises with the exact fix command.
4. once the identity is verified, the fleet's claim key is of no more use to this device, and it
   is the one secret shared by the whole fleet: when it lives in ``<state_dir>/claim/`` (the
   install layout's place for it, writable by the service) it is deleted; anywhere else a warning
   says the service can still read it and how to stop that (docs/provisioning.md).

``heartbeat(status)`` is called at least every few seconds while provisioning waits, so the caller
can feed systemd (STATUS=, EXTEND_TIMEOUT_USEC=, WATCHDOG=1) during a long wait for the network.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import AgentConfig
from provisioning import identity as ident_mod
from provisioning.expiry import log_expiry
from provisioning.files import CredentialError, remove
from provisioning.identity import Identity, PermissionProblem

if TYPE_CHECKING:
    from provisioning.flow import Settings

# The provisioning flow, its MQTT session (awsiotsdk's identity client) and certificate handling
# (cryptography) are imported only when this gateway provisions or checks its certificate: a
# provisioned daemon in steady state does not carry them (docs: README "Performance").

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
BACKOFF_MIN_S = 5.0
BACKOFF_MAX_S = 300.0
CLAIM_DIR = "claim"
Heartbeat = Callable[[str], None]


class IdentitySetupError(Exception):
    """The agent must not start; the message says why and how to fix it."""


def provisioning_settings(conf: AgentConfig, hardware_root: Path = Path("/")) -> Settings:
    """``hardware_root``: where the serial number sources (/proc/cpuinfo, device tree) are read."""
    from provisioning.flow import Settings
    from provisioning.session import Endpoint

    p = conf.provisioning
    if p.claim_cert_file is None or p.claim_key_file is None:
        raise IdentitySetupError("provisioning needs provisioning.claim_cert_file and provisioning.claim_key_file")
    if not conf.connection.endpoint:
        raise IdentitySetupError("provisioning needs connection.endpoint (the IoT Core data endpoint)")
    params = dict(p.parameters)
    params.setdefault("SiteId", conf.device.site_id)
    return Settings(
        state_dir=conf.state_dir,
        endpoint=Endpoint(conf.connection.endpoint, conf.connection.port, conf.connection.ca_file),
        claim_cert_file=p.claim_cert_file,
        claim_key_file=p.claim_key_file,
        template_name=p.template_name,
        parameters=params,
        key_type=p.key_type,
        method=p.method,
        serial_source=p.serial_source,
        hardware_root=hardware_root,
    )


def _load_identity(conf: AgentConfig) -> Identity | None:
    try:
        return ident_mod.load(conf.state_dir)
    except ident_mod.IdentityError as exc:
        raise IdentitySetupError(f"identity unusable: {exc}; re-provision with `methane-agent provision --force`") \
            from None


def _wait(seconds: float, status: str, heartbeat: Heartbeat | None, stop: threading.Event) -> bool:
    """Sleep ``seconds`` in heartbeat-sized slices; True when asked to stop."""
    deadline = time.monotonic() + seconds
    while True:
        if heartbeat is not None:
            heartbeat(status)
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if stop.wait(min(HEARTBEAT_S, left)):
            return True


def _attempt(pool: concurrent.futures.ThreadPoolExecutor, settings: Settings, heartbeat: Heartbeat | None,
             attempt: int) -> Identity:
    """One provisioning run in the worker thread, feeding ``heartbeat`` while it waits. Refusals
    that will repeat identically become IdentitySetupError; transient ones propagate for a retry."""
    from provisioning.flow import Provisioner, ProvisioningError, is_transient
    from provisioning.identity import IdentityError
    from provisioning.keys import CredentialError
    from provisioning.serial import SerialError
    from provisioning.session import SessionError

    fut = pool.submit(Provisioner(settings).run)
    while True:
        try:
            return fut.result(timeout=HEARTBEAT_S).identity
        except concurrent.futures.TimeoutError:
            if heartbeat is not None:
                heartbeat(f"provisioning (attempt {attempt})")
        except (PermissionProblem, SerialError, CredentialError, IdentityError) as exc:
            raise IdentitySetupError(str(exc)) from None
        except (ProvisioningError, SessionError) as exc:
            if not is_transient(exc):
                raise IdentitySetupError(f"provisioning failed: {exc}") from None
            raise
        except OSError as exc:  # disk full, read-only state dir: an operator must act
            raise IdentitySetupError(f"provisioning failed writing its files: {exc}") from None


def run_provisioning(
    settings: Settings,
    *,
    heartbeat: Heartbeat | None = None,
    stop: threading.Event | None = None,
    backoff_min_s: float = BACKOFF_MIN_S,
    backoff_max_s: float = BACKOFF_MAX_S,
    max_attempts: int | None = None,
) -> Identity:
    """Provision, retrying transient failures (network) with full-jitter backoff until it works,
    ``stop`` is set or ``max_attempts`` is spent. Permanent failures raise IdentitySetupError.

    tenacity does the retry bookkeeping (attempts, randomised exponential wait, the warning before
    each wait); the wait itself is ours, sliced so systemd keeps hearing from us and a stop request
    ends it at once."""
    import tenacity  # only a gateway that still has to provision pays for it

    from provisioning.flow import ProvisioningError
    from provisioning.session import SessionError

    stop_event = stop or threading.Event()
    last_error = [""]

    def sleep(seconds: float) -> None:
        if _wait(seconds, f"provisioning: waiting {seconds:.0f}s to retry ({last_error[0]})", heartbeat, stop_event):
            raise IdentitySetupError("provisioning interrupted")

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        last_error[0] = str(exc)
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("provisioning failed, will retry", extra={"attempt": state.attempt_number,
                                                               "retry_in_s": round(delay, 1), "error": str(exc)})

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type((ProvisioningError, SessionError)),
        wait=tenacity.wait_random_exponential(multiplier=backoff_min_s, min=backoff_min_s, max=backoff_max_s),
        stop=tenacity.stop_after_attempt(max_attempts) if max_attempts is not None else tenacity.stop_never,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=False,
    )
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="provision") as pool:
        try:
            return retrying(lambda: _attempt(pool, settings, heartbeat, retrying.statistics["attempt_number"]))
        except tenacity.RetryError as exc:
            attempts = exc.last_attempt.attempt_number
            raise IdentitySetupError(f"provisioning failed {attempts} time(s), last: "
                                     f"{exc.last_attempt.exception()}") from None


def retire_claim_key(conf: AgentConfig) -> None:
    """Called with a verified identity: delete the claim key (and certificate) when they live in
    ``<state_dir>/claim/``; warn when the key is elsewhere and still readable."""
    p = conf.provisioning
    if p.claim_key_file is None:
        return
    claim_dir = (Path(conf.state_dir) / CLAIM_DIR).resolve()
    key = Path(p.claim_key_file).resolve()
    if key.parent != claim_dir:
        if os.access(key, os.R_OK):
            log.warning("the fleet's claim key is still readable by the service although this device is "
                        "provisioned; move it to <state_dir>/claim/ (deleted after provisioning) or delete it",
                        extra={"path": str(key), "claim_dir": str(claim_dir)})
        return
    removed = [str(f) for f in (p.claim_key_file, p.claim_cert_file)
               if f is not None and Path(f).resolve().parent == claim_dir and remove(Path(f).resolve())]
    if removed:
        log.info("claim credentials deleted: this device has its own verified identity", extra={"files": removed})


def _merge(conf: AgentConfig, ident: Identity) -> AgentConfig:
    device, conn = conf.device, conf.connection
    site = device.site_id
    registered_site = ident.device_configuration.get("siteId")
    if registered_site and registered_site != site:
        if "site_id" in device.model_fields_set:
            log.warning("device.site_id differs from the site the thing was registered with; the device policy "
                        "refuses topics under another site", extra={"config": site, "identity": registered_site})
        else:
            site = registered_site
    for name, explicit, found in (
        ("device.thing_name", device.thing_name, ident.thing_name),
        ("connection.cert_file", conn.cert_file, ident.cert_file),
        ("connection.key_file", conn.key_file, ident.key_file),
    ):
        if explicit is not None and str(explicit) != str(found):
            log.warning("config overrides the provisioned identity",
                        extra={"key": name, "config": str(explicit), "identity": str(found)})
    new_device = device.model_copy(update={"thing_name": device.thing_name or ident.thing_name, "site_id": site})
    new_conn = conn.model_copy(update={
        "cert_file": conn.cert_file or ident.cert_file,
        "key_file": conn.key_file or ident.key_file,
        "endpoint": conn.endpoint or ident.endpoint,
    })
    return conf.model_copy(update={"device": new_device, "connection": new_conn})


def prepare_identity(
    conf: AgentConfig,
    *,
    heartbeat: Heartbeat | None = None,
    stop: threading.Event | None = None,
    hardware_root: Path = Path("/"),
) -> AgentConfig:
    ident = _load_identity(conf)
    if conf.provisioning.enabled and (ident is None or conf.connection.endpoint):
        settings = provisioning_settings(conf, hardware_root)
        # Also finishes a run a crash interrupted (e.g. identity written, not yet verified); on a
        # verified device it returns at once without touching the network.
        ident = run_provisioning(settings, heartbeat=heartbeat, stop=stop)
        retire_claim_key(conf)
    out = _merge(conf, ident) if ident is not None else conf
    claim = conf.provisioning.claim_cert_file
    if claim is not None and out.connection.cert_file is not None and \
            Path(out.connection.cert_file).resolve() == Path(claim).resolve():
        raise IdentitySetupError(
            f"connection.cert_file is the claim certificate {claim}; remove connection.cert_file/key_file "
            "so the agent uses its provisioned identity"
        )
    # The certificate is public (0644 is normal, as AWS ships it); only its tampering matters.
    cert = out.connection.cert_file
    if cert is not None and Path(cert).exists() and Path(cert).stat().st_mode & 0o022:
        raise IdentitySetupError(
            f"certificate {cert} is writable by group/others; fix with: chmod go-w {cert}"
        )
    files = [p for p in (out.connection.key_file,) if p is not None]
    if ident is not None:
        files.append(ident_mod.identity_dir(conf.state_dir) / ident_mod.IDENTITY_FILE)
    try:
        ident_mod.check_permissions([Path(f) for f in dict.fromkeys(files)])
    except PermissionProblem as exc:
        raise IdentitySetupError(str(exc)) from None
    if ident is not None:
        try:
            log_expiry(ident, log)
        except CredentialError as exc:
            raise IdentitySetupError(f"identity certificate unusable: {exc}") from None
    return out
