"""Minting tokens: app-only access tokens, and for a signed-in user an access token with `scp`, an id_token,
`client_info` and a refresh token.

Claims follow https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference and
https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference: delegated tokens carry `scp`
(space-separated) and the user's `oid`/`tid`; app-only tokens carry `roles` and no `scp`. The response shape is
https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow#successful-response-2: `refresh_token`
only with `offline_access`, `id_token` only with `openid`; MSAL asks for `client_info=1` and builds its cache's
account from it (``{"uid": oid, "utid": tid}``, base64url).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
import orjson

from syncer.emulator.identity.accounts import Account
from syncer.emulator.identity.apps import AppRegistration
from syncer.emulator.identity.grants import RefreshToken, opaque
from syncer.emulator.identity.responses import IdentityError

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

#: The resource Graph tokens are issued for, and its well-known app id.
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
#: Scopes of OpenID Connect itself, not of a resource.
OIDC_SCOPES = ("openid", "profile", "email", "offline_access")


def accepted_resources(base: str) -> set[str]:
    """Spellings of the Graph resource (and the emulator's own URL, for clients that use it)."""
    return {GRAPH_RESOURCE, GRAPH_APP_ID, base}


def _sign(state: EmulatorState, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, state.signing_key, algorithm="RS256",
                      headers={"kid": state.signing_kid, "x5t": state.signing_kid})


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
    return {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
            "access_token": _sign(state, claims)}


@dataclass(frozen=True)
class ScopeRequest:
    """A delegated `scope` parameter, understood."""

    #: Graph permission names granted (short form: "Mail.Read").
    graph: frozenset[str]
    #: OpenID scopes asked for (openid, profile, email, offline_access).
    oidc: frozenset[str]
    #: The granted Graph scopes in the spelling the client used (what the response's `scope` echoes).
    spelled: tuple[str, ...]


def parse_scopes(text: str, app: AppRegistration, base: str) -> ScopeRequest:
    """Split a delegated scope list into Graph permissions and OpenID scopes (raises IdentityError).

    A scope is ``Name`` (Graph by default), ``https://graph.microsoft.com/Name`` or ``/.default`` (the app's
    configured delegated permissions). One resource per request
    (https://learn.microsoft.com/entra/identity-platform/scopes-oidc).
    """
    graph: set[str] = set()
    oidc: set[str] = set()
    spelled: list[str] = []
    for item in text.split():
        if item.lower() in OIDC_SCOPES:
            oidc.add(item.lower())
            continue
        resource, _, name = item.rpartition("/")
        if resource and resource.rstrip("/") not in accepted_resources(base):
            raise IdentityError(400, "invalid_resource", 500011,
                                f"The resource principal named {resource} was not found in the tenant.")
        if not name:
            raise IdentityError(400, "invalid_scope", 70011, f"The provided value for the input parameter 'scope' is not valid. The scope {item} is not valid.")
        if name == ".default":
            prefix = f"{resource}/" if resource else ""
            for scope in sorted(app.delegated_scopes):
                graph.add(scope)
                spelled.append(prefix + scope)
            continue
        graph.add(name)
        spelled.append(item)
    if not graph and not oidc:
        raise IdentityError(400, "invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid.")
    return ScopeRequest(frozenset(graph), frozenset(oidc), tuple(dict.fromkeys(spelled)))


def _pairwise_sub(account: Account, client_id: str) -> str:
    """`sub` is unique per user and app (https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference)."""
    digest = hashlib.sha256(f"{account.tenant_id}/{account.user_id}/{client_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:32]).decode().rstrip("=")


def client_info(account: Account) -> str:
    """MSAL's `client_info`: base64url JSON of the home account's uid and utid."""
    raw = orjson.dumps({"uid": account.oid, "utid": account.tenant_id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def user_token_response(state: EmulatorState, app: AppRegistration, account: Account, scopes: ScopeRequest, *,
                        base: str, want_client_info: bool, nonce: str | None, session_id: str) -> dict[str, Any]:
    """The token endpoint's answer for a signed-in user (refresh token stored when `offline_access`)."""
    now = int(state.clock.time())
    lifetime = state.config.token_lifetime_s
    tid = account.tenant_id
    with state.lock:
        serial = state.grants.next_serial()
    scp = sorted(scopes.graph) + sorted(s for s in scopes.oidc if s != "offline_access")
    access_claims: dict[str, Any] = {
        "aud": GRAPH_RESOURCE,
        "iss": f"https://sts.windows.net/{tid}/",
        "iat": now, "nbf": now, "exp": now + lifetime,
        "acr": "1", "amr": ["pwd"], "app_displayname": app.display_name, "appid": app.client_id, "appidacr": "0",
        "idp": "live.com" if account.personal else f"https://sts.windows.net/{tid}/",
        "idtyp": "user", "name": account.name, "oid": account.oid, "scp": " ".join(scp),
        "sub": _pairwise_sub(account, GRAPH_APP_ID), "tid": tid, "unique_name": account.upn,
        "upn": account.upn, "uti": uuid.uuid4().hex[:22], "ver": "1.0", "sid": session_id,
        # emulator-only: issue order, so a subscription can tell a token from before a revocation (frozen clocks too)
        "xms_emu_seq": serial,
    }
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": " ".join([*scopes.spelled, *sorted(scopes.oidc)]),
        "expires_in": lifetime, "ext_expires_in": lifetime,
        "access_token": _sign(state, access_claims),
    }
    if "offline_access" in scopes.oidc:
        with state.lock:
            rt = RefreshToken(token=opaque("1.AEMU."), account=account, client_id=app.client_id,
                              issued=state.clock.time(), expires=state.clock.time() + state.config.refresh_token_lifetime_s,
                              session_id=session_id, serial=state.grants.next_serial())
            state.grants.refresh_tokens[rt.token] = rt
        body["refresh_token"] = rt.token
        body["refresh_token_expires_in"] = int(state.config.refresh_token_lifetime_s)
    if "openid" in scopes.oidc:
        id_claims: dict[str, Any] = {
            "aud": app.client_id, "iss": f"{base}/{tid}/v2.0", "iat": now, "nbf": now, "exp": now + 3600,
            "oid": account.oid, "sub": _pairwise_sub(account, app.client_id), "tid": tid, "ver": "2.0",
            "sid": session_id, "aio": "emulator",
        }
        if "profile" in scopes.oidc:
            id_claims["name"] = account.name
            id_claims["preferred_username"] = account.upn
        if "email" in scopes.oidc:
            id_claims["email"] = account.upn
        if nonce:
            id_claims["nonce"] = nonce
        body["id_token"] = _sign(state, id_claims)
    if want_client_info:
        body["client_info"] = client_info(account)
    return body
