"""Users: /v1.0/users (list, get, create, update, soft delete, delta), /me, and their seeding.

Users are soft-deleted to ``directory/deletedItems`` (delta reason ``changed``; see :mod:`.deleted`), found by id or
by userPrincipalName, and seeded in blocks generated on read (a million users cost one log entry).
Every other family hangs under a user, so :func:`find_user` is how they resolve ``/users/{id | upn}/...``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import (
    base_url,
    check_types,
    emulator_state,
    entity_response,
    json_body,
    json_response,
    list_response,
    no_content,
    not_found_error,
    reject_query,
    validate_props,
)
from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity import AppContext, current_app_context, forbidden, require_app
from syncer.emulator.resources import DeltaSpec, ResourceType
from syncer.emulator.store import TenantStore
from syncer.emulator.subscription_model import SubscribableResource

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("directory_users", __name__, url_prefix="/v1.0")

DIRECTORY_READ = frozenset({"Directory.Read.All", "Directory.ReadWrite.All"})
DIRECTORY_WRITE = frozenset({"Directory.ReadWrite.All"})
DIRECTORY_RICH_REFUSAL = "Rich notifications are not supported for this resource type."

USER = ResourceType(
    name="user",
    odata_type="#microsoft.graph.user",
    notification_type="#Microsoft.Graph.User",
    collection="users",
    family="directory",
    read_roles=frozenset({"User.Read.All", "User.ReadWrite.All"}) | DIRECTORY_READ,
    write_roles=frozenset({"User.ReadWrite.All"}) | DIRECTORY_WRITE,
    # Delegated: the directory needs User.ReadBasic.All or more; one's own profile only User.Read (see _self_access).
    delegated_read=frozenset({"User.ReadBasic.All", "User.Read.All", "User.ReadWrite.All"}) | DIRECTORY_READ,
    delegated_write=frozenset({"User.ReadWrite.All"}) | DIRECTORY_WRITE,
    properties=(
        "id", "accountEnabled", "assignedLicenses", "businessPhones", "city", "companyName", "country", "createdDateTime",
        "deletedDateTime", "department", "displayName", "employeeId", "givenName", "jobTitle", "mail",
        "mailNickname", "mobilePhone", "officeLocation", "otherMails", "passwordProfile", "postalCode",
        "preferredLanguage", "proxyAddresses", "state", "streetAddress", "surname", "usageLocation",
        "userPrincipalName", "userType",
    ),
    # assignedLicenses changes through assignLicense only (https://learn.microsoft.com/en-us/graph/api/user-assignlicense).
    read_only=frozenset({"id", "assignedLicenses", "createdDateTime", "deletedDateTime", "proxyAddresses"}),
    required_on_create=("accountEnabled", "displayName", "mailNickname", "userPrincipalName", "passwordProfile"),
    # Graph's default user projection [DOC: user resource "default properties"].
    default_select=(
        "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone", "officeLocation",
        "preferredLanguage", "surname", "userPrincipalName", "id",
    ),
    write_only=frozenset({"passwordProfile"}),
    # users delta: default page 100 [guess from traces], maxpagesize up to 999 [DOC list limit].
    delta=DeltaSpec(default_page=100, max_page=999, accepts_top=False),
    notification_resource="Users/{id}",
    soft_delete=True,
    index_by_id=False,
    item_collection="users/{id}",
)

SUBSCRIBABLE_USERS = SubscribableResource(
    resource_type="user",
    shapes=(("users",),),
    item_shapes=(("users", "*"),),
    change_types=frozenset({"updated", "deleted"}),
    max_minutes=41_760,
    max_minutes_rich=None,
    permissions=("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
    rich_refusal=DIRECTORY_RICH_REFUSAL,
    quota="directory",
    # Graph has no "created" for directory objects: a new user and a soft-deleted one both arrive as "updated".
    reported_as_updated=frozenset({"created", "softDeleted"}),
)


def find_user(ts: TenantStore, key: str) -> dict[str, Any] | None:
    """A live user by id or UPN (case-insensitive for UPN)."""
    users = users_of(ts)
    if "@" in key:
        lowered = key.lower()
        uid = ts.upn_index.get(lowered)
        if uid is not None:
            return users.get(uid)
        for block in users.blocks:
            suffix = f"@{block.upn_domain}"
            if block.upn_prefix and lowered.startswith(block.upn_prefix) and lowered.endswith(suffix):
                digits = lowered[len(block.upn_prefix):-len(suffix)]
                if digits.isdigit() and int(digits) < block.count:
                    user = users.get(block.item_id(int(digits)))
                    if user is not None and str(user.get("userPrincipalName", "")).lower() == lowered:
                        return user
        return None
    return users.get(key.lower())


def users_of(ts: TenantStore) -> Collection:
    """The tenant's user collection."""
    return ts.collection(USER)


# --- views --------------------------------------------------------------------------------------

def _users(state: EmulatorState, ctx: AppContext) -> tuple[TenantStore, Collection]:
    ts = state.store.tenant(ctx.tenant_id)
    return ts, users_of(ts)


def _user_or_404(ts: TenantStore, key: str) -> dict[str, Any]:
    user = find_user(ts, key)
    if user is None:
        raise not_found_error(USER, key)
    return user


_UPN_RE = re.compile(r"^[A-Za-z0-9._%+'-]+@([A-Za-z0-9.-]+)$")


def _check_upn(state: EmulatorState, ts: TenantStore, upn: Any, *, current_id: str | None) -> str:
    if not isinstance(upn, str) or not _UPN_RE.match(upn):
        raise GraphHTTPError(400, "Request_BadRequest", "Invalid value specified for property 'userPrincipalName' of resource 'User'.")
    domain = upn.rsplit("@", 1)[1].lower()
    tenant = state.tenants[ts.tenant_id]
    if domain != tenant.domain.lower():
        raise GraphHTTPError(400, "Request_BadRequest",
                             "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.")
    existing = find_user(ts, upn)
    if existing is not None and existing["id"] != current_id:
        raise GraphHTTPError(400, "Request_BadRequest",
                             "Another object with the same value for property userPrincipalName already exists.")
    return upn


#: What a signed-in user needs to read or change their own profile
#: (https://learn.microsoft.com/graph/api/user-get#permissions).
SELF_READ = frozenset({"User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All", "User.ReadWrite.All",
                       "Directory.Read.All", "Directory.ReadWrite.All"})
SELF_WRITE = frozenset({"User.ReadWrite", "User.ReadWrite.All", "Directory.ReadWrite.All"})


def _user_access(ts_key: str, *, write: bool) -> AppContext:
    """The caller, if it may read (write) the user *ts_key*: a signed-in user always reaches their own profile with
    User.Read (User.ReadWrite), others need the directory permissions; a personal account only its own."""
    ctx = current_app_context()
    if ctx.delegated:
        state = emulator_state()
        user = find_user(state.store.tenant(ctx.tenant_id), ts_key)
        if user is not None and str(user["id"]).lower() == str(ctx.user_id).lower():
            if not ctx.scopes & (SELF_WRITE if write else SELF_READ):
                raise forbidden("directory")
            return ctx
        if ctx.personal:
            raise forbidden("directory")
    return require_app(*(USER.write_roles if write else USER.read_roles),
                       delegated=USER.delegated_write if write else USER.delegated_read)


def _directory_access(*, write: bool = False) -> AppContext:
    """The caller, if it may list (or create) users; never a personal account."""
    return require_app(*(USER.write_roles if write else USER.read_roles),
                       delegated=USER.delegated_write if write else USER.delegated_read)


@bp.get("/users")
def list_users() -> Response:
    """GET /users."""
    ctx = _directory_access()
    state = emulator_state()
    _, col = _users(state, ctx)
    return list_response(state, col, "users", allow_filter=True)


@bp.post("/users")
def create_user() -> Response:
    """POST /users."""
    ctx = _directory_access(write=True)
    state = emulator_state()
    props = validate_props(USER, json_body(), creating=True)
    check_types(USER, props)
    profile = props.get("passwordProfile")
    if not isinstance(profile, dict) or not profile.get("password"):
        raise GraphHTTPError(400, "Request_BadRequest", "Invalid value specified for property 'passwordProfile' of resource 'User'.")
    with state.lock:
        ts, col = _users(state, ctx)
        upn = _check_upn(state, ts, props["userPrincipalName"], current_id=None)
        user_id = state.store.new_guid()
        user: dict[str, Any] = {p: None for p in USER.properties if p not in USER.write_only}
        user.update({"assignedLicenses": [], "businessPhones": [], "otherMails": [], "proxyAddresses": [], "userType": "Member"})
        user.update({k: v for k, v in props.items() if k not in USER.write_only})
        user.update({"id": user_id, "createdDateTime": state.store.now_iso(), "deletedDateTime": None})
        ts.upn_index[upn.lower()] = user_id
    state.store.put(col, user_id, user, change_type="created")
    return entity_response(USER, user, "users", status=201)


@bp.get("/users/delta")
def users_delta() -> Response:
    """GET /users/delta (and its links)."""
    ctx = _directory_access()
    state = emulator_state()
    reject_query(USER, {"$select", "$deltatoken", "$skiptoken", "$top", "$expand", "$filter"})
    _, col = _users(state, ctx)
    token, latest = directory_token()
    return delta_mod.run_delta(state, col, link_path="users/delta", token=token, token_kind="odata", latest=latest)


def directory_token() -> tuple[str | None, bool]:
    """The token of a directory delta call and whether it asks for `$deltatoken=latest`."""
    delta_token = request.args.get("$deltatoken")
    skip = request.args.get("$skiptoken")
    if delta_token is not None and delta_token.lower() == "latest":
        return None, True
    if delta_token == "":
        return None, False  # the Location of a reset: start over
    return (skip if skip is not None else delta_token), False


@bp.get("/users/<key>")
def get_user(key: str) -> Response:
    """GET /users/{id | userPrincipalName} (and /me, rewritten to the signed-in user's id)."""
    ctx = _user_access(key, write=False)
    state = emulator_state()
    reject_query(USER, {"$select"})
    ts, _ = _users(state, ctx)
    return entity_response(USER, _user_or_404(ts, key), "users")


@bp.patch("/users/<key>")
def update_user(key: str) -> Response:
    """PATCH /users/{id}: 204."""
    ctx = _user_access(key, write=True)
    state = emulator_state()
    props = validate_props(USER, json_body(), creating=False)
    check_types(USER, props)
    with state.lock:
        ts, col = _users(state, ctx)
        user = dict(_user_or_404(ts, key))
        if "userPrincipalName" in props:
            upn = _check_upn(state, ts, props["userPrincipalName"], current_id=user["id"])
            ts.upn_index.pop(str(user.get("userPrincipalName", "")).lower(), None)
            ts.upn_index[upn.lower()] = user["id"]
        user.update({k: v for k, v in props.items() if k not in USER.write_only})
    state.store.put(col, user["id"], user, change_type="updated")
    return no_content()


@bp.delete("/users/<key>")
def delete_user(key: str) -> Response:
    """DELETE /users/{id}: soft delete (to deletedItems for 30 days; delta reason "changed")."""
    ctx = _directory_access(write=True)
    state = emulator_state()
    with state.lock:
        ts, col = _users(state, ctx)
        user = dict(_user_or_404(ts, key))
        user["deletedDateTime"] = state.store.now_iso()
        ts.upn_index.pop(str(user.get("userPrincipalName", "")).lower(), None)
    soft_remove(state, col, user)
    return no_content()


def soft_remove(state: EmulatorState, col: Collection, item: dict[str, Any]) -> None:
    """Soft delete: delta says reason "changed"; the ChangeEvent carries the snapshot (item not None)."""
    state.store.remove(col, item["id"], reason="changed", snapshot=item)


#: https://learn.microsoft.com/graph/api/user-revokesigninsessions#permissions
REVOKE_SESSIONS = frozenset({"User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All"})


@bp.post("/users/<key>/revokeSignInSessions")
def revoke_sign_in_sessions(key: str) -> Response:
    """Invalidate the user's refresh tokens and session cookies: their next refresh is `invalid_grant`."""
    ctx = require_app(*REVOKE_SESSIONS, delegated=REVOKE_SESSIONS)
    state = emulator_state()
    with state.lock:
        user = _user_or_404(state.store.tenant(ctx.tenant_id), key)
        state.grants.revoke((ctx.tenant_id, str(user["id"])), state.clock.time())
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#Edm.Boolean", "value": True})


@bp.route("/me", methods=["GET", "POST", "PATCH", "DELETE", "PUT"])
@bp.route("/me/<path:rest>", methods=["GET", "POST", "PATCH", "DELETE", "PUT"])
def me(rest: str = "") -> Response:
    """/me needs a signed-in user (a user's token is routed to /users/{id} before it gets here); an app-only token
    gets Graph's 400 (observed: https://github.com/microsoftgraph/msgraph-sdk-php/issues/1163)."""
    require_app()
    raise GraphHTTPError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")


def add_user(state: EmulatorState, tenant_id: str, upn: str, display_name: str, *,
             account_enabled: bool = True) -> dict[str, Any]:
    """Create a user directly (the admin API): in the personal-account tenant with a 16-hex id, as Graph shows
    Microsoft accounts' ids; elsewhere a GUID."""
    tenant = state.tenants[tenant_id]
    ts = state.store.tenant(tenant_id)
    col = users_of(ts)
    with state.lock:
        user_id = f"{state.store.rng.getrandbits(64):016x}" if tenant.personal else state.store.new_guid()
        user: dict[str, Any] = {p: None for p in USER.properties if p not in USER.write_only}
        user.update({"assignedLicenses": [], "businessPhones": [], "otherMails": [], "proxyAddresses": [], "userType": "Member",
                     "id": user_id, "createdDateTime": state.store.now_iso(), "accountEnabled": account_enabled,
                     "displayName": display_name, "userPrincipalName": upn, "mail": upn,
                     "mailNickname": upn.split("@")[0]})
        ts.upn_index[upn.lower()] = user_id
    state.store.put(col, user_id, user, change_type="created", notify=False)
    return user


# --- seeding ------------------------------------------------------------------------------------

_FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie",
          "Margaret", "Dennis", "Hedy", "Tim", "Katherine", "John", "Shafi", "Niklaus", "Sophie", "Linus")
_LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman",
         "Lamport", "Hamilton", "Ritchie", "Lamarr", "Berners-Lee", "Johnson", "McCarthy", "Goldwasser",
         "Wirth", "Wilson", "Torvalds", "Backus", "Kay", "Cerf", "Hoare", "Milner", "Floyd", "Rivest")
_TITLES = ("Engineer", "Analyst", "Manager", "Designer", "Accountant", "Consultant", "Director", None)
_DEPTS = ("Engineering", "Finance", "Sales", "Marketing", "Legal", "Operations", "Support")
_E3_SKU = "6fd2c87f-b296-42f0-b197-1e91e994b900"
_CITIES = ("Seattle", "London", "Berlin", "Paris", "Tokyo", "Sydney", "Toronto", "Madrid")


def seed_users(state: EmulatorState, tenant_id: str, count: int) -> dict[str, Any]:
    """Add *count* generated users to *tenant_id*; returns {"count", "firstId", "prefix"}."""
    tenant = state.tenants[tenant_id]
    domain = tenant.domain.lower()
    store = state.store
    col = users_of(store.tenant(tenant_id))
    created = store.now_iso()
    block_no = store.seed_blocks + 1
    upn_prefix = f"s{block_no}u"
    n_first, n_last = len(_FIRST), len(_LAST)

    # Per-index parts cycle with small periods: precompute them so a user costs one dict literal.
    firsts = _FIRST
    lasts = _LAST
    cities = _CITIES
    depts = _DEPTS
    titles = _TITLES

    def make(user_id: str, i: int) -> dict[str, Any]:
        first = firsts[i % n_first]
        last = lasts[(i // n_first) % n_last]
        nick = f"{upn_prefix}{i}"
        upn = f"{nick}@{domain}"
        return {
            "id": user_id, "accountEnabled": True, "businessPhones": [f"+1 425 555 {i % 10000:04d}"],
            # Every fourth user has no licence, the others Office 365 E3 (ENTERPRISEPACK's skuId).
            "assignedLicenses": [] if i % 4 == 3 else [{"disabledPlans": [], "skuId": _E3_SKU}],
            "city": cities[i & 7], "companyName": "Contoso", "country": "US", "createdDateTime": created,
            "deletedDateTime": None, "department": depts[i % 7], "displayName": f"{first} {last} {i}",
            "employeeId": str(i), "givenName": first, "jobTitle": titles[i & 7], "mail": upn,
            "mailNickname": nick, "mobilePhone": None, "officeLocation": f"{i % 40}/{i % 997}",
            "otherMails": [], "postalCode": None, "preferredLanguage": "en-US", "proxyAddresses": [f"SMTP:{upn}"],
            "state": None, "streetAddress": None, "surname": last, "usageLocation": "US",
            "userPrincipalName": upn, "userType": "Member",
        }

    block = store.add_block(col, count=count, make=make, upn_prefix=upn_prefix, upn_domain=domain)
    return {"count": count, "prefix": block.prefix, "firstId": block.item_id(0) if count else None,
            "upnPattern": f"{upn_prefix}{{i}}@{domain}"}
