"""The device code flow: ``/devicecode``, the device-login page, and approval by the admin API.

https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code: the answer carries ``device_code``,
``user_code``, ``verification_uri``, ``expires_in`` (900 s), ``interval`` (5 s) and ``message``, and no
``verification_uri_complete``. The user opens the verification page, types the code and signs in; meanwhile the
client polls the token endpoint (:mod:`.token_endpoint`). With ``--sign-in-as`` the code is approved as it is issued.
"""

from __future__ import annotations

import html
import uuid
from typing import TYPE_CHECKING

from flask import Blueprint, Response, request

from syncer.emulator.api import base_url, emulator_state
from syncer.emulator.identity.accounts import Account, check_app_on_authority, resolve_authority
from syncer.emulator.identity.grants import DeviceCode, opaque, user_code
from syncer.emulator.identity.responses import IdentityError, json_response, page
from syncer.emulator.identity.signin import DECLINE, chosen_account, consent, sign_in_as, sign_in_page
from syncer.emulator.identity.tokens import parse_scopes

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("identity_device_code", __name__)

VERIFICATION_PATH = "/devicelogin"


@bp.post("/<tenant>/oauth2/v2.0/devicecode")
def devicecode(tenant: str) -> Response:
    """Start a device-code sign-in."""
    state = emulator_state()
    authority = resolve_authority(state, tenant)
    if authority is None:
        raise IdentityError(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
    form = request.form
    client_id = form.get("client_id")
    if not client_id:
        raise IdentityError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
    app = state.apps.get(client_id)
    if app is None:
        raise IdentityError(400, "unauthorized_client", 700016,
                            f"Application with identifier '{client_id}' was not found in the directory '{tenant}'.")
    if not app.public_client:
        # https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code: the app must allow public client flows.
        raise IdentityError(400, "invalid_client", 7000218, "The request body must contain the following parameter: "
                            "'client_assertion' or 'client_secret'.")
    check_app_on_authority(authority, app)
    scope = form.get("scope")
    if not scope:
        raise IdentityError(400, "invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")
    parse_scopes(scope, app, base_url())
    now = state.clock.time()
    config = state.config
    flow = DeviceCode(device_code=opaque("DAQABIQEAAAD"), user_code=user_code(), authority=tenant,
                      client_id=client_id, scopes=tuple(scope.split()), issued=now,
                      expires=now + config.device_code_lifetime_s, interval=config.device_code_interval_s)
    with state.lock:
        state.grants.device_codes[flow.device_code] = flow
    forced = sign_in_as(state, authority, app)
    if forced is not None:
        approve(state, flow, forced)
    uri = f"{base_url()}{VERIFICATION_PATH}"
    return json_response({
        "user_code": flow.user_code, "device_code": flow.device_code, "verification_uri": uri,
        "expires_in": int(config.device_code_lifetime_s), "interval": flow.interval,
        "message": f"To sign in, use a web browser to open the page {uri} and enter the code {flow.user_code} to authenticate.",
    })


def approve(state: EmulatorState, flow: DeviceCode, account: Account) -> None:
    """The user signed in on the verification page (or the admin API said so)."""
    app = state.apps[flow.client_id]
    consent(state, app, account, " ".join(flow.scopes), base_url())
    with state.lock:
        flow.status, flow.account, flow.session_id = "approved", account, str(uuid.uuid4())


def decline(state: EmulatorState, flow: DeviceCode) -> None:
    """The user refused."""
    with state.lock:
        flow.status = "declined"


def _code_form(message: str = "") -> Response:
    note = f"<p id='error'>{html.escape(message)}</p>" if message else ""
    return page("Enter code", f"{note}<form method='post' action='{VERIFICATION_PATH}'>"
                              "<label>Code: <input name='user_code' autofocus></label>"
                              "<button type='submit'>Next</button></form>", 400 if message else 200)


@bp.get(VERIFICATION_PATH)
def devicelogin_page() -> Response:
    """Where the user types the code."""
    return _code_form()


@bp.post(VERIFICATION_PATH)
def devicelogin_submit() -> Response:
    """The code was typed (show the accounts), or an account was picked (approve), or the user declined."""
    state = emulator_state()
    code = request.form.get("user_code", "")
    with state.lock:
        flow = state.grants.device_code_by_user_code(code)
    if flow is None or flow.status != "pending" or state.clock.time() > flow.expires:
        return _code_form("That code didn't work. Check the code and try again.")
    authority = resolve_authority(state, flow.authority)
    app = state.apps.get(flow.client_id)
    if authority is None or app is None:
        return _code_form("That code didn't work. Check the code and try again.")
    if "account" not in request.form and "action" not in request.form:
        return page("Sign in", sign_in_page(state, action=VERIFICATION_PATH,
                                            hidden={"user_code": flow.user_code}, authority=authority, app=app,
                                            login_hint=None, note="You are signing in on another device."))
    try:
        chosen = chosen_account(state, request.form, authority, app)
    except IdentityError as exc:
        return page("Sign in: error", f"<p id='error'>AADSTS{exc.code}: {html.escape(exc.description)}</p>", 400)
    if chosen == DECLINE:
        decline(state, flow)
        return page("Declined", "<p id='done'>You declined to sign in. You may close this window.</p>")
    assert isinstance(chosen, Account)
    approve(state, flow, chosen)
    return page("Signed in", f"<p id='done'>You have signed in to {html.escape(app.display_name)} on your device as "
                             f"{html.escape(chosen.upn)}. You may now close this window.</p>")
