"""The local IoT Core as one object: CA and identities, the mosquitto broker, then any extra
components (shadow, jobs, fleet provisioning services, the telemetry recorder) started once the
broker answers and stopped in reverse order.

A component is anything with ``start(info: EmulatorInfo)`` and ``stop()``; it usually connects to
the broker as ``admin`` using the paths in ``info``."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from cloud.preprovision.ports import Allowlist
from emulator.broker import Broker, BrokerError, BrokerFiles, PortInUseError, default_acl
from emulator.fleet_setup import FleetSetup
from emulator.fleet_setup import prepare as prepare_fleet
from emulator.pki import CertificateAuthority, check_identity
from emulator.services.provisioning import Hook, ProvisioningService
from emulator.services.provisioning_runner import ProvisioningRunner
from emulator.state import DeviceIdentity, EmulatorInfo, StateError

log = logging.getLogger(__name__)

DEFAULT_THING = "gw-0001"
ENDPOINT = "localhost"


class Component(Protocol):
    def start(self, info: EmulatorInfo) -> None: ...

    def stop(self) -> None: ...


class Emulator:
    """``with Emulator(state_dir) as emu:`` gives a running broker and ``emu.info``.

    State (CA, identities, the last port) persists in ``state_dir``: a second ``start`` with the
    same folder reuses the CA, so certificates handed out earlier keep working, and tries the
    previous port first."""

    def __init__(
        self,
        state_dir: Path | str,
        port: int | None = None,
        thing: str = DEFAULT_THING,
        components: Iterable[Component] = (),
        claim_identities: Sequence[str] = (),
        fleet_provisioning: bool = False,
        provisioning_hook: Hook | None = None,
        serial_allowlist: Allowlist | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.host = host
        self.port = port
        self.thing = check_identity(thing)
        self.components: list[Component] = list(components)
        self.claim_identities = list(claim_identities)
        self.ca: CertificateAuthority | None = None
        self.broker: Broker | None = None
        self.info: EmulatorInfo | None = None
        self._started: list[Component] = []
        # With fleet_provisioning the broker authorises per certificate through the authz plugin
        # (emulator/authz.py) and the fleet provisioning service runs; see docs/emulator.md.
        self.fleet_provisioning = fleet_provisioning
        # None: the project's hook (cloud/preprovision) with serial_allowlist (None: open).
        self.provisioning_hook = provisioning_hook
        self.serial_allowlist = serial_allowlist
        self.fleet: FleetSetup | None = None

    def add_component(self, component: Component) -> None:
        """Register a component; if the emulator is already up, it starts now."""
        self.components.append(component)
        if self.info is not None:
            component.start(self.info)
            self._started.append(component)

    def issue_identity(self, cn: str) -> tuple[Path, Path]:
        """A client cert/key pair signed by the emulator's CA for identity ``cn``."""
        if self.ca is None:
            raise BrokerError("emulator not started")
        return self.ca.issue_client(cn)

    def set_claim_identities(self, cns: Sequence[str]) -> None:
        """Allow these claim identities the fleet provisioning topics, live (ACL regenerated,
        broker reloaded)."""
        self.claim_identities = list(cns)
        if self.broker is not None:
            self.broker.set_acl(default_acl(self.claim_identities))
            if self.broker.running():
                self.broker.reload()

    def start(self) -> EmulatorInfo:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ca = CertificateAuthority.load_or_create(self.state_dir / "pki")
        server_cert, server_key = ca.ensure_server()
        admin_cert, admin_key = ca.issue_client("admin")
        dev_cert, dev_key = ca.issue_client(self.thing)
        files = BrokerFiles(ca.ca_file, server_cert, server_key, ca.crl_file, admin_cert, admin_key)
        self.ca = ca
        port = self.port if self.port is not None else self._previous_port()
        acl = default_acl(self.claim_identities)
        plugin = None
        if self.fleet_provisioning:
            self.fleet = prepare_fleet(self.state_dir, ca, admin_cert, dev_cert, self.thing, self.provisioning_hook,
                                       allowlist=self.serial_allowlist)
            plugin = self.fleet.plugin
        self.broker = Broker(self.state_dir / "broker", files, port=port, acl=acl, authz_plugin=plugin, host=self.host)
        try:
            self.broker.start()
        except PortInUseError:
            if self.port is not None or port is None:
                raise
            log.info("previous port unavailable, choosing a new one", extra={"port": port})
            self.broker = Broker(
                self.state_dir / "broker", files, port=None, acl=acl, authz_plugin=plugin, host=self.host
            )
            self.broker.start()
        assert self.broker.port is not None
        info = EmulatorInfo(
            state_dir=self.state_dir,
            endpoint=ENDPOINT,
            port=self.broker.port,
            ca_file=ca.ca_file,
            admin_cert_file=admin_cert,
            admin_key_file=admin_key,
            device=DeviceIdentity(self.thing, dev_cert, dev_key),
            claim_cert_file=self.fleet.claim_cert_file if self.fleet else None,
            claim_key_file=self.fleet.claim_key_file if self.fleet else None,
            template_name=self.fleet.template.name if self.fleet else None,
        )
        info.save()
        self.info = info
        try:
            if self.fleet is not None:
                runner = ProvisioningRunner(ProvisioningService(self.fleet.registry, ca, [self.fleet.template]))
                runner.start(info)
                self._started.append(runner)
            for component in self.components:
                component.start(info)
                self._started.append(component)
        except BaseException:
            self.stop()
            raise
        return info

    def restart_broker(self, down_s: float = 0.0) -> None:
        """Stop the broker (SIGTERM: it saves its sessions), keep it down ``down_s`` seconds, start it
        on the same port, and let devices in only once the emulator's own clients (services,
        telemetry recorder) are connected and subscribed again. Without this a device whose backoff
        fires first could publish, get its PUBACK and delete the batch before the recorder (the
        rules engine's stand-in, always subscribed on IoT Core) is back: a loss that exists only in
        the emulator. With fleet provisioning the hold is the authz file (devices refused, CONNACK
        "not authorized", they retry with their backoff); without it devices are not held."""
        if self.broker is None or self.info is None:
            raise BrokerError("emulator not started")
        info, started = self.info, list(self._started)
        self.broker.stop()
        if self.fleet is not None:
            self.fleet.registry.hold_devices(True)
        try:
            for component in reversed(started):
                component.stop()
            self._started = []
            time.sleep(down_s)
            self.broker.start()
            for component in started:
                component.start(info)
                self._started.append(component)
        finally:
            if self.fleet is not None:
                self.fleet.registry.hold_devices(False)

    def _previous_port(self) -> int | None:
        try:
            return EmulatorInfo.load(self.state_dir).port
        except StateError:
            return None

    def stop(self) -> None:
        """Components in reverse order, then the broker; the broker stops even if a component's
        stop raises (the exception still propagates)."""
        try:
            while self._started:
                self._started.pop().stop()
        finally:
            self.info = None
            if self.broker is not None:
                self.broker.stop()

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
