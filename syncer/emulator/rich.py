"""Rich-notification cryptography, done the way Graph does it (https://learn.microsoft.com/graph/change-notifications-with-resource-data).

Graph never sends a rich resource in clear: it encrypts each item's JSON with a fresh symmetric key and wraps that key
with the public key of the certificate the subscriber uploaded, then adds ``validationTokens`` (JWTs signed by the
identity platform) so the receiver can tell Graph's POSTs from forgeries. The emulator reproduces both byte-for-byte
in shape so a receiver written against the documentation decrypts and validates our notifications unchanged.

This module is pure (no Flask, no state): the subscription API uses :func:`load_encryption_certificate` to check an
uploaded certificate, the dispatcher uses :func:`encrypt_content` and :func:`validation_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac as std_hmac
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding

# The Microsoft Graph change-notification publisher: receivers are told to check that ``appid`` equals this value
# ("critical" in the docs), so our tokens must carry it.
GRAPH_NOTIFICATION_PUBLISHER_APPID = "0bf30f3b-4a52-48df-9a82-234910c4a086"

# Graph documents RSA keys of 2048-4096 bits for the encryption certificate.
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 4096

# 32 bytes = AES-256, inferred from Microsoft's JS sample (aes-256-cbc); the docs never state the length.
DATA_KEY_BYTES = 32


class CertificateError(ValueError):
    """The uploaded encryptionCertificate cannot be used (not base64 DER X.509, not RSA, wrong key size)."""


@dataclass(frozen=True)
class EncryptionCertificate:
    """A parsed subscriber certificate: its RSA public key and the thumbprint Graph echoes in encryptedContent."""

    public_key: rsa.RSAPublicKey
    thumbprint: str


def load_encryption_certificate(encoded: str) -> EncryptionCertificate:
    """Parse a subscription's ``encryptionCertificate`` (Base64 of a DER X.509 certificate, public key only)."""
    try:
        der = base64.b64decode(encoded.strip(), validate=True)
        certificate = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise CertificateError("encryptionCertificate is not a Base64-encoded X.509 certificate.") from exc
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateError("encryptionCertificate must hold an RSA public key.")
    if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise CertificateError(
            f"encryptionCertificate key size must be between {MIN_RSA_BITS} and {MAX_RSA_BITS} bits, found {key.key_size}."
        )
    return EncryptionCertificate(public_key=key, thumbprint=certificate_thumbprint(certificate))


def certificate_thumbprint(certificate: x509.Certificate) -> str:
    """Upper-case hex SHA-1 of the DER certificate.

    The docs' example is 40 upper-case hex characters, the size of a SHA-1 digest and the way Windows prints
    certificate thumbprints; the hash algorithm itself is not stated [UNCONFIRMED].
    """
    return hashlib.sha1(certificate.public_bytes(Encoding.DER)).hexdigest().upper()


def encrypt_content(
    resource: Mapping[str, Any] | bytes,
    *,
    certificate: EncryptionCertificate,
    certificate_id: str,
    data_key: bytes | None = None,
) -> dict[str, str]:
    """Build one ``encryptedContent`` object for *resource* (a dict is serialised to UTF-8 JSON).

    A fresh random key per item (the docs tell receivers to assume one), ``iv = key[:16]``, AES-256-CBC with PKCS7,
    HMAC-SHA256 over the ciphertext bytes, and the key wrapped with RSA-OAEP using SHA-1 for both the hash and MGF1.
    *data_key* exists only so tests can pin the key.
    """
    plaintext = resource if isinstance(resource, bytes) else orjson.dumps(dict(resource))
    key = data_key if data_key is not None else os.urandom(DATA_KEY_BYTES)
    if len(key) != DATA_KEY_BYTES:
        raise ValueError(f"data key must be {DATA_KEY_BYTES} bytes, got {len(key)}")
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    signature = std_hmac.new(key, ciphertext, hashlib.sha256).digest()
    wrapped_key = certificate.public_key.encrypt(
        key,
        asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    )
    return {
        "data": base64.b64encode(ciphertext).decode("ascii"),
        "dataSignature": base64.b64encode(signature).decode("ascii"),
        "dataKey": base64.b64encode(wrapped_key).decode("ascii"),
        "encryptionCertificateId": certificate_id,
        "encryptionCertificateThumbprint": certificate.thumbprint,
    }


def validation_token(
    *,
    signing_key: rsa.RSAPrivateKey,
    kid: str,
    app_id: str,
    tenant_id: str,
    now: datetime,
    lifetime: timedelta = timedelta(hours=1),
) -> str:
    """One ``validationTokens`` entry: a v1.0 identity-platform JWT, RS256, for the (app, tenant) pair.

    Claims follow the doc's sample token: ``aud`` = the subscribing app, ``iss`` = ``https://sts.windows.net/{tid}/``,
    ``appid`` = the Graph notification publisher, ``ver`` 1.0, ``appidacr`` 2; ``kid`` names a key in the emulator's
    JWKS. The one-hour lifetime is a guess (identity-platform app tokens usually live about that long).
    """
    issued = int(now.timestamp())
    issuer = f"https://sts.windows.net/{tenant_id}/"
    claims = {
        "aud": app_id,
        "iss": issuer,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime.total_seconds()),
        "appid": GRAPH_NOTIFICATION_PUBLISHER_APPID,
        "appidacr": "2",
        "idp": issuer,
        "tid": tenant_id,
        "ver": "1.0",
        "uti": uuid.uuid4().hex[:22],
    }
    return jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})
