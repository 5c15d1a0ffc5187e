"""Client authentication: a client secret or a certificate-signed assertion, and the client-credentials grant.

What MSAL sends is in https://learn.microsoft.com/entra/identity-platform/certificate-credentials: an RS256 assertion
with ``x5t`` (SHA-1 thumbprint) or PS256 with ``x5c``/``x5t#S256``; ``iss`` = ``sub`` = the client id, ``aud`` = the
token endpoint. Confidential clients authenticate on every grant; public clients (device code, a CLI's auth code)
send neither secret nor assertion.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from werkzeug.datastructures import MultiDict

from syncer.emulator.identity.apps import AppRegistration
from syncer.emulator.identity.responses import IdentityError
from syncer.emulator.identity.tokens import accepted_resources

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def authenticate_client(state: EmulatorState, app: AppRegistration, form: MultiDict[str, str], *,
                        tenant_names: set[str], base: str, required: bool) -> None:
    """Check the client's secret or assertion (raises IdentityError); *required* = a confidential-client grant."""
    secret = form.get("client_secret")
    assertion = form.get("client_assertion")
    if secret is not None and assertion is not None:
        raise IdentityError(400, "invalid_request", 700025,
                            "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.")
    if secret is not None:
        if secret not in app.secrets:
            raise IdentityError(401, "invalid_client", 7000215,
                                f"Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{app.client_id}'.")
        return
    if assertion is not None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise IdentityError(400, "invalid_request", 50027, "Invalid client_assertion_type.")
        problem = _verify_assertion(assertion, app=app, tenant_names=tenant_names, now=state.clock.time(), base=base)
        if problem is not None:
            code, description = problem
            raise IdentityError(401, "invalid_client", code, description)
        return
    if required:
        raise IdentityError(401, "invalid_client", 7000218,
                            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")


def check_client_credentials_scope(scope: str, base: str) -> str | None:
    """The resource a client-credentials scope names, or None if the scope is not acceptable."""
    resource = None
    for item in scope.split():
        if item in ("openid", "profile", "offline_access", "email"):
            continue  # reserved scopes some clients add; ignored by the platform for this grant
        if not item.endswith("/.default"):
            return None
        candidate = item[: -len("/.default")]
        if candidate.rstrip("/") not in accepted_resources(base):
            return None
        resource = candidate.rstrip("/")
    return resource


def _thumb(b64: str) -> str | None:
    try:
        padded = b64 + "=" * (-len(b64) % 4)
        return base64.urlsafe_b64decode(padded).hex().upper()
    except (ValueError, TypeError):
        return None


def _verify_assertion(assertion: str, *, app: AppRegistration, tenant_names: set[str], now: float,
                      base: str) -> tuple[int, str] | None:
    """Check a client assertion; returns (AADSTS code, description) on failure."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        return 50027, "JWT token is invalid or malformed."
    alg = header.get("alg")
    if alg not in ("RS256", "PS256"):
        return 5002738, f"Invalid JWT token. '{alg}' is not a supported signature algorithm."
    cert_pem: bytes | None = None
    if "x5t" in header:
        sha1 = _thumb(str(header["x5t"]))
        if sha1 is not None:
            cert_pem = app.certificates.get(sha1)
    if cert_pem is None and "x5t#S256" in header:
        sha256 = _thumb(str(header["x5t#S256"]))
        for pem in app.certificates.values():
            der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
            if hashlib.sha256(der).hexdigest().upper() == sha256:
                cert_pem = pem
                break
    if cert_pem is None:
        return 700027, f"The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{header.get('x5t', '')}']"
    public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        return 700027, "Client assertion failed signature validation."
    try:
        claims = jwt.decode(assertion, public_key, algorithms=[alg],
                            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                     "verify_aud": False, "verify_iss": False})
    except jwt.PyJWTError:
        return 700027, "Client assertion failed signature validation."
    if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
        return 700023, "Client assertion audience claim does not match Realm issuer or 'iss'/'sub' is not the client id."
    aud = claims.get("aud")
    parts = urlsplit(str(aud)) if isinstance(aud, str) else None
    ok_aud = False
    if parts is not None:
        segs = [s for s in parts.path.split("/") if s]
        ok_aud = (
            f"{parts.scheme}://{parts.netloc}" in (base, "https://login.microsoftonline.com")
            and len(segs) >= 2 and segs[0] in tenant_names
            and "/".join(segs[1:]) in ("oauth2/v2.0/token", "oauth2/token")
        )
    if not ok_aud:
        return 700212, f"No matching federated identity record found for presented assertion audience '{aud}'."
    exp, nbf = claims.get("exp"), claims.get("nbf")
    skew = 300
    if not isinstance(exp, (int, float)) or exp + skew < now:
        return 700024, "Client assertion is not within its valid time range."
    if isinstance(nbf, (int, float)) and nbf - skew > now:
        return 700024, "Client assertion is not within its valid time range."
    return None
