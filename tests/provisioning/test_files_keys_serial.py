"""Pure parts: atomic 0600 files, keys and CSRs, the hardware serial, identity.json and the
permission check."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning import files, identity, keys
from provisioning.serial import SerialError, read_serial


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# --- files -------------------------------------------------------------------------------------
def test_write_atomic_creates_with_final_mode_even_with_permissive_umask(tmp_path, monkeypatch):
    seen_modes: list[int] = []
    real_open = os.open

    def spy(path, flags, m=0o777, *a, **kw):
        fd = real_open(path, flags, m, *a, **kw)
        if flags & os.O_CREAT:
            seen_modes.append(stat.S_IMODE(os.fstat(fd).st_mode))  # mode at the first byte
        return fd

    monkeypatch.setattr(os, "open", spy)
    old = os.umask(0)
    try:
        p = files.write_atomic(tmp_path / "sub" / "secret.pem", b"data")
    finally:
        os.umask(old)
    assert p.read_bytes() == b"data"
    assert mode(p) == 0o600
    assert seen_modes and all(m == 0o600 for m in seen_modes)
    assert [x.name for x in p.parent.iterdir()] == ["secret.pem"]  # no temp left


def test_write_atomic_replaces_and_failure_leaves_old_content(tmp_path, monkeypatch):
    p = files.write_atomic(tmp_path / "f.json", b"old")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError, match="disk gone"):
        files.write_atomic(p, b"new")
    assert p.read_bytes() == b"old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.json"]


def test_remove_stale_temps(tmp_path):
    (tmp_path / ".identity.json.abc.tmp").write_text("x")
    (tmp_path / "keep.pem").write_text("y")
    assert files.remove_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pem"]


# --- keys --------------------------------------------------------------------------------------
@pytest.mark.parametrize("key_type, cls", [("ec-p256", ec.EllipticCurvePrivateKey), ("rsa-2048", rsa.RSAPrivateKey)])
def test_key_and_csr(tmp_path, key_type, cls):
    key = keys.generate(key_type)
    assert isinstance(key, cls)
    path = keys.write_key(tmp_path / "k.pem", key)
    assert mode(path) == 0o600
    again = keys.load_key(path)
    assert keys.public_fingerprint(again) == keys.public_fingerprint(key)
    csr = x509.load_pem_x509_csr(keys.make_csr(key, "serial-1"))
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=serial-1"
    other = keys.generate("ec-p256")
    assert keys.public_fingerprint(other) != keys.public_fingerprint(key)


def test_bad_key_file_message_names_file_not_content(tmp_path):
    p = tmp_path / "k.pem"
    p.write_text("-----BEGIN PRIVATE KEY-----\nnot really\n-----END PRIVATE KEY-----\n")
    with pytest.raises(keys.CredentialError) as e:
        keys.load_key(p)
    assert str(p) in str(e.value) and "not really" not in str(e.value)
    with pytest.raises(keys.CredentialError, match="not found"):
        keys.load_key(tmp_path / "missing.pem")
    with pytest.raises(keys.CredentialError, match="unknown key type"):
        keys.generate("dsa-1024")  # type: ignore[arg-type]


# --- serial ------------------------------------------------------------------------------------
def hw(tmp_path: Path, cpuinfo: str | None = None, dt: bytes | None = None, machine_id: str | None = None) -> Path:
    root = tmp_path / "root"
    if cpuinfo is not None:
        (root / "proc").mkdir(parents=True, exist_ok=True)
        (root / "proc/cpuinfo").write_text(cpuinfo)
    if dt is not None:
        (root / "sys/firmware/devicetree/base").mkdir(parents=True, exist_ok=True)
        (root / "sys/firmware/devicetree/base/serial-number").write_bytes(dt)
    if machine_id is not None:
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc/machine-id").write_text(machine_id)
    root.mkdir(exist_ok=True)
    return root


def test_serial_order_and_fallbacks(tmp_path):
    root = hw(tmp_path, cpuinfo="Serial\t\t: 10000000ABCDEF01\n", dt=b"DTSERIAL99\x00", machine_id="m" * 32 + "\n")
    assert read_serial("auto", root) == "10000000abcdef01"
    assert read_serial("device-tree", root) == "dtserial99"
    assert read_serial("machine-id", root) == "m" * 32


def test_zero_cpu_serial_falls_back_to_device_tree_then_machine_id(tmp_path):
    root = hw(tmp_path, cpuinfo="Serial\t\t: 0000000000000000\n", dt=b"00000000\x00", machine_id="abcd1234\n")
    assert read_serial("auto", root) == "abcd1234"


def test_no_serial_anywhere_names_what_was_tried(tmp_path):
    root = hw(tmp_path, cpuinfo="processor : 0\n")
    with pytest.raises(SerialError) as e:
        read_serial("auto", root)
    msg = str(e.value)
    assert "cpuinfo" in msg and "device-tree" in msg and "machine-id" in msg and "file:" in msg


def test_file_source_and_bad_values(tmp_path):
    f = tmp_path / "serial.txt"
    f.write_text("GW-Line3_0042\n")
    assert read_serial(f"file:{f}") == "gw-line3_0042"
    f.write_text("has space!\n")
    with pytest.raises(SerialError, match="not usable in a thing name"):
        read_serial(f"file:{f}")
    with pytest.raises(SerialError, match="unknown serial source"):
        read_serial("bios")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_serial_parsers_never_crash(tmp_path_factory, blob):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_bytes(b"Serial : " + blob)
    (root / "etc").mkdir()
    (root / "etc/machine-id").write_bytes(blob)
    try:
        value = read_serial("auto", root)
    except SerialError:
        return
    assert 4 <= len(value) <= 64 and value == value.lower()


# --- identity + permissions --------------------------------------------------------------------
def make_identity(tmp_path: Path) -> identity.Identity:
    d = identity.identity_dir(tmp_path)
    key = keys.generate("ec-p256")
    keys.write_key(d / "key-a.pem", key)
    files.write_atomic(d / "cert-a.pem", b"cert", 0o600)
    ident = identity.Identity("gw-1", "localhost", "ab" * 32, d / "cert-a.pem", d / "key-a.pem", {"x": "1"}, "t")
    identity.save(ident, tmp_path)
    return ident


def test_identity_roundtrip_relative_paths(tmp_path):
    ident = make_identity(tmp_path)
    raw = json.loads((identity.identity_dir(tmp_path) / "identity.json").read_text())
    assert raw["cert_file"] == "cert-a.pem" and raw["key_file"] == "key-a.pem"
    assert identity.load(tmp_path) == ident
    assert identity.load(tmp_path / "nowhere") is None


def test_identity_load_errors(tmp_path):
    make_identity(tmp_path)
    p = identity.identity_dir(tmp_path) / "identity.json"
    p.write_text("{not json")
    with pytest.raises(identity.IdentityError, match="not valid JSON"):
        identity.load(tmp_path)
    p.write_text(json.dumps({"thing_name": "gw", "certificate_id": "x", "cert_file": "gone.pem", "key_file": "k"}))
    with pytest.raises(identity.IdentityError, match=r"gone\.pem"):
        identity.load(tmp_path)
    p.write_text(json.dumps({"certificate_id": "x"}))
    with pytest.raises(identity.IdentityError, match="thing_name"):
        identity.load(tmp_path)


def test_check_permissions_accepts_0600_and_0400(tmp_path):
    ident = make_identity(tmp_path)
    os.chmod(ident.key_file, 0o400)
    identity.check_permissions([ident.key_file, ident.cert_file])


def test_check_permissions_refuses_group_readable_with_fix(tmp_path):
    ident = make_identity(tmp_path)
    os.chmod(ident.key_file, 0o640)
    with pytest.raises(identity.PermissionProblem) as e:
        identity.check_permissions([ident.key_file, ident.cert_file, tmp_path / "missing.pem"])
    msg = str(e.value)
    assert "0640" in msg and f"chmod 600 {ident.key_file}" in msg and f"chown {identity.current_user()}: " in msg
    assert "missing.pem: missing" in msg
    assert [p for p, _ in e.value.problems] == [ident.key_file, tmp_path / "missing.pem"]


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_check_permissions_refuses_foreign_owner(tmp_path):
    ident = make_identity(tmp_path)
    os.chown(ident.key_file, 65534, 65534)
    with pytest.raises(identity.PermissionProblem) as e:
        identity.check_permissions([ident.key_file])
    assert "owned by uid 65534" in str(e.value)
    assert f"chown {identity.current_user()}: {ident.key_file} && chmod 600 {ident.key_file}" in str(e.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
identity_like = st.fixed_dictionaries(
    {}, optional={k: json_values | st.just("key-a.pem") | st.just("cert-a.pem") for k in
                  ("thing_name", "endpoint", "certificate_id", "cert_file", "key_file", "device_configuration")},
)


@settings(max_examples=150, deadline=None)
@given(doc=st.one_of(json_values, identity_like), raw=st.binary(max_size=40))
def test_identity_load_fuzz_only_identity_error(tmp_path_factory, doc, raw):
    state = tmp_path_factory.mktemp("id")
    d = identity.identity_dir(state)
    d.mkdir()
    (d / "key-a.pem").write_text("k")
    (d / "cert-a.pem").write_text("c")
    for content in (json.dumps(doc).encode(), raw):
        (d / "identity.json").write_bytes(content)
        try:
            got = identity.load(state)
        except identity.IdentityError:
            continue
        assert got is not None and got.thing_name and got.cert_file.exists()


def test_flow_state_file_garbage_means_start_over(tmp_path):
    from provisioning.flow import STATE_FILE, State

    (tmp_path / STATE_FILE).write_text("{broken")
    assert State.load(tmp_path) is None
    (tmp_path / STATE_FILE).write_text(json.dumps({"step": "teleported"}))
    assert State.load(tmp_path) is None
    (tmp_path / STATE_FILE).write_text(json.dumps({"step": "key-created", "key_file": "key-x.pem"}))
    st_ = State.load(tmp_path)
    assert st_ is not None and st_.at_least("new") and not st_.at_least("certificate-created")
