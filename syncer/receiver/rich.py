"""Rich notifications: the validation tokens Graph signs and the resource data it encrypts.

Split from :mod:`syncer.receiver.notifications` (which parses a POST) and :mod:`syncer.receiver.checks` (which
decides item by item): this is the cryptography they call on. Every JWT in ``validationTokens`` is checked (RS256 against the identity
platform's keys, cached; audience = one of our app ids, issuer = ``https://sts.windows.net/{tid}/``,
``appid`` = Graph's publisher, lifetime), and each ``encryptedContent``: the RSA-OAEP(SHA-1) wrapped
key is unwrapped with the private key named by ``encryptionCertificateId`` (two during a rotation),
the HMAC-SHA256 of the ciphertext is verified *before* anything is decrypted, then AES-CBC with
``iv = key[:16]`` and PKCS7 (https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data#decrypting-resource-data-from-change-notifications). PyJWT and cryptography do the crypto.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import jwt
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from syncer.errors import NotificationError

#: The app id Graph signs rich-notification validation tokens as (https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data#validation-tokens-in-the-change-notification).
GRAPH_PUBLISHER_APP_ID = "0bf30f3b-4a52-48df-9a82-234910c4a086"
#: v1 tokens from the identity platform; ``{tid}`` is the token's own tenant claim.
DEFAULT_ISSUER_TEMPLATE = "https://sts.windows.net/{tid}/"


@dataclass(frozen=True)
class EncryptedContent:
    """An item's ``encryptedContent``, base64 already decoded."""

    data: bytes
    data_key: bytes
    data_signature: bytes
    certificate_id: str
    thumbprint: str | None


# --- validationTokens -----------------------------------------------------------------------------


class SigningKeys(Protocol):
    """Where token-signing public keys come from (the identity platform's JWKS, cached)."""

    def key_for(self, kid: str) -> Any:
        """The public key with key id *kid*; raises :class:`NotificationError` (``token_key_unknown``)."""
        ...


FetchJson = Callable[[str], Mapping[str, Any]]


class JwksCache:
    """The identity platform's signing keys, fetched from a JWKS (or OpenID configuration) URL and cached.

    Keys rotate: an unknown ``kid`` triggers a refetch, but at most once per
    ``min_refresh_interval`` so that a flood of forged tokens with random key ids cannot turn the
    receiver into a load generator against the identity platform. Between refetches an unknown kid
    is ``token_keys_unavailable`` (transient: its items get 503 and Graph retries), because it may
    be a real new key; only a kid absent from a set fetched just now is ``token_key_unknown``.
    Thread-safe.
    """

    def __init__(
        self,
        url: str,
        *,
        fetch: FetchJson | None = None,
        verify: bool | str = True,
        ttl: float = 3600.0,
        min_refresh_interval: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self._fetch = fetch or _requests_fetcher(verify=verify, timeout=timeout)
        self._ttl = ttl
        self._min_refresh_interval = min_refresh_interval
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        document = self._fetch(self.url)
        if "jwks_uri" in document and "keys" not in document:
            document = self._fetch(str(document["jwks_uri"]))
        keys: dict[str, Any] = {}
        for entry in document.get("keys", []) or []:
            if not isinstance(entry, dict) or entry.get("kty") != "RSA" or "kid" not in entry:
                continue
            try:
                keys[str(entry["kid"])] = jwt.PyJWK(entry, algorithm="RS256").key
            except jwt.PyJWTError:
                continue
        self._keys = keys
        self._fetched_at = time.monotonic()

    def key_for(self, kid: str) -> Any:
        with self._lock:
            now = time.monotonic()
            stale = kid not in self._keys or now - self._fetched_at > self._ttl
            may_refresh = now - self._attempted_at > self._min_refresh_interval
            if kid not in self._keys and not may_refresh:
                # Not refetched (rate limit): a key published since, after a rotation, cannot be
                # told from a forged kid yet. Transient (503, Graph retries after the interval),
                # not a refusal that would drop a real notification.
                raise NotificationError(
                    "token_keys_unavailable",
                    f"signing key {kid[:64]!r} unknown, keys last fetched under {self._min_refresh_interval:g} s ago",
                )
            if stale and may_refresh:
                self._attempted_at = now
                try:
                    self._refresh()
                except Exception as exc:
                    # Keep serving the keys we have: a blip of the identity platform must not
                    # make every rich notification look forged.
                    if kid not in self._keys:
                        raise NotificationError(
                            "token_keys_unavailable", f"cannot fetch signing keys: {type(exc).__name__}"
                        ) from None
            key = self._keys.get(kid)
        if key is None:
            raise NotificationError("token_key_unknown", "the token is signed with an unknown key")
        return key

    def prefetch(self) -> None:
        """Fetch now (at start-up), so the first rich notification does not wait for it."""
        with self._lock:
            self._refresh()


def _requests_fetcher(*, verify: bool | str, timeout: float) -> FetchJson:
    import requests

    session = requests.Session()
    # REQUESTS_CA_BUNDLE would override Session.verify (requests' trust_env): pass verify per request.
    session.trust_env = False

    def fetch(url: str) -> Mapping[str, Any]:
        response = session.get(url, timeout=timeout, verify=verify)
        response.raise_for_status()
        data = response.json()
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    return fetch


class StaticKeys:
    """A fixed kid → public key map (tests, or a pinned key set)."""

    def __init__(self, keys: Mapping[str, Any]) -> None:
        self._keys = dict(keys)

    def key_for(self, kid: str) -> Any:
        try:
            return self._keys[kid]
        except KeyError:
            raise NotificationError("token_key_unknown", "the token is signed with an unknown key") from None


@dataclass(frozen=True)
class ValidatedToken:
    """The claims of a validation token that passed every check."""

    tenant_id: str
    audience: str
    expires_at: float


#: Microsoft's own token validation allows 5 minutes of clock skew by default (``DefaultClockSkew``,
#: https://learn.microsoft.com/en-us/dotnet/api/microsoft.identitymodel.tokens.tokenvalidationparameters.defaultclockskew).
DEFAULT_LEEWAY = 300.0

#: Refusals that say nothing about the token's honesty, only about now: our clock is behind the
#: issuer's (``nbf``/``iat`` in the future), or the signing keys cannot be fetched. Graph retries a 503.
TRANSIENT_TOKEN_REASONS = frozenset({"token_not_yet_valid", "token_keys_unavailable"})

TokenOutcome = Literal["valid", "foreign", "refused", "transient"]


@dataclass(frozen=True)
class TokenCheck:
    """What one token of ``validationTokens`` says about the items of its (app, tenant).

    * ``valid``: signed by the identity platform for one of our apps; covers ``tenant_id``'s items.
    * ``foreign``: for another application sharing the notification URL (Graph puts one token per
      (app, tenant) in a POST); ignored, it neither covers nor spoils our items.
    * ``refused``: claims one of our apps (or cannot be read at all) and fails a check: the rich items
      of ``tenant_id`` (``None``: of every tenant) are suspicious.
    * ``transient``: cannot be judged now (clock skew, keys unreachable): their rich items get 503.

    ``tenant_id`` is verified only when ``valid``; otherwise it is the unverified claim, which is
    used only to *narrow* a refusal, never to accept anything.
    """

    outcome: TokenOutcome
    tenant_id: str | None
    reason: str | None = None
    detail: str = ""


class TokenValidator:
    """Checks the JWTs of ``validationTokens`` (https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data#validation-tokens-in-the-change-notification)."""

    def __init__(
        self,
        keys: SigningKeys,
        *,
        app_ids: Iterable[str],
        issuer_template: str = DEFAULT_ISSUER_TEMPLATE,
        publisher_app_id: str = GRAPH_PUBLISHER_APP_ID,
        leeway: float = DEFAULT_LEEWAY,
    ) -> None:
        self._keys = keys
        self.app_ids = frozenset(app_ids)
        self.issuer_template = issuer_template
        self.publisher_app_id = publisher_app_id
        self.leeway = leeway

    def validate(self, token: str) -> ValidatedToken:
        """Return the token's tenant and audience, or raise :class:`NotificationError` with a ``token_*`` reason."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise NotificationError("token_malformed", "a validation token is not a JWT") from None
        if header.get("alg") != "RS256":
            raise NotificationError("token_algorithm", "a validation token is not RS256")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise NotificationError("token_key_unknown", "a validation token names no key")
        key = self._keys.key_for(kid)
        if not self.app_ids:
            raise NotificationError("token_audience", "no application id is configured to accept tokens for")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=list(self.app_ids),
                leeway=self.leeway,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.InvalidSignatureError:
            raise NotificationError("token_signature", "a validation token's signature does not verify") from None
        except jwt.ExpiredSignatureError:
            raise NotificationError("token_expired", "a validation token has expired") from None
        except jwt.ImmatureSignatureError:
            raise NotificationError("token_not_yet_valid", self._skew_message(token)) from None
        except jwt.InvalidAudienceError:
            raise NotificationError("token_audience", "a validation token is for another application") from None
        except jwt.PyJWTError:
            raise NotificationError("token_malformed", "a validation token is malformed") from None
        tenant_id = claims.get("tid")
        if not isinstance(tenant_id, str) or not tenant_id:
            raise NotificationError("token_issuer", "a validation token carries no tenant")
        if claims.get("iss") != self.issuer_template.format(tid=tenant_id):
            raise NotificationError("token_issuer", "a validation token has an unexpected issuer")
        if claims.get("appid") != self.publisher_app_id:
            raise NotificationError("token_appid", "a validation token was not issued to Graph's notification publisher")
        aud = claims["aud"]
        audience = aud if isinstance(aud, str) else next(a for a in aud if a in self.app_ids)
        return ValidatedToken(tenant_id=tenant_id, audience=audience, expires_at=float(claims["exp"]))

    def check(self, token: str) -> TokenCheck:
        """Classify *token* for :func:`syncer.receiver.checks.check_collection` (see :class:`TokenCheck`).

        The audience is read before anything is verified, so that a token of another app sharing the
        URL costs no signature check and no key fetch; trusting that unverified claim is safe because
        it can only make the token be ignored, and an ignored token covers nothing.
        """
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return TokenCheck("refused", None, "token_malformed", "a validation token is not a JWT")
        tid = unverified.get("tid")
        tenant_id = tid if isinstance(tid, str) and tid else None
        aud = unverified.get("aud")
        audiences = {aud} if isinstance(aud, str) else {a for a in aud if isinstance(a, str)} if isinstance(aud, list) else set()
        if self.app_ids and not audiences & self.app_ids:
            return TokenCheck("foreign", tenant_id)
        try:
            validated = self.validate(token)
        except NotificationError as exc:
            outcome: TokenOutcome = "transient" if exc.reason in TRANSIENT_TOKEN_REASONS else "refused"
            return TokenCheck(outcome, tenant_id, exc.reason, str(exc))
        return TokenCheck("valid", validated.tenant_id)

    def _skew_message(self, token: str) -> str:
        """Name the skew of a not-yet-valid token: it is our clock, far more likely than Graph's."""
        claims = jwt.decode(token, options={"verify_signature": False})
        starts = [float(v) for k in ("nbf", "iat") if isinstance(v := claims.get(k), int | float)]
        ahead = max(starts, default=time.time()) - time.time()
        return (
            f"a validation token's nbf/iat is {ahead:.0f} s in the future (leeway {self.leeway:.0f} s): "
            "is this host's clock right?"
        )


# --- encryptedContent -----------------------------------------------------------------------------


_OAEP_SHA1 = asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


@dataclass(frozen=True)
class DecryptionKey:
    """A private key for rich notifications, named by the ``encryptionCertificateId`` we gave Graph."""

    certificate_id: str
    private_key: RSAPrivateKey = field(repr=False)
    thumbprint: str | None = None  # hex; checked against the item's when both are known


class KeyRing:
    """The decryption keys in use; during a certificate rotation there are two (https://learn.microsoft.com/en-us/graph/change-notifications-with-resource-data#managing-encryption-keys)."""

    def __init__(self, keys: Iterable[DecryptionKey] = ()) -> None:
        self._keys = {k.certificate_id: k for k in keys}

    def __len__(self) -> int:
        return len(self._keys)

    def decrypt(self, content: EncryptedContent) -> dict[str, Any]:
        """Verify then decrypt *content*; the resource as a dict, or :class:`NotificationError`."""
        key = self._keys.get(content.certificate_id)
        if key is None:
            raise NotificationError("unknown_certificate", "encryptedContent names a certificate we do not hold")
        if key.thumbprint and content.thumbprint and key.thumbprint.lower() != content.thumbprint.lower():
            raise NotificationError("certificate_mismatch", "encryptedContent's thumbprint is not our certificate's")
        try:
            symmetric = key.private_key.decrypt(content.data_key, _OAEP_SHA1)
        except ValueError:
            raise NotificationError("decrypt_failed", "the data key does not decrypt") from None
        if len(symmetric) not in (16, 24, 32):
            raise NotificationError("decrypt_failed", "the data key has an impossible length")
        # Authenticate before decrypting: CBC with unauthenticated input is a padding oracle.
        mac = crypto_hmac.HMAC(symmetric, hashes.SHA256())
        mac.update(content.data)
        try:
            mac.verify(content.data_signature)
        except InvalidSignature:
            raise NotificationError("hmac_mismatch", "encryptedContent's signature does not match its data") from None
        if not content.data or len(content.data) % 16:
            raise NotificationError("decrypt_failed", "the ciphertext is not whole AES blocks")
        decryptor = Cipher(algorithms.AES(symmetric), modes.CBC(symmetric[:16])).decryptor()
        padded = decryptor.update(content.data) + decryptor.finalize()
        unpadder = sym_padding.PKCS7(128).unpadder()
        try:
            plain = unpadder.update(padded) + unpadder.finalize()
            resource = orjson.loads(plain)
        except (ValueError, orjson.JSONDecodeError):
            raise NotificationError("decrypt_failed", "the decrypted resource is not JSON") from None
        if not isinstance(resource, dict):
            raise NotificationError("decrypt_failed", "the decrypted resource is not a JSON object")
        return resource


def load_private_key(pem: bytes, *, password: bytes | None = None) -> RSAPrivateKey:
    """An RSA private key from PEM; :class:`NotificationError` is not right here, so ValueError on misuse."""
    key = serialization.load_pem_private_key(pem, password=password)
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("rich notifications need an RSA private key")
    return key
