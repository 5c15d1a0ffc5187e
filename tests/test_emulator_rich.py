"""Rich-notification crypto of the emulator, checked by an independent decryption written from the docs (https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data).

The test never calls the emulator to decrypt: it follows the receiver steps with plain ``cryptography`` primitives,
so a misreading on the emulator side fails here instead of cancelling out.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from syncer.emulator import rich


def _certificate(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "receiver")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def _b64_der(certificate: x509.Certificate) -> str:
    return base64.b64encode(certificate.public_bytes(Encoding.DER)).decode()


@pytest.fixture(scope="module")
def receiver_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _decrypt_as_documented(content: dict[str, str], private_key: rsa.RSAPrivateKey) -> bytes:
    key = private_key.decrypt(
        base64.b64decode(content["dataKey"]),
        asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    )
    data = base64.b64decode(content["data"])
    mac = crypto_hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    mac.verify(base64.b64decode(content["dataSignature"]))  # raises InvalidSignature on mismatch
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def test_encrypted_content_decrypts_with_the_documented_steps(receiver_key: rsa.RSAPrivateKey) -> None:
    certificate = _certificate(receiver_key)
    parsed = rich.load_encryption_certificate(_b64_der(certificate))
    resource = {"@odata.type": "#Microsoft.Graph.Message", "id": "AAMk1", "subject": "Grüße ✓", "isRead": False}

    content = rich.encrypt_content(resource, certificate=parsed, certificate_id="cert-2026-01")

    assert set(content) == {"data", "dataSignature", "dataKey", "encryptionCertificateId", "encryptionCertificateThumbprint"}
    assert content["encryptionCertificateId"] == "cert-2026-01"
    assert content["encryptionCertificateThumbprint"] == certificate.fingerprint(hashes.SHA1()).hex().upper()
    assert json.loads(_decrypt_as_documented(content, receiver_key).decode("utf-8")) == resource


def test_key_is_aes256_and_fresh_per_item(receiver_key: rsa.RSAPrivateKey) -> None:
    parsed = rich.load_encryption_certificate(_b64_der(_certificate(receiver_key)))
    first = rich.encrypt_content({"id": "1"}, certificate=parsed, certificate_id="c")
    second = rich.encrypt_content({"id": "1"}, certificate=parsed, certificate_id="c")
    oaep = asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    key1 = receiver_key.decrypt(base64.b64decode(first["dataKey"]), oaep)
    key2 = receiver_key.decrypt(base64.b64decode(second["dataKey"]), oaep)
    assert len(key1) == 32
    assert key1 != key2
    assert first["data"] != second["data"]


def test_tampered_data_fails_the_signature_check(receiver_key: rsa.RSAPrivateKey) -> None:
    parsed = rich.load_encryption_certificate(_b64_der(_certificate(receiver_key)))
    content = rich.encrypt_content(b'{"id":"x"}', certificate=parsed, certificate_id="c")
    data = bytearray(base64.b64decode(content["data"]))
    data[0] ^= 1
    content["data"] = base64.b64encode(bytes(data)).decode()
    with pytest.raises(InvalidSignature):
        _decrypt_as_documented(content, receiver_key)


def test_pinned_key_gives_the_expected_ciphertext(receiver_key: rsa.RSAPrivateKey) -> None:
    parsed = rich.load_encryption_certificate(_b64_der(_certificate(receiver_key)))
    key = bytes(range(32))
    content = rich.encrypt_content(b"hello", certificate=parsed, certificate_id="c", data_key=key)
    # independent AES-CBC with iv = key[:16] over PKCS7("hello")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    expected = encryptor.update(b"hello" + bytes([11]) * 11) + encryptor.finalize()
    assert base64.b64decode(content["data"]) == expected


@pytest.mark.parametrize(
    "encoded",
    ["not base64!!", base64.b64encode(b"not a certificate").decode(), ""],
)
def test_garbage_certificates_are_refused(encoded: str) -> None:
    with pytest.raises(rich.CertificateError):
        rich.load_encryption_certificate(encoded)


def test_non_rsa_and_small_keys_are_refused() -> None:
    with pytest.raises(rich.CertificateError, match="RSA"):
        rich.load_encryption_certificate(_b64_der(_certificate(ec.generate_private_key(ec.SECP256R1()))))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(rich.CertificateError, match="1024"):
        rich.load_encryption_certificate(_b64_der(_certificate(small)))


def test_validation_token_claims_and_signature(receiver_key: rsa.RSAPrivateKey) -> None:
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    token = rich.validation_token(
        signing_key=signing_key, kid="emu-key-1", app_id="app-123", tenant_id="tenant-9", now=now
    )
    assert jwt.get_unverified_header(token)["kid"] == "emu-key-1"
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token,
        signing_key.public_key(),
        algorithms=["RS256"],
        audience="app-123",
        issuer="https://sts.windows.net/tenant-9/",
        options={"require": ["exp", "nbf", "iat", "aud", "iss"]},
    )
    assert claims["appid"] == "0bf30f3b-4a52-48df-9a82-234910c4a086"
    assert claims["tid"] == "tenant-9"
    assert claims["exp"] - claims["nbf"] == 3600
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, receiver_key.public_key(), algorithms=["RS256"], audience="app-123")


def test_validation_token_expires() -> None:
    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = rich.validation_token(
        signing_key=signing_key,
        kid="k",
        app_id="a",
        tenant_id="t",
        now=datetime.now(UTC) - timedelta(hours=2),
    )
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(token, signing_key.public_key(), algorithms=["RS256"], audience="a")
