"""Graph-shaped notification bodies for the receiver's tests, composed from Graph's documentation (https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks).

The encryption and token signing here are an independent reading of https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data (not the emulator's
code): a random 32-byte key, iv = key[:16], AES-256-CBC + PKCS7, HMAC-SHA256 over the ciphertext,
the key wrapped with RSA-OAEP(SHA-1); validation tokens are RS256 JWTs with Graph's claims.
"""

from __future__ import annotations

import base64
import functools
import os
import time
import uuid
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from syncer.receiver.notifications import GRAPH_PUBLISHER_APP_ID

TENANT = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
APP_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_STATE = "s3cr3t-state-123"


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """A 2048-bit key per name, generated once per test run (generation is the slow part)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def encrypt_resource(resource: dict[str, Any], *, public_key: Any, certificate_id: str, key: bytes | None = None) -> dict[str, str]:
    """``encryptedContent`` for *resource*, as Graph builds it."""
    key = key or os.urandom(32)
    padder = padding.PKCS7(128).padder()
    plain = padder.update(orjson.dumps(resource)) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    data = encryptor.update(plain) + encryptor.finalize()
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(data)
    wrapped = public_key.encrypt(
        key, asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    )
    return {
        "data": base64.b64encode(data).decode(),
        "dataSignature": base64.b64encode(mac.finalize()).decode(),
        "dataKey": base64.b64encode(wrapped).decode(),
        "encryptionCertificateId": certificate_id,
        "encryptionCertificateThumbprint": "07293748CC064953A3052FB978C735FB89E61C3D",
    }


def validation_token(
    *,
    signing_key: Any | None = None,
    kid: str = "graph-key-1",
    tenant: str = TENANT,
    audience: str = APP_ID,
    appid: str = GRAPH_PUBLISHER_APP_ID,
    issuer: str | None = None,
    lifetime: float = 3600,
    issued_ago: float = 0,
) -> str:
    """A validation token like Graph's (v1 claims: aud, iss, tid, appid, exp, nbf, iat)."""
    now = time.time() - issued_ago
    claims = {
        "aud": audience,
        "iss": issuer if issuer is not None else f"https://sts.windows.net/{tenant}/",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + lifetime),
        "appid": appid,
        "appidacr": "2",
        "idp": f"https://sts.windows.net/{tenant}/",
        "tid": tenant,
        "ver": "1.0",
    }
    return jwt.encode(claims, signing_key or rsa_key("graph-signing"), algorithm="RS256", headers={"kid": kid})


def change_item(
    subscription_id: str,
    *,
    client_state: str | None = CLIENT_STATE,
    tenant: str = TENANT,
    change_type: str = "updated",
    user_id: str | None = None,
    etag: str | None = None,
    notification_id: str | None = None,
) -> dict[str, Any]:
    """A directory-user change notification item."""
    user_id = user_id or str(uuid.uuid4())
    item: dict[str, Any] = {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": "2026-04-10T05:00:00+00:00",
        "changeType": change_type,
        "tenantId": tenant,
        "resource": f"Users/{user_id}",
        "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{user_id}", "id": user_id},
    }
    if client_state is not None:
        item["clientState"] = client_state
    if etag is not None:
        item["resourceData"]["@odata.etag"] = etag
    if notification_id is not None:
        item["id"] = notification_id
    return item


def lifecycle_item(subscription_id: str, event: str, *, client_state: str = CLIENT_STATE, tenant: str = TENANT) -> dict[str, Any]:
    """A lifecycle notification item."""
    return {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": "2026-03-20T11:00:00.0000000+00:00",
        "tenantId": tenant,
        "clientState": client_state,
        "lifecycleEvent": event,
    }


def rich_item(
    subscription_id: str,
    *,
    public_key: Any,
    certificate_id: str,
    resource: dict[str, Any] | None = None,
    client_state: str = CLIENT_STATE,
    tenant: str = TENANT,
) -> dict[str, Any]:
    """A Teams channel message created, with encrypted resource data."""
    message_id = str(int(time.time() * 1000))
    path = f"teams('d29828b8')/channels('19:abc@thread.tacv2')/messages('{message_id}')"
    resource = resource or {"id": message_id, "body": {"content": "hello"}, "@odata.type": "#Microsoft.Graph.ChatMessage"}
    return {
        "subscriptionId": subscription_id,
        "subscriptionExpirationDateTime": "2026-03-20T11:00:00+00:00",
        "changeType": "created",
        "clientState": client_state,
        "tenantId": tenant,
        "resource": path,
        "resourceData": {"id": message_id, "@odata.type": "#Microsoft.Graph.ChatMessage", "@odata.id": path},
        "encryptedContent": encrypt_resource(resource, public_key=public_key, certificate_id=certificate_id),
    }


def body(*items: dict[str, Any], tokens: list[str] | None = None) -> bytes:
    document: dict[str, Any] = {"value": list(items)}
    if tokens is not None:
        document["validationTokens"] = tokens
    return orjson.dumps(document)
