"""Who signs in: authorities (a tenant, ``common``, ``organizations``, ``consumers``), accounts, and which account
may sign in to which app through which authority.

https://learn.microsoft.com/entra/identity-platform/msal-client-application-configuration#authority:
``organizations`` signs in work or school accounts only, ``consumers`` personal Microsoft accounts only, ``common``
both; a tenant id or domain signs in that directory's accounts. Personal accounts live in the fixed tenant
``9188040d-6c67-4c5b-b112-36a304b66dad`` and have 16-hex-digit Graph ids
(https://learn.microsoft.com/entra/identity-platform/id-token-claims-reference: ``tid`` of a consumer account).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from syncer.emulator.identity.apps import AppRegistration
from syncer.emulator.identity.responses import IdentityError

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState, Tenant

#: The tenant every personal Microsoft account signs in under.
CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"
ALIASES = ("common", "organizations", "consumers")


@dataclass(frozen=True)
class Authority:
    """The `{tenant}` segment of an identity URL, resolved."""

    name: str
    #: "tenant", "common", "organizations" or "consumers"
    kind: str
    #: The directory a tenant authority names (consumers: the personal-account tenant); None for common/organizations.
    tenant: Tenant | None

    @property
    def is_alias(self) -> bool:
        """common / organizations / consumers."""
        return self.kind != "tenant"


def resolve_authority(state: EmulatorState, name: str) -> Authority | None:
    """The authority a URL's tenant segment names, or None if no such tenant."""
    lowered = name.lower()
    if lowered in ("common", "organizations"):
        return Authority(lowered, lowered, None)
    if lowered == "consumers":
        tenant = state.tenants.get(CONSUMER_TENANT_ID)
        return Authority(lowered, "consumers", tenant) if tenant is not None else None
    tenant = state.tenant_by_name(name)
    return Authority(name, "tenant", tenant) if tenant is not None else None


@dataclass(frozen=True)
class Account:
    """A user of some tenant, as the identity platform sees them."""

    tenant_id: str
    #: The Graph user id (a GUID; 16 hex digits for a personal account).
    user_id: str
    upn: str
    name: str
    personal: bool

    @property
    def oid(self) -> str:
        """The token's `oid`: the Graph id, or for a personal account its 16 hex digits padded to a GUID
        (``00000000-0000-0000-xxxx-xxxxxxxxxxxx``, as Microsoft accounts' tokens show them [OBS])."""
        if self.personal and len(self.user_id) == 16:
            return f"00000000-0000-0000-{self.user_id[:4]}-{self.user_id[4:]}"
        return self.user_id


def graph_user_id(tenant_id: str, oid: str) -> str:
    """The Graph user id behind a token's `oid` (the inverse of :attr:`Account.oid`)."""
    if tenant_id == CONSUMER_TENANT_ID and oid.startswith("00000000-0000-0000-"):
        return oid[19:].replace("-", "")
    return oid


def _account(tenant: Tenant, user: dict[str, Any]) -> Account:
    return Account(tenant.tenant_id, str(user["id"]), str(user.get("userPrincipalName") or ""),
                   str(user.get("displayName") or user.get("userPrincipalName") or ""), tenant.personal)


def find_account(state: EmulatorState, key: str, tenant_id: str | None = None) -> Account | None:
    """A live user by UPN or id, in *tenant_id* or in any tenant."""
    from syncer.emulator.families.directory.users import find_user

    tenants = [state.tenants[tenant_id]] if tenant_id in state.tenants else list(state.tenants.values())
    with state.lock:
        for tenant in tenants:
            user = find_user(state.store.tenant(tenant.tenant_id), key)
            if user is not None:
                return _account(tenant, user)
    return None


def account_enabled(state: EmulatorState, account: Account) -> bool | None:
    """True/False for a live user's accountEnabled; None if the user is gone."""
    from syncer.emulator.families.directory.users import find_user

    with state.lock:
        user = find_user(state.store.tenant(account.tenant_id), account.user_id)
    if user is None:
        return None
    return user.get("accountEnabled") is not False


def listed_accounts(state: EmulatorState, authority: Authority, app: AppRegistration, limit: int) -> list[Account]:
    """The accounts the sign-in page offers: up to *limit* per tenant, only those who may sign in here."""
    from syncer.emulator.families.directory.users import users_of

    found: list[Account] = []
    with state.lock:
        for tenant in state.tenants.values():
            col = users_of(state.store.tenant(tenant.tenant_id))
            emitted, _, _, _ = col.walk(since=0, hwm=state.store.seq, pos=None, sub=0, limit=limit,
                                        include_removed=False)
            for event in emitted:
                if event.item is None:
                    continue
                account = _account(tenant, event.item)
                if sign_in_problem(authority, app, account) is None:
                    found.append(account)
    return found


def check_app_on_authority(authority: Authority, app: AppRegistration) -> None:
    """Refuse an app an authority cannot serve (raises IdentityError).

    A single-tenant app on ``common``/``organizations`` is AADSTS50194 [OBS, quoted in many MSAL issues]; an app
    that does not take personal accounts on ``consumers`` AADSTS90130 [OBS]; a personal-only app on
    ``organizations`` is refused the same way [guess].
    """
    if authority.kind in ("common", "organizations") and not app.signs_in_work_accounts_of_other_tenants \
            and app.sign_in_audience != "PersonalMicrosoftAccount":
        raise IdentityError(400, "invalid_request", 50194,
                            f"Application '{app.client_id}'({app.display_name}) is not configured as a multi-tenant "
                            "application. Usage of the /common endpoint is not supported for such applications created "
                            "after '10/15/2018'. Use a tenant-specific endpoint or configure the application to be "
                            "multi-tenant.")
    if authority.kind == "consumers" and not app.signs_in_personal_accounts:
        raise IdentityError(400, "invalid_request", 90130,
                            f"Application '{app.client_id}'({app.display_name}) is not supported over the /common or "
                            "/consumers endpoints. Please use the /organizations or tenant-specific endpoint.")
    if authority.kind == "organizations" and app.sign_in_audience == "PersonalMicrosoftAccount":
        raise IdentityError(400, "invalid_request", 90130,
                            f"Application '{app.client_id}'({app.display_name}) is not supported over the "
                            "/organizations endpoint. Please use the /consumers endpoint.")
    if authority.kind == "tenant" and authority.tenant is not None:
        tenant = authority.tenant
        if tenant.personal and not app.signs_in_personal_accounts:
            raise IdentityError(400, "invalid_request", 90130,
                                f"Application '{app.client_id}'({app.display_name}) does not sign in personal "
                                "Microsoft accounts.")
        if not tenant.personal and tenant.tenant_id != app.tenant_id and not app.signs_in_work_accounts_of_other_tenants:
            raise IdentityError(400, "unauthorized_client", 700016,
                                f"Application with identifier '{app.client_id}' was not found in the directory "
                                f"'{tenant.tenant_id}'.")


def sign_in_problem(authority: Authority, app: AppRegistration, account: Account) -> tuple[int, str] | None:
    """Why *account* may not sign in to *app* through *authority* (AADSTS code, text), or None."""
    if account.personal:
        if authority.kind == "organizations" or (authority.kind == "tenant" and authority.tenant is not None
                                                 and authority.tenant.tenant_id != account.tenant_id):
            return 50020, (f"User account '{account.upn}' from identity provider 'live.com' does not exist in tenant "
                           "and cannot access the application in that tenant. The account needs to be added as an "
                           "external user in the tenant first.")
        if not app.signs_in_personal_accounts:
            return 50020, (f"User account '{account.upn}' from identity provider 'live.com' cannot sign in to "
                           f"application '{app.client_id}': it does not accept personal Microsoft accounts.")
        return None
    if authority.kind == "consumers":
        return 50020, (f"User account '{account.upn}' is a work or school account; the /consumers endpoint signs in "
                       "personal Microsoft accounts only.")
    if authority.kind == "tenant" and authority.tenant is not None and authority.tenant.tenant_id != account.tenant_id:
        return 50020, (f"User account '{account.upn}' from identity provider "
                       f"'https://sts.windows.net/{account.tenant_id}/' does not exist in tenant "
                       f"'{authority.tenant.domain}' and cannot access the application '{app.client_id}' in that tenant.")
    if app.sign_in_audience == "PersonalMicrosoftAccount":
        return 50020, f"Application '{app.client_id}' signs in personal Microsoft accounts only."
    if account.tenant_id != app.tenant_id and not app.signs_in_work_accounts_of_other_tenants:
        return 50020, (f"User account '{account.upn}' from identity provider "
                       f"'https://sts.windows.net/{account.tenant_id}/' does not exist in tenant of application "
                       f"'{app.client_id}' and cannot access it.")
    return None
