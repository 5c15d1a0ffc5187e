"""Certificates for the emulator's HTTPS listener and its default app's certificate credential.

MSAL refuses any authority that is not ``https://`` (msal's authority validation), so the emulator always
serves TLS: a throwaway CA signs a server certificate for 127.0.0.1, ::1 and localhost, and clients trust
the CA's PEM file. RSA key generation is the slow part (~50 ms per key), so keys are made once per process
and reused by every emulator a test run starts; each instance still writes its own files.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files one emulator instance wrote."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class ClientCertificate:
    """A certificate credential for an app registration (what a tenant admin uploads)."""

    cert_pem: bytes
    key_pem: bytes
    #: SHA-1 thumbprint, upper-case hex (what MSAL's `{private_key, thumbprint}` form wants).
    thumbprint_sha1: str
    #: SHA-256 thumbprint, upper-case hex.
    thumbprint_sha256: str

    @property
    def x5t(self) -> str:
        """The JOSE `x5t` value: base64url of the SHA-1 digest."""
        return _b64url(bytes.fromhex(self.thumbprint_sha1))

    @property
    def x5t_s256(self) -> str:
        """The JOSE `x5t#S256` value: base64url of the SHA-256 digest."""
        return _b64url(bytes.fromhex(self.thumbprint_sha256))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_lock = threading.Lock()
_keys: dict[str, rsa.RSAPrivateKey] = {}


def cached_key(name: str) -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key, generated once per process per *name*."""
    with _lock:
        key = _keys.get(name)
        if key is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _keys[name] = key
        return key


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


_material: tuple[bytes, bytes, bytes] | None = None


def _server_material() -> tuple[bytes, bytes, bytes]:
    """(ca_pem, server_cert_pem, server_key_pem), built once per process."""
    global _material
    with _lock:
        if _material is not None:
            return _material
    ca_key = cached_key("ca")
    server_key = cached_key("server")
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncer Graph emulator CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    material = (
        ca_cert.public_bytes(serialization.Encoding.PEM),
        server_cert.public_bytes(serialization.Encoding.PEM),
        _key_pem(server_key),
    )
    with _lock:
        _material = material
    return material


def write_server_files(directory: Path) -> TlsFiles:
    """Write the CA, server certificate and key PEMs into *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = _server_material()
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    files.ca_cert.write_bytes(ca_pem)
    files.server_cert.write_bytes(cert_pem)
    files.server_key.write_bytes(key_pem)
    files.server_key.chmod(0o600)
    return files


def thumbprints(cert_pem: bytes) -> tuple[str, str]:
    """(SHA-1, SHA-256) thumbprints of a PEM certificate, upper-case hex."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper()


def make_client_certificate(name: str = "client", *, common_name: str = "syncer emulator app") -> ClientCertificate:
    """A self-signed certificate credential (cached key per *name*)."""
    key = cached_key(f"client:{name}")
    now = datetime.now(UTC) - timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    sha1, sha256 = thumbprints(cert_pem)
    return ClientCertificate(cert_pem, _key_pem(key), sha1, sha256)
