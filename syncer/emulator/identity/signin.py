"""What the authorize page and the device-login page share: choosing an account, the sign-in page that lists the
tenant's users, consent, browser sessions and `--sign-in-as`.

The emulator asks for no password: the page lists the accounts that may sign in to the app through the authority
(up to ``EmulatorConfig.sign_in_page_users`` per tenant) and takes any other by UPN. Consent is implicit: signing in
grants the app the delegated scopes it asked for (an admin-consented tenant, as far as the app can tell).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from werkzeug.datastructures import MultiDict

from syncer.emulator.identity.accounts import (
    Account,
    Authority,
    find_account,
    listed_accounts,
    sign_in_problem,
)
from syncer.emulator.identity.apps import AppRegistration
from syncer.emulator.identity.responses import IdentityError
from syncer.emulator.identity.tokens import parse_scopes

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

SESSION_COOKIE = "emulator_session"
DECLINE = "decline"


def account_problem(authority: Authority, app: AppRegistration, account: Account) -> IdentityError | None:
    """Why *account* cannot sign in here, as the error an app would receive."""
    problem = sign_in_problem(authority, app, account)
    if problem is None:
        return None
    return IdentityError(400, "access_denied", problem[0], problem[1])


def sign_in_as(state: EmulatorState, authority: Authority, app: AppRegistration) -> Account | None:
    """The account `--sign-in-as` names (raises IdentityError if it may not sign in here); None if not set."""
    key = state.grants.sign_in_as
    if not key:
        return None
    tenant_id = authority.tenant.tenant_id if authority.tenant is not None else None
    account = find_account(state, key, tenant_id) or find_account(state, key)
    if account is None:
        raise IdentityError(400, "access_denied", 50034,
                            f"The user account {key} (--sign-in-as) does not exist in any tenant of the emulator.")
    problem = account_problem(authority, app, account)
    if problem is not None:
        raise problem
    return account


def chosen_account(state: EmulatorState, form: MultiDict[str, str], authority: Authority,
                   app: AppRegistration) -> Account | str:
    """The account picked on a sign-in page (a button `account=tenant/user`, or a typed `upn`), or DECLINE."""
    if form.get("action") == DECLINE:
        return DECLINE
    picked = form.get("account") or ""
    account = None
    if "/" in picked:
        tenant_id, _, user_id = picked.partition("/")
        account = find_account(state, user_id, tenant_id)
    elif form.get("upn"):
        account = find_account(state, str(form["upn"]).strip())
    if account is None:
        raise IdentityError(400, "invalid_request", 50034, "This user account does not exist. Pick one of the accounts "
                            "listed, or type the user principal name of an existing user.")
    problem = account_problem(authority, app, account)
    if problem is not None:
        raise problem
    return account


def consent(state: EmulatorState, app: AppRegistration, account: Account, scope_text: str, base: str) -> None:
    """Record that *account* granted *app* the Graph scopes in *scope_text* (what later refreshes may ask for)."""
    scopes = parse_scopes(scope_text, app, base)
    with state.lock:
        state.grants.consents.setdefault((account.tenant_id, account.user_id, app.client_id), set()).update(scopes.graph)


def sign_in_page(state: EmulatorState, *, action: str, hidden: dict[str, str], authority: Authority,
                 app: AppRegistration, login_hint: str | None, note: str = "") -> str:
    """The body of a sign-in page: one button per account that may sign in, a UPN field, and Decline."""
    accounts = listed_accounts(state, authority, app, state.config.sign_in_page_users)
    fields = "".join(f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(v)}'>" for k, v in hidden.items())
    hint = (login_hint or "").lower()
    buttons = "".join(
        f"<li><button type='submit' name='account' value='{html.escape(a.tenant_id)}/{html.escape(a.user_id)}'"
        f"{' autofocus' if a.upn.lower() == hint else ''} data-upn='{html.escape(a.upn)}'>"
        f"{html.escape(a.name)} &lt;{html.escape(a.upn)}&gt;{' (personal account)' if a.personal else ''}</button></li>"
        for a in accounts)
    return (
        f"<p>Sign in to <b>{html.escape(app.display_name)}</b> ({html.escape(app.client_id)}). {html.escape(note)}</p>"
        f"<form method='post' action='{html.escape(action)}'>{fields}"
        f"<ul id='accounts'>{buttons or '<li>No account may sign in here.</li>'}</ul>"
        f"<p><label>Another account: <input name='upn' value='{html.escape(login_hint or '')}'></label>"
        "<button type='submit' name='action' value='signin'>Sign in</button></p>"
        f"<p><button type='submit' name='action' value='{DECLINE}'>Decline</button></p></form>"
    )
