"""The device's private key, made on the device, and its certificate signing request.

With the CSR method the private key never leaves the gateway: only the CSR (public key plus a
signature proving possession) travels to IoT Core. Keys are written through
:func:`provisioning.files.write_atomic`, so the file is 0600 from its first byte. Nothing here logs
or returns key material in an exception message.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from provisioning.files import CredentialError, write_atomic

KeyType = Literal["ec-p256", "rsa-2048"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
KEY_TYPES: tuple[KeyType, ...] = ("ec-p256", "rsa-2048")


def generate(key_type: KeyType = "ec-p256") -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise CredentialError(f"unknown key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")


def to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_fingerprint(key: PrivateKey) -> str:
    """Short stable id of the key pair (sha256 of the public key DER), safe to log and to use in
    file names."""
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def write_key(path: Path, key: PrivateKey) -> Path:
    return write_atomic(path, to_pem(key), 0o600)


def write_key_pem(path: Path, pem: bytes) -> Path:
    """Store a PEM key received from IoT Core (CreateKeysAndCertificate) after checking it parses."""
    load_key_pem(pem, str(path))
    return write_atomic(path, pem, 0o600)


def load_key_pem(pem: bytes, name: str = "key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise CredentialError(f"{name}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CredentialError(f"{name}: unsupported key type {type(key).__name__} (EC or RSA only)")
    return key


def load_key(path: Path) -> PrivateKey:
    try:
        pem = Path(path).read_bytes()
    except FileNotFoundError:
        raise CredentialError(f"{path}: private key file not found") from None
    return load_key_pem(pem, str(path))


def make_csr(key: PrivateKey, common_name: str) -> bytes:
    """A PEM CSR signed by ``key``. IoT Core ignores the subject, but a meaningful CN (the serial
    number) helps an operator reading the CSR on the device."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def load_cert_pem(pem: bytes, name: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CredentialError(f"{name}: not a PEM certificate") from None


def load_cert(path: Path) -> x509.Certificate:
    try:
        pem = Path(path).read_bytes()
    except FileNotFoundError:
        raise CredentialError(f"{path}: certificate file not found") from None
    return load_cert_pem(pem, str(path))


def certificate_id(cert: x509.Certificate) -> str:
    """IoT Core's certificateId: sha256 of the DER certificate, lower-case hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def matches(key: PrivateKey, cert: x509.Certificate) -> bool:
    """True when the certificate carries this key's public half: a mismatched pair would fail the
    TLS handshake with an error that names neither file."""
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt)
