"""OpenID discovery and the signing keys, per tenant and per alias (``common``, ``organizations``, ``consumers``).

https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc#find-your-apps-openid-configuration-document-uri:
the document names ``authorization_endpoint``, ``token_endpoint``, ``device_authorization_endpoint`` (MSAL's device
flow needs it), ``jwks_uri`` and ``issuer``; for ``common`` and ``organizations`` the issuer is the template
``.../{tenantid}/v2.0``. MSAL calls it once per app object, over https only.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, Response

from syncer.emulator.api import base_url, emulator_state
from syncer.emulator.identity.accounts import resolve_authority
from syncer.emulator.identity.responses import aad_error, json_response

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("identity_discovery", __name__)


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


@bp.get("/<tenant>/v2.0/.well-known/openid-configuration")
@bp.get("/<tenant>/.well-known/openid-configuration")
def openid_configuration(tenant: str) -> Response:
    """OpenID discovery for a tenant (id or verified domain) or an alias."""
    state = emulator_state()
    authority = resolve_authority(state, tenant)
    if authority is None:
        return aad_error(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
    base = base_url()
    # Endpoints keep the name the client used (an alias stays an alias); the issuer names the directory.
    segment = authority.name if authority.is_alias else authority.tenant.tenant_id  # type: ignore[union-attr]
    issuer_tid = authority.tenant.tenant_id if authority.tenant is not None else "{tenantid}"
    return json_response({
        "token_endpoint": f"{base}/{segment}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{base}/{segment}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{issuer_tid}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base}/oidc/userinfo",
        "authorization_endpoint": f"{base}/{segment}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/{segment}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/{segment}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name",
                             "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username",
                             "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "tenant_region_scope": None if authority.is_alias else "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": urlsplit(base).netloc,
        "rbac_url": "https://pas.windows.net",
    })


@bp.get("/<tenant>/discovery/v2.0/keys")
@bp.get("/<tenant>/discovery/keys")
def keys(tenant: str) -> Response:
    """The JWKS (the same keys for every tenant, like Microsoft's common keys)."""
    return json_response(jwks(emulator_state()))
