"""The registry's authz file at fleet scale: one more device recompiles one certificate's rules,
not the fleet's (a thousand provisionings were quadratic: ~0.3 s per rewrite at 1,000 devices), and
the incremental file stays identical to a full rebuild, including after another process (the admin
CLI) changed the registry."""

from __future__ import annotations

import hashlib
import json

from emulator import authz
from emulator.fleet_setup import CLAIM_POLICY_FILE, DEVICE_POLICY_FILE
from emulator.registry import Registry


def _cid(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _provision(reg: Registry, i: int) -> None:
    reg.add_certificate(_cid(i), "PEM", "PENDING_ACTIVATION", ownership_token=f"tok{i}")
    reg.take_token(f"tok{i}")
    reg.apply_provisioning(_cid(i), {"name": f"methane-{i}", "attributes": {"site": f"site-{i % 3}"},
                                     "groups": ["methane-fleet"]}, "ACTIVE", ["methane-device"])


def _lines(reg: Registry) -> list[str]:
    return sorted(reg.authz_file.read_text().splitlines()[1:])


def test_one_more_device_compiles_one_certificate(tmp_path, monkeypatch):
    reg = Registry(tmp_path / "registry")
    reg.put_policy("methane-device", json.loads(DEVICE_POLICY_FILE.read_text()))
    reg.put_policy("methane-claim", json.loads(CLAIM_POLICY_FILE.read_text()))
    for i in range(30):
        _provision(reg, i)
    compiled: list[str] = []
    real = authz.compile_rules

    def counting(certs, things, policies):
        certs = list(certs)
        compiled.extend(c.certificate_id for c in certs)
        return real(certs, things, policies)

    monkeypatch.setattr(authz, "compile_rules", counting)
    _provision(reg, 30)
    assert compiled == [_cid(30), _cid(30)]  # created (pending), then registered: nothing else
    incremental = _lines(reg)
    full = Registry(tmp_path / "registry")
    full.write_authz()
    assert _lines(full) == incremental and any(_cid(30) in line and "ACTIVE" in line for line in incremental)


def test_a_change_made_by_another_process_is_not_undone(tmp_path):
    reg = Registry(tmp_path / "registry")
    reg.put_policy("methane-device", json.loads(DEVICE_POLICY_FILE.read_text()))
    for i in range(3):
        _provision(reg, i)
    cli = Registry(tmp_path / "registry")  # `emulator cert revoke` in another process
    cli.revoke(_cid(1))
    cli.close()
    _provision(reg, 3)  # the running emulator provisions another device afterwards
    assert f"S {_cid(1)} REVOKED device" in reg.authz_file.read_text()
    held = Registry(tmp_path / "registry")
    held.hold_devices(True)
    assert f"S {_cid(0)} INACTIVE device" in held.authz_file.read_text()
    held.hold_devices(False)
    assert f"S {_cid(0)} ACTIVE device" in held.authz_file.read_text()


def test_deleting_a_thing_recompiles_its_certificates(tmp_path):
    reg = Registry(tmp_path / "registry")
    reg.put_policy("methane-device", json.loads(DEVICE_POLICY_FILE.read_text()))
    for i in range(2):
        _provision(reg, i)
    reg.delete_thing("methane-0")
    incremental = _lines(reg)
    full = Registry(tmp_path / "registry")
    full.write_authz()
    assert _lines(full) == incremental
    assert not any("methane-0" in line for line in incremental)  # no rule names the deleted thing
