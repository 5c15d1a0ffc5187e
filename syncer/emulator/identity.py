"""The identity platform half: OpenID discovery, the token endpoint, JWKS, and the bearer check.

What MSAL calls and expects is in ../shared/local-facts.md: discovery at
``/{tenant}/v2.0/.well-known/openid-configuration``, then ``POST {token_endpoint}`` with
``grant_type=client_credentials`` and either ``client_secret`` or a ``client_assertion`` JWT signed with a
registered certificate (RS256 with ``x5t``, or PS256 with ``x5c``/``x5t#S256``). Failures come back as the
identity platform writes them (``{"error": "invalid_client", "error_description": "AADSTS...", ...}``).

Access tokens are RS256 JWTs signed with ``state.signing_key`` (published in the JWKS) carrying ``tid``,
``appid``, ``roles`` and ``aud``; :func:`require_app` checks them on every Graph call.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Blueprint, Response, g, request

from syncer.emulator.api import base_url, emulator_state
from syncer.emulator.errors import GraphHTTPError

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

#: The resource Graph tokens are issued for, and its well-known app id.
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class AppRegistration:
    """An app registered in a tenant: its credentials and granted application permissions."""

    client_id: str
    tenant_id: str
    display_name: str = "app"
    secrets: set[str] = field(default_factory=set)
    #: SHA-1 thumbprint (upper hex) -> certificate PEM.
    certificates: dict[str, bytes] = field(default_factory=dict)
    roles: set[str] = field(default_factory=set)
    #: Object id of the app's service principal (Graph's `creatorId` for app-only subscriptions).
    service_principal_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def to_json(self) -> dict[str, Any]:
        """The admin API's view (no secrets)."""
        return {
            "clientId": self.client_id, "tenantId": self.tenant_id, "displayName": self.display_name,
            "roles": sorted(self.roles), "certificateThumbprints": sorted(self.certificates),
            "hasSecret": bool(self.secrets), "servicePrincipalId": self.service_principal_id,
        }


@dataclass(frozen=True)
class AppContext:
    """Who is calling: what :func:`require_app` returns to a view."""

    tenant_id: str
    client_id: str
    roles: frozenset[str]
    service_principal_id: str


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwks(state: EmulatorState) -> dict[str, Any]:
    """The JWKS document publishing the signing key."""
    numbers = state.signing_key.public_key().public_numbers()
    return {"keys": [{
        "kty": "RSA", "use": "sig", "kid": state.signing_kid, "x5t": state.signing_kid,
        "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e), "issuer": "",
    }]}


bp = Blueprint("identity", __name__)


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json; charset=utf-8")


def _aad_error(status: int, error: str, code: int, description: str) -> Response:
    """The identity platform's error shape."""
    now = datetime.now(UTC)
    trace = str(uuid.uuid4())
    return _json({
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: "
                             f"{getattr(g, 'client_request_id', '') or trace} Timestamp: {now:%Y-%m-%d %H:%M:%SZ}",
        "error_codes": [code],
        "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"),
        "trace_id": trace,
        "correlation_id": getattr(g, "client_request_id", "") or trace,
        "error_uri": f"{base_url()}/error?code={code}",
    }, status)


@bp.get("/<tenant>/v2.0/.well-known/openid-configuration")
@bp.get("/<tenant>/.well-known/openid-configuration")
def openid_configuration(tenant: str) -> Response:
    """OpenID discovery for a tenant (id or verified domain)."""
    state = emulator_state()
    found = state.tenant_by_name(tenant)
    if found is None:
        return _aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
    base = base_url()
    tid = found.tenant_id
    return _json({
        "token_endpoint": f"{base}/{tid}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/{tid}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{tid}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base}/oidc/userinfo",
        "authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/{tid}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "appid", "roles"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": urlsplit(base).netloc,
        "rbac_url": "https://pas.windows.net",
    })


@bp.get("/<tenant>/discovery/v2.0/keys")
@bp.get("/<tenant>/discovery/keys")
def keys(tenant: str) -> Response:
    """The JWKS (the same keys for every tenant, like Microsoft's common keys)."""
    return _json(jwks(emulator_state()))


def _accepted_resources(base: str) -> set[str]:
    return {GRAPH_RESOURCE, GRAPH_APP_ID, base}


def _check_scope(scope: str, base: str) -> str | None:
    """The resource a client-credentials scope names, or None if the scope is not acceptable."""
    resource = None
    for item in scope.split():
        if item in ("openid", "profile", "offline_access", "email"):
            continue  # reserved scopes some clients add; ignored by the platform for this grant
        if not item.endswith("/.default"):
            return None
        candidate = item[: -len("/.default")]
        if candidate.rstrip("/") not in _accepted_resources(base):
            return None
        resource = candidate.rstrip("/")
    return resource


@bp.post("/<tenant>/oauth2/v2.0/token")
@bp.post("/<tenant>/oauth2/token")
def token(tenant: str) -> Response:
    """Client-credentials token endpoint (secret or certificate assertion)."""
    state = emulator_state()
    found = state.tenant_by_name(tenant)
    if found is None:
        return _aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.")
    if request.mimetype != "application/x-www-form-urlencoded":
        return _aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
    form = request.form
    grant = form.get("grant_type")
    if grant is None:
        return _aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
    if grant != "client_credentials":
        return _aad_error(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'.")
    client_id = form.get("client_id")
    if not client_id:
        return _aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
    app = state.apps.get(client_id)
    if app is None or app.tenant_id != found.tenant_id:
        return _aad_error(400, "unauthorized_client", 700016,
                          f"Application with identifier '{client_id}' was not found in the directory '{found.tenant_id}'.")
    base = base_url()
    scope = form.get("scope")
    if not scope and request.path.endswith("/oauth2/token") and form.get("resource"):
        scope = f"{form['resource'].rstrip('/')}/.default"  # the v1 endpoint names the resource instead
    if not scope:
        return _aad_error(400, "invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")
    resource = _check_scope(scope, base)
    if resource is None:
        return _aad_error(400, "invalid_scope", 1002012,
                          f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")
    secret = form.get("client_secret")
    assertion = form.get("client_assertion")
    if secret is not None and assertion is not None:
        return _aad_error(400, "invalid_request", 700025, "Client is public so neither 'client_assertion' nor 'client_secret' should be presented.")
    if secret is not None:
        if secret not in app.secrets:
            return _aad_error(401, "invalid_client", 7000215,
                              f"Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'.")
    elif assertion is not None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return _aad_error(400, "invalid_request", 50027, "Invalid client_assertion_type.")
        problem = _verify_assertion(assertion, app=app, tenant_names={found.tenant_id, found.domain, tenant},
                                    now=state.clock.time(), base=base)
        if problem is not None:
            code, description = problem
            return _aad_error(401, "invalid_client", code, description)
    else:
        return _aad_error(401, "invalid_client", 7000218,
                          "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
    return _json(issue_token(state, app, resource=resource))


def issue_token(state: EmulatorState, app: AppRegistration, *, resource: str = GRAPH_RESOURCE) -> dict[str, Any]:
    """Mint an app-only access token response for *app* (also used by tests and the demo)."""
    now = int(state.clock.time())
    lifetime = state.config.token_lifetime_s
    claims = {
        "aud": resource,
        "iss": f"https://sts.windows.net/{app.tenant_id}/",
        "iat": now, "nbf": now, "exp": now + lifetime,
        "aio": "emulator", "app_displayname": app.display_name, "appid": app.client_id, "appidacr": "1",
        "idp": f"https://sts.windows.net/{app.tenant_id}/", "idtyp": "app", "oid": app.service_principal_id,
        "rh": "0.emulator.", "roles": sorted(app.roles), "sub": app.service_principal_id,
        "tid": app.tenant_id, "uti": uuid.uuid4().hex[:22], "ver": "1.0",
    }
    token = jwt.encode(claims, state.signing_key, algorithm="RS256",
                       headers={"kid": state.signing_kid, "x5t": state.signing_kid})
    return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}


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




# --- the bearer check Graph views call ----------------------------------------------------------

_WWW_AUTH = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
             f'client_id="{GRAPH_APP_ID}"')


def _unauthorized(message: str) -> GraphHTTPError:
    return GraphHTTPError(401, "InvalidAuthenticationToken", message, headers={"WWW-Authenticate": _WWW_AUTH})


def authenticate(state: EmulatorState, authorization: str | None, *, base: str) -> AppContext:
    """Validate a bearer header; raises GraphHTTPError(401)."""
    if not authorization:
        raise _unauthorized("Access token is empty.")
    scheme, _, raw = authorization.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise _unauthorized("Access token is empty.")
    raw = raw.strip()
    cache: dict[str, dict[str, Any]] = state.token_cache
    claims = cache.get(raw)
    if claims is None:
        claims = _verify_access_token(state, raw, base=base)
        if len(cache) >= 10_000:
            cache.clear()  # bounded; verified tokens are cheap to re-verify
        cache[raw] = claims
    now = state.clock.time()
    if float(claims.get("exp", 0)) < now:
        raise _unauthorized("Lifetime validation failed, the token is expired.")
    if float(claims.get("nbf", 0)) > now + 300:
        raise _unauthorized("Lifetime validation failed, the token is not yet valid.")
    tid, appid = str(claims.get("tid", "")), str(claims.get("appid", ""))
    app = state.apps.get(appid)
    if app is None or app.tenant_id != tid or tid not in state.tenants:
        raise _unauthorized("Access token validation failure. The application or tenant is unknown.")
    # Roles come from the token, as in Graph: a permission granted after issue needs a new token.
    return AppContext(tid, appid, frozenset(claims.get("roles") or ()), app.service_principal_id)


def _verify_access_token(state: EmulatorState, raw: str, *, base: str) -> dict[str, Any]:
    """Signature and audience check of an access token (time is checked by the caller, per request)."""
    try:
        header = jwt.get_unverified_header(raw)
    except jwt.PyJWTError:
        raise _unauthorized("IDX14100: JWT is not well formed, there are no dots (.).") from None
    if header.get("kid") != state.signing_kid:
        raise _unauthorized("Access token validation failure. Invalid audience or signing key.")
    try:
        claims = jwt.decode(raw, state.signing_key.public_key(), algorithms=["RS256"],
                            audience=sorted(_accepted_resources(base)),
                            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False})
    except jwt.InvalidAudienceError:
        raise _unauthorized("Invalid audience.") from None
    except jwt.PyJWTError:
        raise _unauthorized("Access token validation failure. Invalid signature.") from None
    return claims


def current_app_context() -> AppContext:
    """The authenticated caller of the current request (401 if none)."""
    ctx = getattr(g, "app_context", None)
    if ctx is None:
        ctx = authenticate(emulator_state(), request.headers.get("Authorization"), base=base_url())
        g.app_context = ctx
    return ctx


_FORBIDDEN = {
    "directory": ("Authorization_RequestDenied", "Insufficient privileges to complete the operation."),
    "outlook": ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    "drive": ("accessDenied", "Access denied"),
    "todo": ("Forbidden", "Forbidden"),
    "subscription": ("ExtensionError", "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access denied]"),
}


def require_app(*permissions: str, family: str = "directory") -> AppContext:
    """The caller, if its token holds ANY of *permissions*; else GraphHTTPError 401/403."""
    ctx = current_app_context()
    if permissions and not (ctx.roles & set(permissions)):
        code, message = _FORBIDDEN.get(family, _FORBIDDEN["directory"])
        raise GraphHTTPError(403, code, message)
    return ctx


def now_s() -> float:
    """Real time (for request timing only)."""
    return time.time()
