"""The authorization endpoint and its sign-in page (authorization code flow with PKCE).

https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow: ``client_id``, ``response_type=code``,
a registered ``redirect_uri``, ``scope``, ``state``, ``code_challenge`` (+ ``S256`` or ``plain``), ``prompt``
(``login``, ``none``, ``consent``, ``select_account``), ``login_hint``, ``nonce``, ``response_mode``. Until the
redirect URI is known to be registered, errors are shown on the page; after that they go back to the app as
``error`` + ``error_description`` (+ ``state``). A code lives ``EmulatorConfig.auth_code_lifetime_s`` and is single use.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from flask import Blueprint, Response, request

from syncer.emulator.api import base_url, emulator_state
from syncer.emulator.identity.accounts import Account, Authority, check_app_on_authority, resolve_authority
from syncer.emulator.identity.apps import AppRegistration
from syncer.emulator.identity.grants import AuthCode, AuthRequest, opaque
from syncer.emulator.identity.responses import IdentityError, error_page, page, redirect_with
from syncer.emulator.identity.signin import (
    DECLINE,
    SESSION_COOKIE,
    account_problem,
    chosen_account,
    consent,
    sign_in_as,
    sign_in_page,
)
from syncer.emulator.identity.tokens import parse_scopes

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("identity_authorize", __name__)

PROMPTS = (None, "login", "none", "consent", "select_account")


def _redirect_error(req: AuthRequest, error: str, code: int, description: str) -> Response:
    params = {"error": error, "error_description": f"AADSTS{code}: {description}",
              "error_uri": f"{base_url()}/error?code={code}"}
    if req.state is not None:
        params["state"] = req.state
    return redirect_with(req.redirect_uri, params, req.response_mode)


@bp.route("/<tenant>/oauth2/v2.0/authorize", methods=["GET", "POST"])
def authorize(tenant: str) -> Response:
    """Start a sign-in: validate the request, then sign in at once (--sign-in-as, a session) or show the page."""
    state = emulator_state()
    args = request.values
    authority = resolve_authority(state, tenant)
    if authority is None:
        return error_page(90002, f"Tenant '{tenant}' not found.")
    client_id = args.get("client_id")
    if not client_id:
        return error_page(900144, "The request body must contain the following parameter: 'client_id'.")
    app = state.apps.get(client_id)
    if app is None:
        return error_page(700016, f"Application with identifier '{client_id}' was not found in the directory "
                                  f"'{authority.tenant.tenant_id if authority.tenant else authority.name}'.")
    redirect_uri = args.get("redirect_uri") or (app.redirect_uris[0] if len(app.redirect_uris) == 1 else "")
    if not app.accepts_redirect(redirect_uri):
        return error_page(50011, f"The redirect URI '{redirect_uri}' specified in the request does not match the "
                                 f"redirect URIs configured for the application '{client_id}'.")
    try:
        check_app_on_authority(authority, app)
    except IdentityError as exc:
        return error_page(exc.code, exc.description)
    response_mode = args.get("response_mode") or "query"
    req = AuthRequest(
        authority=tenant, client_id=client_id, redirect_uri=redirect_uri,
        response_mode=response_mode if response_mode in ("query", "fragment", "form_post") else "query",
        scopes=tuple((args.get("scope") or "").split()), state=args.get("state"), nonce=args.get("nonce"),
        code_challenge=args.get("code_challenge"), code_challenge_method=args.get("code_challenge_method"),
        login_hint=args.get("login_hint"), created=state.clock.time(),
    )
    if response_mode not in ("query", "fragment", "form_post"):
        return _redirect_error(req, "invalid_request", 900352, f"The response_mode '{response_mode}' is not supported.")
    if args.get("response_type") != "code":
        return _redirect_error(req, "unsupported_response_type", 700054,
                               f"response_type '{args.get('response_type')}' is not enabled for the application.")
    if not req.scopes:
        return _redirect_error(req, "invalid_request", 900144,
                               "The request body must contain the following parameter: 'scope'.")
    try:
        parse_scopes(" ".join(req.scopes), app, base_url())
    except IdentityError as exc:
        return _redirect_error(req, exc.error, exc.code, exc.description)
    method = req.code_challenge_method
    if method is not None and (method not in ("S256", "plain") or req.code_challenge is None):
        return _redirect_error(req, "invalid_request", 501491,
                               f"Invalid code_challenge_method '{method}' or missing code_challenge.")
    prompt = args.get("prompt")
    if prompt not in PROMPTS:
        return _redirect_error(req, "invalid_request", 90023, f"Invalid prompt value '{prompt}'.")
    try:
        forced = sign_in_as(state, authority, app)
    except IdentityError as exc:
        return _redirect_error(req, exc.error, exc.code, exc.description)
    if forced is not None:
        return _finish(state, req, app, forced)
    session = _session_account(state, authority, app)
    hint = (req.login_hint or "").lower()
    if prompt == "none":
        if session is None or (hint and session.upn.lower() != hint):
            # OpenID Connect's answer when no one is signed in (https://openid.net/specs/openid-connect-core-1_0.html#AuthError).
            return _redirect_error(req, state.config.prompt_none_error, 50058,
                                   "A silent sign-in request was sent but no user is signed in.")
        return _finish(state, req, app, session)
    if prompt is None and session is not None and (not hint or session.upn.lower() == hint):
        return _finish(state, req, app, session)  # single sign-on
    txn = opaque("txn.", 24)
    with state.lock:
        state.grants.pending[txn] = req
    return page("Sign in", sign_in_page(state, action=f"{base_url()}/{tenant}/login",
                                        hidden={"txn": txn}, authority=authority, app=app,
                                        login_hint=req.login_hint))


@bp.post("/<tenant>/login")
def login(tenant: str) -> Response:
    """The sign-in page's form: an account was picked (or the user declined)."""
    state = emulator_state()
    txn = request.form.get("txn", "")
    with state.lock:
        req = state.grants.pending.get(txn)
    authority = resolve_authority(state, tenant)
    app = state.apps.get(req.client_id) if req is not None else None
    if req is None or authority is None or app is None:
        return error_page(50058, "This sign-in request is unknown or already completed. Start again from the app.")
    try:
        account = chosen_account(state, request.form, authority, app)
    except IdentityError as exc:
        return error_page(exc.code, exc.description)
    with state.lock:
        state.grants.pending.pop(txn, None)
    if account == DECLINE:
        return _redirect_error(req, "access_denied", 65004, "User declined to consent to access the app.")
    assert isinstance(account, Account)
    return _finish(state, req, app, account)


def _session_account(state: EmulatorState, authority: Authority, app: AppRegistration) -> Account | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    with state.lock:
        account = state.grants.sessions.get(cookie or "")
    if account is None or account_problem(authority, app, account) is not None:
        return None
    return account


def _finish(state: EmulatorState, req: AuthRequest, app: AppRegistration, account: Account) -> Response:
    """Issue the code, remember the browser session, and send the browser back to the app."""
    session_id = str(uuid.uuid4())
    consent(state, app, account, " ".join(req.scopes), base_url())
    code = opaque("1.AEMUcode.")
    with state.lock:
        state.grants.codes[code] = AuthCode(
            client_id=app.client_id, redirect_uri=req.redirect_uri, account=account, scopes=req.scopes,
            nonce=req.nonce, code_challenge=req.code_challenge, code_challenge_method=req.code_challenge_method,
            issued=state.clock.time(), session_id=session_id)
        cookie = opaque("s.", 24)
        state.grants.sessions[cookie] = account
    params = {"code": code}
    if req.state is not None:
        params["state"] = req.state
    params["session_state"] = session_id
    response = redirect_with(req.redirect_uri, params, req.response_mode)
    response.set_cookie(SESSION_COOKIE, cookie, secure=True, httponly=True, samesite="None")
    return response
