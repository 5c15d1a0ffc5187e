"""The token endpoint: client credentials, authorization code (with PKCE), refresh token (with rotation) and
device code.

https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow (code redemption, PKCE, refresh),
https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code (polling errors),
https://learn.microsoft.com/entra/identity-platform/refresh-tokens (rotation: each refresh returns a new refresh
token; revoked sessions and password resets kill them), https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from typing import TYPE_CHECKING

from flask import Blueprint, Response, request

from syncer.emulator.api import base_url, emulator_state
from syncer.emulator.clock import iso_ts
from syncer.emulator.identity.accounts import Account, Authority, account_enabled, resolve_authority
from syncer.emulator.identity.apps import AppRegistration
from syncer.emulator.identity.client_auth import authenticate_client, check_client_credentials_scope
from syncer.emulator.identity.grants import AuthCode
from syncer.emulator.identity.responses import IdentityError, json_response
from syncer.emulator.identity.tokens import ScopeRequest, issue_token, parse_scopes, user_token_response

if TYPE_CHECKING:
    from werkzeug.datastructures import MultiDict

    from syncer.emulator.state import EmulatorState

bp = Blueprint("identity_token", __name__)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _missing(name: str) -> IdentityError:
    return IdentityError(400, "invalid_request", 900144, f"The request body must contain the following parameter: '{name}'.")


@bp.post("/<tenant>/oauth2/v2.0/token")
@bp.post("/<tenant>/oauth2/token")
def token(tenant: str) -> Response:
    """Every grant the emulator serves."""
    state = emulator_state()
    authority = resolve_authority(state, tenant)
    if authority is None:
        raise IdentityError(400, "invalid_request", 90002,
                            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.")
    if request.mimetype != "application/x-www-form-urlencoded":
        raise _missing("grant_type")
    form = request.form
    grant = form.get("grant_type")
    if grant is None:
        raise _missing("grant_type")
    if grant not in ("client_credentials", "authorization_code", "refresh_token", DEVICE_CODE_GRANT):
        raise IdentityError(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant}'.")
    client_id = form.get("client_id")
    if not client_id:
        raise _missing("client_id")
    app = state.apps.get(client_id)
    if grant == "client_credentials":
        return _client_credentials(state, authority, tenant, app, client_id, form)
    if app is None:
        where = authority.tenant.tenant_id if authority.tenant is not None else authority.name
        raise IdentityError(400, "unauthorized_client", 700016,
                            f"Application with identifier '{client_id}' was not found in the directory '{where}'.")
    names = {tenant} | ({authority.tenant.tenant_id, authority.tenant.domain} if authority.tenant else set())
    authenticate_client(state, app, form, tenant_names=names, base=base_url(), required=not app.public_client)
    if grant == "authorization_code":
        return _authorization_code(state, app, form)
    if grant == "refresh_token":
        return _refresh_token(state, app, form)
    return _device_code(state, app, form)


def _client_credentials(state: EmulatorState, authority: Authority, tenant: str, app: AppRegistration | None,
                        client_id: str, form: MultiDict[str, str]) -> Response:
    found = authority.tenant
    if authority.is_alias or found is None:
        # An app-only token names its tenant; the aliases cannot (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow).
        raise IdentityError(400, "invalid_request", 90002,
                            f"Tenant '{tenant}' cannot issue app-only tokens: use the tenant id or domain.")
    if app is None or app.tenant_id != found.tenant_id:
        raise IdentityError(400, "unauthorized_client", 700016,
                            f"Application with identifier '{client_id}' was not found in the directory '{found.tenant_id}'.")
    base = base_url()
    scope = form.get("scope")
    if not scope and request.path.endswith("/oauth2/token") and form.get("resource"):
        scope = f"{form['resource'].rstrip('/')}/.default"  # the v1 endpoint names the resource instead
    if not scope:
        raise _missing("scope")
    resource = check_client_credentials_scope(scope, base)
    if resource is None:
        raise IdentityError(400, "invalid_scope", 1002012,
                            f"The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")
    authenticate_client(state, app, form, tenant_names={found.tenant_id, found.domain, tenant}, base=base, required=True)
    return json_response(issue_token(state, app, resource=resource))


def _scopes_for(state: EmulatorState, app: AppRegistration, account: Account, asked: str | None,
                granted: tuple[str, ...]) -> ScopeRequest:
    """The scopes of a redemption: what was asked now, within what the user consented to."""
    base = base_url()
    consented = state.grants.consents.get((account.tenant_id, account.user_id, app.client_id), set())
    # Without `scope` a redemption gets what the user consented to (refresh: everything consented so far).
    scopes = parse_scopes(asked or " ".join(granted) or " ".join(["openid", "profile", "offline_access", *sorted(consented)]),
                          app, base)
    missing = sorted(scopes.graph - consented)
    if missing:
        raise IdentityError(400, "invalid_grant", 65001,
                            f"The user or administrator has not consented to use the application with ID "
                            f"'{app.client_id}' named '{app.display_name}'. Send an interactive authorization request "
                            f"for this user and resource. Missing: {' '.join(missing)}.", suberror="consent_required")
    return scopes


def _check_account(state: EmulatorState, account: Account) -> None:
    enabled = account_enabled(state, account)
    if enabled is None:
        raise IdentityError(400, "invalid_grant", 50034,
                            f"The user account {account.upn} does not exist in the {account.tenant_id} directory. "
                            "To sign into this application, the account must be added to the directory.")
    if not enabled:
        raise IdentityError(400, "invalid_grant", 50057, "The user account is disabled.")


def _pkce_matches(verifier: str, challenge: str, method: str | None) -> bool:
    if (method or "plain").lower() == "s256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=") == challenge
    return verifier == challenge


def _authorization_code(state: EmulatorState, app: AppRegistration, form: MultiDict[str, str]) -> Response:
    code = form.get("code")
    if not code:
        raise _missing("code")
    now = state.clock.time()
    with state.lock:
        issued: AuthCode | None = state.grants.codes.get(code)
        if issued is None or issued.client_id != app.client_id:
            raise IdentityError(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid: "
                                "the authorization code is not valid for this client.")
        if issued.redeemed:
            raise IdentityError(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, "
                                "please retry with a new valid code or use an existing refresh token.")
        if now > issued.issued + state.config.auth_code_lifetime_s:
            raise IdentityError(400, "invalid_grant", 70008, "The provided authorization code or refresh token has "
                                "expired due to inactivity. Send a new interactive authorization request for this user and resource.")
        if form.get("redirect_uri") != issued.redirect_uri:
            raise IdentityError(400, "invalid_grant", 500112, f"The reply address '{form.get('redirect_uri')}' does "
                                f"not match the reply address '{issued.redirect_uri}' provided when requesting Authorization code.")
        if issued.code_challenge is not None:
            verifier = form.get("code_verifier")
            if not verifier:
                raise IdentityError(400, "invalid_grant", 50148, "The code_verifier does not match the code_challenge "
                                    "supplied in the authorization request for PKCE.")
            if not _pkce_matches(verifier, issued.code_challenge, issued.code_challenge_method):
                raise IdentityError(400, "invalid_grant", 501481, "The Code_Verifier does not match the "
                                    "code_challenge supplied in the authorization request.")
        issued.redeemed = True
    _check_account(state, issued.account)
    scopes = _scopes_for(state, app, issued.account, form.get("scope"), issued.scopes)
    return json_response(user_token_response(
        state, app, issued.account, scopes, base=base_url(), want_client_info=form.get("client_info") == "1",
        nonce=issued.nonce, session_id=issued.session_id))


def _refresh_token(state: EmulatorState, app: AppRegistration, form: MultiDict[str, str]) -> Response:
    raw = form.get("refresh_token")
    if not raw:
        raise _missing("refresh_token")
    now = state.clock.time()
    grace = state.config.refresh_token_reuse_grace_s
    with state.lock:
        rt = state.grants.refresh_tokens.get(raw)
        if rt is None:
            raise IdentityError(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid: "
                                "the refresh token is not valid.")
        if rt.client_id != app.client_id:
            raise IdentityError(400, "invalid_grant", 700003, "The refresh token was issued to a different client.")
        revoked = state.grants.revoked_at(rt)
        if revoked is not None:
            raise IdentityError(400, "invalid_grant", 50173,
                                "The provided grant has expired due to it being revoked, a fresh auth token is needed. "
                                "The user might have changed or reset their password. The grant was issued on "
                                f"'{iso_ts(rt.issued)}' and the TokensValidFrom date (before which tokens are not valid) "
                                f"for this user is '{iso_ts(revoked)}'.", suberror="bad_token")
        if now > rt.expires:
            raise IdentityError(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity. The "
                                f"token was issued on {iso_ts(rt.issued)} and was inactive for "
                                f"{state.config.refresh_token_lifetime_s / 86400:.2f} days.", suberror="bad_token")
        if rt.rotated is not None and grace is not None and now > rt.rotated + grace:
            raise IdentityError(400, "invalid_grant", 70000, "The provided grant is invalid: this refresh token was "
                                "already exchanged for a newer one.", suberror="bad_token")
        if rt.rotated is None:
            rt.rotated = now
    _check_account(state, rt.account)
    scopes = _scopes_for(state, app, rt.account, form.get("scope"), ())
    return json_response(user_token_response(
        state, app, rt.account, scopes, base=base_url(), want_client_info=form.get("client_info") == "1",
        nonce=None, session_id=rt.session_id))


def _device_code(state: EmulatorState, app: AppRegistration, form: MultiDict[str, str]) -> Response:
    # MSAL posts the code twice, as `device_code` (RFC 8628) and as `code` (older Azure AD).
    raw = form.get("device_code") or form.get("code")
    if not raw:
        raise _missing("device_code")
    now = state.clock.time()
    with state.lock:
        flow = state.grants.device_codes.get(raw)
        if flow is None or flow.client_id != app.client_id:
            raise IdentityError(400, "bad_verification_code", 70019, "The device_code sent to the token endpoint "
                                "was not recognized.")
        if flow.status == "redeemed":
            raise IdentityError(400, "invalid_grant", 54005, "The device code was already redeemed.")
        if flow.status == "declined":
            raise IdentityError(400, "authorization_declined", 70000, "The end user denied the authorization request.")
        if now > flow.expires:
            raise IdentityError(400, "expired_token", 70020, "The provided value for the input parameter "
                                "'device_code' is not valid. This device code has expired.")
        if flow.status == "pending":
            polled, flow.last_poll = flow.last_poll, time.monotonic()
            # Microsoft's table has no slow_down; RFC 8628 does, and MSAL honours it (a setting).
            if state.config.device_code_slow_down and polled is not None and flow.last_poll - polled < flow.interval:
                raise IdentityError(400, "slow_down", 70016, "OAuth 2.0 device flow error. Polling too fast: wait "
                                    f"{flow.interval} seconds between requests.")
            raise IdentityError(400, "authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization is "
                                "pending. Continue polling.")
        account = flow.account
        assert account is not None
        flow.status = "redeemed"
    _check_account(state, account)
    scopes = _scopes_for(state, app, account, None, flow.scopes)
    return json_response(user_token_response(
        state, app, account, scopes, base=base_url(), want_client_info=form.get("client_info") == "1",
        nonce=None, session_id=flow.session_id or str(uuid.uuid4())))
