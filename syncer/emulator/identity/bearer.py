"""The bearer check every Graph call passes: who is calling (an app alone, or an app for a signed-in user) and
whether the token grants what the resource needs.

App-only tokens carry application permissions in `roles`; delegated tokens carry `scp` and the user's `oid`/`tid`
(https://learn.microsoft.com/entra/identity-platform/access-token-claims-reference). A delegated caller reaches only
what the signed-in user may: their own mailbox, calendar, contacts, OneDrive and To Do
(https://learn.microsoft.com/graph/permissions-overview#delegated-permissions), and a personal Microsoft account
only the APIs that serve personal accounts (each API page's permission table).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from flask import g, request

from syncer.emulator.api import base_url, emulator_state
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity.accounts import CONSUMER_TENANT_ID, graph_user_id
from syncer.emulator.identity.tokens import GRAPH_APP_ID, accepted_resources

if TYPE_CHECKING:
    from syncer.emulator.resources import ResourceType
    from syncer.emulator.state import EmulatorState


@dataclass(frozen=True)
class AppContext:
    """Who is calling: what :func:`require_app` returns to a view."""

    tenant_id: str
    client_id: str
    roles: frozenset[str]
    service_principal_id: str
    #: The signed-in user's Graph id (None for an app-only token).
    user_id: str | None = None
    #: Delegated permissions (`scp`).
    scopes: frozenset[str] = frozenset()
    #: The signed-in user is a personal Microsoft account.
    personal: bool = False
    #: Issue order of a user's token (compared with revocations of the user's sessions).
    token_serial: int = 0

    @property
    def delegated(self) -> bool:
        """A user signed in (the token has `scp`)."""
        return self.user_id is not None


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
    if "scp" in claims:
        # A user's token: the app may live in another tenant (multi-tenant apps, personal accounts).
        if app is None or tid not in state.tenants:
            raise _unauthorized("Access token validation failure. The application or tenant is unknown.")
        return AppContext(tid, appid, frozenset(), app.service_principal_id,
                          user_id=graph_user_id(tid, str(claims.get("oid", ""))),
                          scopes=frozenset(str(claims["scp"]).split()), personal=tid == CONSUMER_TENANT_ID,
                          token_serial=int(claims.get("xms_emu_seq") or 0))
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
                            audience=sorted(accepted_resources(base)),
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


def forbidden(family: str) -> GraphHTTPError:
    """The family's 403."""
    code, message = _FORBIDDEN.get(family, _FORBIDDEN["directory"])
    return GraphHTTPError(403, code, message)


def require_app(*permissions: str, family: str = "directory", delegated: Iterable[str] = (),
                personal_accounts: bool = False) -> AppContext:
    """The caller, if its token holds ANY of *permissions* (app-only `roles`) or, for a signed-in user, ANY of
    *delegated* (`scp`); else GraphHTTPError 401/403. A path that names no delegated permission refuses users, and
    one not marked *personal_accounts* refuses personal Microsoft accounts."""
    ctx = current_app_context()
    wanted = set(delegated) if ctx.delegated else set(permissions)
    held = ctx.scopes if ctx.delegated else ctx.roles
    if (permissions or delegated) and (not (held & wanted) or (ctx.personal and not personal_accounts)):
        raise forbidden(family)
    return ctx


def require_access(rtype: ResourceType, *, write: bool = False, owner: str | None = None) -> AppContext:
    """The caller, if it may read (or write) *rtype*; *owner* = the Graph id of the user whose data it is.

    A signed-in user reaches only their own data (*owner*), and a personal account only the types Graph serves
    to personal accounts [DOC: per-API permission tables]; the 403 is the family's.
    """
    ctx = require_app(*(rtype.write_roles if write else rtype.read_roles), family=rtype.family,
                      delegated=rtype.delegated_write if write else rtype.delegated_read,
                      personal_accounts=rtype.personal_accounts)
    if owner is not None:
        check_owner(ctx, owner, rtype.family)
    return ctx


def check_owner(ctx: AppContext, user_id: str, family: str) -> None:
    """403 when a signed-in user reaches into another user's data (no shared-mailbox delegation in the emulator)."""
    if ctx.delegated and user_id.lower() != str(ctx.user_id).lower():
        raise forbidden(family)
