"""What delegated sign-in leaves behind: pending sign-ins, authorization codes, device codes, refresh tokens,
consents, browser sessions and each user's "tokens valid from" time (what revoking sessions moves).

All of it lives in one :class:`Grants` object of the emulator's state, guarded by the state's lock.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field

from syncer.emulator.identity.accounts import Account


@dataclass
class AuthRequest:
    """An /authorize request waiting on the sign-in page."""

    authority: str
    client_id: str
    redirect_uri: str
    response_mode: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    login_hint: str | None
    created: float


@dataclass
class AuthCode:
    """An issued authorization code (single use, ~10 minutes)."""

    client_id: str
    redirect_uri: str
    account: Account
    scopes: tuple[str, ...]
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    issued: float
    session_id: str
    redeemed: bool = False


@dataclass
class DeviceCode:
    """A device-code sign-in (https://learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code)."""

    device_code: str
    user_code: str
    authority: str
    client_id: str
    scopes: tuple[str, ...]
    issued: float
    expires: float
    interval: int
    #: "pending", "approved", "declined" or "redeemed"
    status: str = "pending"
    account: Account | None = None
    last_poll: float | None = None
    session_id: str = ""

    def to_json(self) -> dict[str, object]:
        """The admin API's view."""
        return {"userCode": self.user_code, "clientId": self.client_id, "authority": self.authority,
                "scopes": list(self.scopes), "status": self.status, "expires": self.expires,
                "user": self.account.upn if self.account else None}


@dataclass
class RefreshToken:
    """An issued refresh token: bound to a user and a client, usable for any consented scope."""

    token: str
    account: Account
    client_id: str
    issued: float
    expires: float
    session_id: str
    #: Issue order (revocation compares these, not times: the emulator's clock may stand still).
    serial: int = 0
    #: When a refresh replaced it with a successor (None while it is the newest).
    rotated: float | None = None


@dataclass
class Grants:
    """Every delegated grant of one emulator."""

    pending: dict[str, AuthRequest] = field(default_factory=dict)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    device_codes: dict[str, DeviceCode] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    #: (tenant id, user id, client id) -> scopes the user consented to for that app.
    consents: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    #: browser session cookie -> the account signed in there (single sign-on for prompt=none).
    sessions: dict[str, Account] = field(default_factory=dict)
    #: (tenant id, user id) -> (serial, time): refresh tokens issued up to that serial are dead (revoked sessions).
    valid_from: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    serial: int = 0
    #: delegated subscription id -> issue number of the user's token that last created, renewed or reauthorized it.
    subscription_tokens: dict[str, int] = field(default_factory=dict)
    #: UPN (or id) signed in without a page (`syncer emulator --sign-in-as`); None = the pages decide.
    sign_in_as: str | None = None

    def device_code_by_user_code(self, user_code: str) -> DeviceCode | None:
        """The device code a user typed on the device-login page."""
        wanted = user_code.strip().upper().replace("-", "")
        for flow in self.device_codes.values():
            if flow.user_code == wanted:
                return flow
        return None

    def next_serial(self) -> int:
        """The next issue number (call under the state's lock)."""
        self.serial += 1
        return self.serial

    def revoke(self, account_key: tuple[str, str], now: float) -> int:
        """Kill every refresh token and browser session of a user issued so far; returns how many tokens died."""
        self.valid_from[(account_key[0], account_key[1].lower())] = (self.next_serial(), now)
        for cookie, account in list(self.sessions.items()):
            if (account.tenant_id, account.user_id) == account_key:
                del self.sessions[cookie]
        return sum(1 for rt in self.refresh_tokens.values()
                   if (rt.account.tenant_id, rt.account.user_id) == account_key)

    def revoked_at(self, rt: RefreshToken) -> float | None:
        """When the user's sessions were revoked, if that was after *rt* was issued."""
        return self.revoked_since(rt.account.tenant_id, rt.account.user_id, rt.serial)

    def revoked_since(self, tenant_id: str, user_id: str, serial: int) -> float | None:
        """When the user's sessions were revoked, if after the thing numbered *serial* was issued."""
        cutoff = self.valid_from.get((tenant_id, user_id.lower()))
        if cutoff is not None and serial < cutoff[0]:
            return cutoff[1]
        return None

    def delegation_alive(self, subscription_id: str, tenant_id: str, user_id: str) -> bool:
        """Whether a delegated subscription's authorization predates no revocation of its user's sessions."""
        return self.revoked_since(tenant_id, user_id, self.subscription_tokens.get(subscription_id, 0)) is None


def opaque(prefix: str, nbytes: int = 48) -> str:
    """An unguessable token string."""
    return prefix + secrets.token_urlsafe(nbytes)


def user_code() -> str:
    """Nine letters, like the identity platform's device-login codes."""
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(9))
