"""The admin API's identity corner (``/_emulator/...``, no auth, like the rest of the admin API).

``POST /_emulator/users`` ``{"userPrincipalName", "displayName"?, "tenantId"?}`` → 201 the user (in the personal-account
tenant its id is 16 hex digits; work tenants can also use Graph's ``POST /users``).
``POST /_emulator/users/<id or UPN>/revoke-sessions`` ``{"tenantId"?}`` → ``{"refreshTokens": N}``: every refresh token
and browser session of the user issued so far dies (the next refresh answers ``invalid_grant`` AADSTS50173), as
"revoke sessions" or a password reset does (https://learn.microsoft.com/entra/identity-platform/refresh-tokens#token-revocation).
``GET /_emulator/device-codes`` → ``{"deviceCodes": [...]}``; ``POST /_emulator/device-codes/<user code>``
``{"user": UPN or id}`` approves, ``{"decline": true}`` declines.
``GET /_emulator/sign-in-as``, ``POST /_emulator/sign-in-as`` ``{"user": UPN or null}``: sign this user in without a page.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, request

from syncer.emulator.api import emulator_state
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity.accounts import find_account, resolve_authority
from syncer.emulator.identity.device_code import approve, decline
from syncer.emulator.identity.signin import account_problem

bp = Blueprint("identity_admin", __name__, url_prefix="/_emulator")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


def _object() -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GraphHTTPError(400, "BadRequest", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise GraphHTTPError(400, "BadRequest", "A JSON object is expected.")
    return body


@bp.post("/users")
def add_user() -> Response:
    """Create a user in any tenant (the only way to make personal accounts)."""
    from syncer.emulator.families.directory.users import add_user as create

    state = emulator_state()
    body = _object()
    unknown = set(body) - {"userPrincipalName", "displayName", "tenantId", "accountEnabled"}
    if unknown:
        raise GraphHTTPError(400, "BadRequest", f"Unknown user field(s): {sorted(unknown)}.")
    upn = body.get("userPrincipalName")
    if not isinstance(upn, str) or "@" not in upn:
        raise GraphHTTPError(400, "BadRequest", "'userPrincipalName' (name@domain) is required.")
    tenant_id = str(body.get("tenantId") or state.config.tenant_id)
    if tenant_id not in state.tenants:
        raise GraphHTTPError(404, "ResourceNotFound", f"Unknown tenant '{tenant_id}'.")
    if find_account(state, upn, tenant_id) is not None:
        raise GraphHTTPError(409, "Conflict", f"A user '{upn}' already exists in tenant '{tenant_id}'.")
    user = create(state, tenant_id, upn, str(body.get("displayName") or upn.split("@")[0]),
                  account_enabled=body.get("accountEnabled") is not False)
    return _json(user, 201)


@bp.post("/users/<key>/revoke-sessions")
def revoke_sessions(key: str) -> Response:
    """Kill the user's refresh tokens and sessions."""
    state = emulator_state()
    body = _object()
    account = find_account(state, key, body.get("tenantId"))
    if account is None:
        raise GraphHTTPError(404, "ResourceNotFound", f"No user '{key}'.")
    with state.lock:
        count = state.grants.revoke((account.tenant_id, account.user_id), state.clock.time())
    return _json({"userId": account.user_id, "tenantId": account.tenant_id, "refreshTokens": count})


@bp.get("/device-codes")
def device_codes() -> Response:
    """Device codes issued so far (newest last)."""
    state = emulator_state()
    with state.lock:
        flows = [flow.to_json() for flow in state.grants.device_codes.values()]
    return _json({"deviceCodes": flows})


@bp.post("/device-codes/<user_code>")
def device_code_decide(user_code: str) -> Response:
    """Approve a device code for a user, or decline it."""
    state = emulator_state()
    body = _object()
    with state.lock:
        flow = state.grants.device_code_by_user_code(user_code)
    if flow is None:
        raise GraphHTTPError(404, "ResourceNotFound", f"No device code '{user_code}'.")
    if flow.status != "pending" or state.clock.time() > flow.expires:
        status = flow.status if flow.status != "pending" else "expired"
        raise GraphHTTPError(409, "Conflict", f"Device code '{user_code}' is {status}.")
    if body.get("decline") is True:
        decline(state, flow)
        return _json(flow.to_json())
    key = body.get("user")
    account = find_account(state, str(key)) if isinstance(key, str) else None
    if account is None:
        raise GraphHTTPError(404, "ResourceNotFound", f"No user '{key}'.")
    authority, app = resolve_authority(state, flow.authority), state.apps.get(flow.client_id)
    problem = account_problem(authority, app, account) if authority is not None and app is not None else None
    if problem is not None:
        # the page would refuse this account too (e.g. a personal account on /organizations)
        raise GraphHTTPError(400, "BadRequest", f"AADSTS{problem.code}: {problem.description}")
    approve(state, flow, account)
    return _json(flow.to_json())


@bp.route("/sign-in-as", methods=["GET", "POST"])
def sign_in_as() -> Response:
    """Read or set the user signed in without a page."""
    state = emulator_state()
    if request.method == "POST":
        user = _object().get("user")
        if user is not None and not isinstance(user, str):
            raise GraphHTTPError(400, "BadRequest", "'user' must be a UPN, an id or null.")
        state.grants.sign_in_as = user or None
    return _json({"user": state.grants.sign_in_as})
