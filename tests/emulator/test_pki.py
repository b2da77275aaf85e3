from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator import pki
from emulator.pki import CertificateAuthority, PkiError
from provisioning import files


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("ca"))


def _csr(key, cn: str = "whatever") -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_keys_are_0600_and_certs_public(ca):
    ca.ensure_server()
    ca.issue_client("gw-0001")
    for key in (ca.dir / "ca.key", ca.server_key_file, ca.dir / "clients" / "gw-0001.key"):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, key
    for cert in (ca.ca_file, ca.server_cert_file, ca.crl_file):
        assert stat.S_IMODE(os.stat(cert).st_mode) == 0o644, cert
    assert not list(ca.dir.glob(".*.tmp"))


def test_write_private_is_born_0600(tmp_path, monkeypatch):
    """The mode comes from open(2) itself: no window in which the key is world-readable, and no
    chmod after the write."""
    modes = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *a, **kw):
        if flags & os.O_CREAT:  # file creations (the directory fsync opens read-only)
            modes.append((str(path), flags & os.O_EXCL, mode))
        return real_open(path, flags, mode, *a, **kw)

    # pki writes through the project's one atomic writer.
    monkeypatch.setattr(files.os, "open", spy)
    monkeypatch.setattr(files.os, "chmod", lambda *a, **k: pytest.fail("chmod called"))
    pki.write_private(tmp_path / "k.key", b"secret")
    assert modes and all(m == 0o600 and excl for _, excl, m in modes)
    assert (tmp_path / "k.key").read_bytes() == b"secret"


def test_server_cert_has_localhost_sans_and_chains_to_ca(ca):
    cert_path, _ = ca.ensure_server()
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    cert.verify_directly_issued_by(ca.cert)


def test_client_cert_cn_is_the_identity_and_cert_id_is_sha256_of_der(ca):
    cert_path, key_path = ca.issue_client("gw-0042")
    pem = cert_path.read_text()
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert _cn(cert) == "gw-0042"
    cert.verify_directly_issued_by(ca.cert)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert pki.cert_id(pem) == hashlib.sha256(der).hexdigest()
    assert len(pki.cert_id(pem)) == 64
    assert ca.issue_client("gw-0042") == (cert_path, key_path)  # reused
    assert cert_path.read_text() == pem


def test_sign_csr_sets_cn_from_ca_not_from_csr(ca):
    key = ec.generate_private_key(ec.SECP256R1())
    pem = ca.sign_csr(_csr(key, cn="evil-admin"), cn="gw-0100", days=30)
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert _cn(cert) == "gw-0100"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    cert.verify_directly_issued_by(ca.cert)


def test_sign_csr_accepts_rsa_2048_and_rejects_small_rsa(ca):
    ok = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "BEGIN CERTIFICATE" in ca.sign_csr(_csr(ok), cn="gw-rsa")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(PkiError, match="RSA key too small"):
        ca.sign_csr(_csr(weak), cn="gw-rsa")


def test_sign_csr_rejects_tampered_csr(ca):
    der = bytearray(x509.load_pem_x509_csr(_csr(ec.generate_private_key(ec.SECP256R1()))).public_bytes(
        serialization.Encoding.DER
    ))
    der[-5] ^= 0xFF  # corrupt the signature, keep the structure
    pem = b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(bytes(der))
    pem += b"-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(PkiError):
        ca.sign_csr(pem, cn="gw-0001")


@pytest.mark.parametrize("cn", ["", "a/b", "x" * 65, "gw 1", "gw\n1", "../etc"])
def test_invalid_identities_are_refused(ca, cn):
    with pytest.raises(PkiError, match="invalid identity"):
        ca.issue_client(cn)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600))
def test_sign_csr_fuzz_only_raises_pki_error(ca, blob):
    with pytest.raises(PkiError):
        ca.sign_csr(blob, cn="gw-0001")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_check_identity_fuzz(cn):
    try:
        assert pki.check_identity(cn) == cn
    except PkiError:
        assert not pki.IDENTITY.fullmatch(cn)


def test_ca_is_reused_on_reload(tmp_path):
    first = CertificateAuthority.load_or_create(tmp_path)
    again = CertificateAuthority.load_or_create(tmp_path)
    assert first.cert == again.cert


def test_revoke_lists_serial_in_crl(ca):
    cert_path, _ = ca.issue_client("gw-revoke")
    pem = cert_path.read_text()
    serial = ca.revoke(pem)
    crl = x509.load_pem_x509_crl(ca.crl_file.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert crl.is_signature_valid(ca.cert.public_key())
    assert ca.revoke(pem) == serial  # idempotent
    assert ca.revoked_serials().count(serial) == 1


def test_revoke_refuses_foreign_certificate(ca, tmp_path):
    other = CertificateAuthority.load_or_create(tmp_path / "other")
    cert, _ = other.issue_client("gw-x")
    with pytest.raises(PkiError, match="not issued by this CA"):
        ca.revoke(cert.read_text())
    with pytest.raises(PkiError, match="not a PEM certificate"):
        ca.revoke("garbage")
