"""The emulator's private certificate authority.

IoT Core authenticates devices by an X.509 certificate its CA signed and names them by the
certificate's id; the emulator does the same with a throwaway CA kept in the state dir, so a test or a
developer gets real mutual TLS without any AWS account. Keys are written 0600 from the first byte and
every file is replaced atomically, so a crash never leaves a half-written key that a restart reuses.

Identity rule: the client certificate's subject CN is the MQTT identity (mosquitto runs with
``use_identity_as_username``), so the CN must be a valid thing name (or ``admin`` / ``claim*``).
X.509 limits a CN to 64 characters (RFC 5280 ub-common-name), so emulator identities are limited to 64
although IoT Core thing names may be 128.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import re
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.files import write_atomic

IDENTITY = re.compile(r"^[a-zA-Z0-9:_-]{1,64}$")
CA_DAYS = 3650
SERVER_DAYS = 825
CLIENT_DAYS = 365
# Certificates are back-dated so a peer whose clock is a little behind still accepts them.
_BACKDATE = dt.timedelta(minutes=5)


class PkiError(ValueError):
    """Bad input to the CA (identity, CSR, certificate): the message says what was wrong."""


def cert_id(cert_pem: str | bytes) -> str:
    """IoT Core's certificateId: sha256 of the DER certificate, lower-case hex."""
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def check_identity(cn: str) -> str:
    if not isinstance(cn, str) or not IDENTITY.fullmatch(cn):
        raise PkiError(f"invalid identity {cn!r}: 1-64 characters of [a-zA-Z0-9:_-] (a thing name)")
    return cn


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically, 0600 from its first byte (never chmod after write)."""
    write_atomic(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """Atomically replace a non-secret file (certificate, CRL, JSON) readable by everyone."""
    write_atomic(path, data, 0o644)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateAuthority:
    """A CA living in one folder: ``ca.pem``/``ca.key``, the server pair, client pairs under
    ``clients/``, and a CRL (``crl.pem``, regenerated from ``revoked.json``) for mosquitto's
    ``crlfile``. ``load_or_create`` reuses what exists so state persists across restarts."""

    def __init__(self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.dir = directory
        self.cert = cert
        self._key = key

    # -- files -----------------------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def server_cert_file(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key_file(self) -> Path:
        return self.dir / "server.key"

    @property
    def crl_file(self) -> Path:
        return self.dir / "crl.pem"

    def client_files(self, cn: str) -> tuple[Path, Path]:
        check_identity(cn)
        return self.dir / "clients" / f"{cn}.pem", self.dir / "clients" / f"{cn}.key"

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def load_or_create(cls, directory: Path, name: str = "methane-agent emulator CA") -> CertificateAuthority:
        directory = Path(directory)
        cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        if cert_path.exists() and key_path.exists():
            try:
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            except ValueError as exc:
                raise PkiError(f"corrupt CA in {directory}: {exc}") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise PkiError(f"CA key in {key_path} is not an EC key")
            ca = cls(directory, cert, key)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            key = _new_key()
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
            now = _now()
            cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _BACKDATE)
                .not_valid_after(now + dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True, content_commitment=False, key_encipherment=False,
                        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                        encipher_only=False, decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256())
            )
            # Key first: a CA cert without its key would be unusable on the next start.
            write_private(key_path, _key_pem(key))
            write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
            ca = cls(directory, cert, key)
        if not ca.crl_file.exists():
            ca.write_crl()
        return ca

    # -- issuing ---------------------------------------------------------------------------------
    def _sign(
        self,
        subject_cn: str,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        days: int,
        server_hosts: list[str] | None = None,
    ) -> x509.Certificate:
        if not 1 <= days <= CA_DAYS:
            raise PkiError(f"days must be 1..{CA_DAYS}, got {days}")
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if server_hosts is not None:
            names: list[x509.GeneralName] = []
            for host in server_hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            eku = ExtendedKeyUsageOID.SERVER_AUTH
        else:
            eku = ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def ensure_server(self, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
        """The broker's pair (SAN DNS:localhost, IP:127.0.0.1); reused when present."""
        if not (self.server_cert_file.exists() and self.server_key_file.exists()):
            key = _new_key()
            cert = self._sign(hosts[0], key.public_key(), SERVER_DAYS, server_hosts=list(hosts))
            write_private(self.server_key_file, _key_pem(key))
            write_public(self.server_cert_file, cert.public_bytes(serialization.Encoding.PEM))
        return self.server_cert_file, self.server_key_file

    def issue_client(self, cn: str, days: int = CLIENT_DAYS, reuse: bool = True) -> tuple[Path, Path]:
        """A client pair whose subject CN is the MQTT identity ``cn``. With ``reuse`` an existing
        pair is returned unchanged (state persists across emulator restarts)."""
        cert_path, key_path = self.client_files(cn)
        if reuse and cert_path.exists() and key_path.exists():
            return cert_path, key_path
        key = _new_key()
        cert = self._sign(cn, key.public_key(), days)
        write_private(key_path, _key_pem(key))
        write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    def sign_csr(self, csr_pem: str | bytes, cn: str, days: int = CLIENT_DAYS) -> str:
        """Sign a device's CSR as IoT Core's CreateCertificateFromCsr does: the subject is set by
        the CA (``cn``), not taken from the CSR; the CSR's own signature must verify."""
        check_identity(cn)
        data = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(data)
        except ValueError as exc:
            raise PkiError(f"not a PEM certificate signing request: {exc}") from None
        try:
            if not csr.is_signature_valid:
                raise PkiError("CSR signature does not verify")
        except InvalidSignature:
            raise PkiError("CSR signature does not verify") from None
        public_key = csr.public_key()
        if isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < 2048:
                raise PkiError(f"RSA key too small: {public_key.key_size} bits (need >= 2048)")
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            if public_key.curve.name not in ("secp256r1", "secp384r1"):
                raise PkiError(f"unsupported EC curve {public_key.curve.name} (use P-256 or P-384)")
        else:
            raise PkiError(f"unsupported key type {type(public_key).__name__} (use EC P-256/P-384 or RSA)")
        cert = self._sign(cn, public_key, days)
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    # -- revocation ------------------------------------------------------------------------------
    @property
    def _revoked_file(self) -> Path:
        return self.dir / "revoked.json"

    def revoked_serials(self) -> list[int]:
        try:
            return [int(s) for s in json.loads(self._revoked_file.read_text())]
        except FileNotFoundError:
            return []

    def revoke(self, cert_pem: str | bytes) -> int:
        """Add a certificate this CA issued to the CRL and rewrite ``crl.pem``. The broker sees it
        only after a reload (see emulator/README.md for what SIGHUP re-reads)."""
        data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError as exc:
            raise PkiError(f"not a PEM certificate: {exc}") from None
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature):
            raise PkiError("certificate was not issued by this CA") from None
        serials = self.revoked_serials()
        if cert.serial_number not in serials:
            serials.append(cert.serial_number)
            write_public(self._revoked_file, json.dumps([str(s) for s in serials]).encode())
        self.write_crl()
        return cert.serial_number

    def write_crl(self) -> Path:
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + dt.timedelta(days=CA_DAYS))
        )
        for serial in self.revoked_serials():
            revoked = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - _BACKDATE)
            builder = builder.add_revoked_certificate(revoked.build())
        crl = builder.sign(self._key, hashes.SHA256())
        write_public(self.crl_file, crl.public_bytes(serialization.Encoding.PEM))
        return self.crl_file
