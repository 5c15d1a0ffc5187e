"""A signed-in user's tokens (``auth: delegated``): the delegated credential on a token cache file shared by processes.

:class:`DelegatedCredential` is the :class:`~syncer.graph.auth.Credential` of a delegated tenant entry:
``syncer login`` fills its token cache (device code, or a browser with PKCE), :meth:`DelegatedCredential.token`
serves access tokens from it and refreshes them (MSAL keeps the newest rotated refresh token;
https://learn.microsoft.com/entra/identity-platform/refresh-tokens). A refused refresh is
:class:`~syncer.errors.SignInRequired` naming the account, and is not asked again while the token cache file
is the one that was refused. :func:`signed_in` resolves ``me/...`` to the user's Graph id for scopes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msal
import requests

from syncer.errors import AuthError, ConfigError, SignInRequired, TransportError, mask_secrets, truncate
from syncer.graph.auth import (
    REFRESH_MARGIN,
    _auth_error,
    _authority_host,
    _instance_discovery,
    _VerifyingHttpClient,
)
from syncer.graph.token_cache import TokenCacheFile

if TYPE_CHECKING:
    from syncer.spec import Spec

# After a refused refresh, the same cache file is not tried again for this long: only a new sign-in (which
# rewrites the file) can help, and each attempt is a request to the token endpoint (no retry storm).
SIGNED_OUT_RETRY = 1800.0

# Refresh errors only the user can fix by signing in again
# (https://learn.microsoft.com/entra/identity-platform/reference-error-codes#handling-error-codes-in-your-application).
_SIGN_IN_ERRORS = frozenset({"invalid_grant", "interaction_required", "login_required", "consent_required"})


@dataclass(frozen=True)
class SignedIn:
    """Who ``syncer login`` signed in, and what Graph granted (never the tokens)."""

    username: str
    tenant_id: str
    scopes: tuple[str, ...]


class DelegatedCredential:
    """One signed-in user's tokens (``auth: delegated``), from a token cache file shared by processes.

    :meth:`login` fills the cache (device code, or a browser with PKCE); :meth:`token` serves access
    tokens from it, refreshing with the refresh token when needed; MSAL keeps the newest rotated refresh
    token and the file is written after every acquisition (:class:`~syncer.graph.token_cache.TokenCacheFile`).
    A refused refresh is :class:`~syncer.errors.SignInRequired`, naming the account and ``syncer login NAME``.
    """

    def __init__(
        self,
        authority_host: str,
        authority: str,
        tenant_id: str,
        client_id: str,
        *,
        account: str,
        token_cache: Path,
        tenant_name: str,
        ca_bundle: str | None = None,
        timeout: float = 30.0,
        instance_discovery: bool | None = None,
    ) -> None:
        self.authority_host = _authority_host(authority_host)
        self.authority = authority
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.account = account
        self.tenant_name = tenant_name
        self.cache_file = TokenCacheFile(token_cache)
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        self.instance_discovery = _instance_discovery(self.authority_host, instance_discovery)
        self._lock = threading.Lock()
        self._cache = msal.SerializableTokenCache()
        self._app: msal.PublicClientApplication | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self.acquired = 0
        # The last refusal: the cache file as it was then, when, and the error to raise again meanwhile.
        self._refused: tuple[tuple[int, int, int] | None, float, SignInRequired] | None = None
        self.signed_out_retry = SIGNED_OUT_RETRY

    @property
    def authority_url(self) -> str:
        return f"{self.authority_host}/{self.authority}"

    @property
    def signed_out(self) -> SignInRequired | None:
        """The error of the last refused sign-in, until a token is obtained again (None: none refused)."""
        refused = self._refused
        return refused[2] if refused is not None else None

    def _still_refused(self) -> SignInRequired | None:
        # Called with self._lock held: the refusal stands while the cache file is the one that was refused.
        refused = self._refused
        if refused is None:
            return None
        seen, when, error = refused
        if self.cache_file.fingerprint() == seen and time.monotonic() - when < self.signed_out_retry:
            return error
        return None

    def _app_instance(self) -> msal.PublicClientApplication:
        if self._app is None:
            self._app = self._build_app(self._cache)
        return self._app

    def _build_app(self, cache: msal.SerializableTokenCache) -> msal.PublicClientApplication:
        http_client = _VerifyingHttpClient(requests.Session(), verify=self.ca_bundle or True, timeout=self.timeout)
        try:
            return msal.PublicClientApplication(
                self.client_id,
                authority=self.authority_url,
                token_cache=cache,
                http_client=http_client,
                instance_discovery=self.instance_discovery,
                timeout=self.timeout,
            )
        except requests.RequestException as e:
            raise TransportError(
                f"cannot reach the identity platform at {self.authority_host}: {type(e).__name__}"
            ) from e
        except ValueError as e:
            raise AuthError(
                f"MSAL refused the configuration for {self.authority_url}: {truncate(mask_secrets(str(e)))}"
            ) from e

    def _accounts(self, app: msal.PublicClientApplication) -> list[dict[str, Any]]:
        return list(app.get_accounts(username=self.account))

    def _sign_in_required(self, reason: str, code: str | None = None) -> SignInRequired:
        return SignInRequired(self.tenant_name, self.account, reason, code=code)

    def _refusal(self, seen: tuple[int, int, int] | None, reason: str, code: str | None = None) -> SignInRequired:
        error = self._sign_in_required(reason, code)
        self._refused = (seen, time.monotonic(), error)
        self._tokens.clear()  # Graph refused the last one (a refresh is only forced after a 401)
        return error

    def token(self, scopes: tuple[str, ...], *, refused: str | None = None) -> str:
        """An access token of the declared account for *scopes*, from the shared cache or by refresh."""
        scopes = tuple(scopes)
        with self._lock:
            if (standing := self._still_refused()) is not None:
                raise standing
            now = time.monotonic()
            cached = self._tokens.get(scopes)
            force_refresh = refused is not None and (cached is None or cached[0] == refused)
            if cached and not force_refresh and now < cached[1]:
                return cached[0]
            app = self._app_instance()
            with self.cache_file.open(self._cache):
                seen = self.cache_file.fingerprint()
                accounts = self._accounts(app)
                if not accounts:
                    raise self._refusal(seen, f"no sign-in in the token cache {self.cache_file.path}")
                try:
                    result = app.acquire_token_silent_with_error(
                        list(scopes), account=accounts[0], force_refresh=force_refresh
                    )
                except requests.RequestException as e:
                    raise TransportError(
                        f"cannot reach the token endpoint of {self.authority_url}: {type(e).__name__}"
                    ) from e
            if not result or "access_token" not in result:
                result = result or {}
                error = str(result.get("error", ""))
                if not result or error in _SIGN_IN_ERRORS:
                    first = str(result.get("error_description", "no refresh token")).splitlines()[0]
                    raise self._refusal(seen, f"the refresh was refused ({first})", code=error or None)
                raise _auth_error(result, self.authority_url, self.client_id)
            self._refused = None
            expires_in = float(result.get("expires_in", 3600))
            token = str(result["access_token"])
            self._tokens[scopes] = (token, now + max(expires_in - REFRESH_MARGIN, 1.0))
            if result.get("token_source") != "cache":
                self.acquired += 1
            return token

    def login(
        self, scopes: tuple[str, ...], *, show: Callable[[str], None], browser: bool = False
    ) -> SignedIn:
        """Sign the declared account in (device code on a terminal, or a browser with PKCE) and keep its tokens.

        *show* prints the device code instructions. The sign-in runs on a cache of its own, without the
        file lock (a person may take minutes; the other processes keep refreshing meanwhile); its tokens
        then replace the account's in the shared file. Another account than the declared one is refused
        and nothing is kept.
        """
        fresh = msal.SerializableTokenCache()
        app = self._build_app(fresh)
        try:
            if browser:
                result = app.acquire_token_interactive(list(scopes), login_hint=self.account, timeout=600)
            else:
                flow = app.initiate_device_flow(scopes=list(scopes))
                if "user_code" not in flow:
                    raise _auth_error(flow, self.authority_url, self.client_id)
                show(str(flow["message"]))
                result = app.acquire_token_by_device_flow(flow)
        except requests.RequestException as e:
            raise TransportError(
                f"cannot reach the identity platform at {self.authority_host}: {type(e).__name__}"
            ) from e
        if "access_token" not in result:
            raise _auth_error(result, self.authority_url, self.client_id)
        claims = result.get("id_token_claims") or {}
        username = str(claims.get("preferred_username") or "")
        if username.casefold() != self.account.casefold():
            raise ConfigError(
                f"signed in as {username or 'an account without a name'}, but tenant entry "
                f"{self.tenant_name!r} declares account {self.account}: sign in with that account"
            )
        with self._lock:
            shared = self._app_instance()
            with self.cache_file.open(self._cache):
                for old in self._accounts(shared):
                    shared.remove_account(old)
                # MSAL's serialized cache is one JSON object of sections (AccessToken, RefreshToken,
                # IdToken, Account, AppMetadata), each a map of entries keyed by their own ids.
                merged = json.loads(self._cache.serialize() or "{}")
                for section, entries in json.loads(fresh.serialize()).items():
                    merged.setdefault(section, {}).update(entries)
                self._cache.deserialize(json.dumps(merged))
                self._cache.has_state_changed = True
            self._tokens.clear()
            self._refused = None
        return SignedIn(username, str(claims.get("tid", "")), tuple(str(result.get("scope", "")).split()))

    def logout(self) -> bool:
        """Forget the declared account's tokens (in this cache only; Microsoft's session is not ended)."""
        with self._lock:
            app = self._app_instance()
            with self.cache_file.open(self._cache):
                accounts = self._accounts(app)
                for account in accounts:
                    app.remove_account(account)
            self._tokens.clear()
            return bool(accounts)

    def __repr__(self) -> str:
        return f"DelegatedCredential(authority={self.authority_url!r}, account={self.account!r})"


def delegated_credential(spec: Spec, tenant_name: str) -> DelegatedCredential:
    """The credential of a delegated tenant entry (``auth: delegated``), for ``syncer login`` and the client."""
    spec = spec.resolve_emulator()
    tenant = spec.tenant(tenant_name)
    if not tenant.delegated or tenant.token_cache is None or tenant.account is None:
        raise ConfigError(f"tenant {tenant_name!r} is not declared with auth: delegated")
    return DelegatedCredential(
        spec.graph.authority_host,
        tenant.authority or "organizations",
        tenant.tenant_id,
        tenant.client_id,
        account=tenant.account,
        token_cache=tenant.token_cache,
        tenant_name=tenant.name,
        ca_bundle=str(spec.graph.ca_bundle) if spec.graph.ca_bundle else None,
    )


def signed_in(spec: Spec, sources: Mapping[str, Any]) -> Spec:
    """*spec* with its delegated accounts' ``me/...`` resolved to their users' ids (``GET /me``), for scopes.

    *sources* are GraphClients keyed by tenant id. Also the check that each delegated account is still
    signed in: a refused refresh raises :class:`~syncer.errors.SignInRequired` naming the account.
    """
    ids = {
        t.name: str(sources[t.tenant_id].get_json("me?$select=id")["id"])
        for t in spec.tenants
        if t.delegated and t.tenant_id in sources
    }
    return spec.with_signed_in_users(ids) if ids else spec
