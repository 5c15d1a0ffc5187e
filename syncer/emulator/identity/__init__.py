"""The identity platform: OpenID discovery, the authorize page, device codes, the token endpoint, JWKS, and the
bearer check of every Graph call.

What MSAL calls and expects is in docs/emulator-identity.md. The rooms:

```
apps.py            app registrations (credentials, roles, sign-in audience, redirect URIs, public client)
accounts.py        authorities (tenant, common, organizations, consumers), accounts, who may sign in where
discovery.py       /{tenant}/v2.0/.well-known/openid-configuration and the JWKS
authorize.py       /authorize (code + PKCE) and its sign-in page      signin.py  what that page and device login share
device_code.py     /devicecode and the device-login page              grants.py  codes, refresh tokens, sessions, revocation
token_endpoint.py  /token: client credentials, authorization code, refresh token, device code
client_auth.py     client secrets and certificate assertions          tokens.py  access tokens, id_tokens, client_info
bearer.py          the bearer check and permission checks (roles vs scp) Graph views call
admin_views.py     /_emulator/users, revoke-sessions, device-codes, sign-in-as
responses.py       the identity platform's error shape, pages, redirects
```
"""

from __future__ import annotations

from flask import Blueprint, Response

from syncer.emulator.identity.apps import AppRegistration
from syncer.emulator.identity.bearer import (
    AppContext,
    authenticate,
    check_owner,
    current_app_context,
    forbidden,
    require_access,
    require_app,
)
from syncer.emulator.identity.discovery import jwks
from syncer.emulator.identity.responses import IdentityError
from syncer.emulator.identity.tokens import GRAPH_APP_ID, GRAPH_RESOURCE, issue_token

__all__ = [
    "GRAPH_APP_ID", "GRAPH_RESOURCE", "AppContext", "AppRegistration", "authenticate", "bp", "check_owner",
    "current_app_context", "forbidden", "issue_token", "jwks", "require_access", "require_app",
]


def _blueprint() -> Blueprint:
    from syncer.emulator.identity import admin_views, authorize, device_code, discovery, token_endpoint

    parent = Blueprint("identity", __name__)
    for child in (discovery.bp, authorize.bp, device_code.bp, token_endpoint.bp, admin_views.bp):
        parent.register_blueprint(child)

    @parent.app_errorhandler(IdentityError)
    def _identity_error(exc: IdentityError) -> Response:
        return exc.response()

    return parent


bp = _blueprint()
