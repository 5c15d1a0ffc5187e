"""Directory objects under /v1.0: users, groups and their membership, deleted items, and /me.

Users and Microsoft 365 groups are soft-deleted (to ``directory/deletedItems``, delta reason
``changed``) and can be restored or purged (reason ``deleted``); security groups are deleted
permanently at once. Membership changes go through Graph's ``$ref`` API and show up in groups delta as
``members@delta``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

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
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity import AppContext, require_app
from syncer.emulator.resources import GROUP, GROUP_MEMBER_WRITE_ROLES, USER, ResourceType
from syncer.emulator.store import Collection, TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("directory", __name__, url_prefix="/v1.0")

# ================================================================================================
# Users
# ================================================================================================

def _users(state: EmulatorState, ctx: AppContext) -> tuple[TenantStore, Collection]:
    ts = state.store.tenant(ctx.tenant_id)
    return ts, ts.users()


def _user_or_404(ts: TenantStore, key: str) -> dict[str, Any]:
    user = ts.find_user(key)
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
    existing = ts.find_user(upn)
    if existing is not None and existing["id"] != current_id:
        raise GraphHTTPError(400, "Request_BadRequest",
                             "Another object with the same value for property userPrincipalName already exists.")
    return upn


@bp.get("/users")
def list_users() -> Response:
    """GET /users."""
    ctx = require_app(*USER.read_roles)
    state = emulator_state()
    _, col = _users(state, ctx)
    return list_response(state, col, "users", allow_filter=True)


@bp.post("/users")
def create_user() -> Response:
    """POST /users."""
    ctx = require_app(*USER.write_roles)
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
        user.update({"businessPhones": [], "otherMails": [], "proxyAddresses": [], "userType": "Member"})
        user.update({k: v for k, v in props.items() if k not in USER.write_only})
        user.update({"id": user_id, "createdDateTime": state.store.now_iso(), "deletedDateTime": None})
        ts.upn_index[upn.lower()] = user_id
    state.store.put(col, user_id, user, change_type="created")
    return entity_response(USER, user, "users", status=201)


@bp.get("/users/delta")
def users_delta() -> Response:
    """GET /users/delta (and its links)."""
    ctx = require_app(*USER.read_roles)
    state = emulator_state()
    reject_query(USER, {"$select", "$deltatoken", "$skiptoken", "$top", "$expand", "$filter"})
    _, col = _users(state, ctx)
    token, latest = _directory_token()
    return delta_mod.run_delta(state, col, link_path="users/delta", token=token, token_kind="odata", latest=latest)


def _directory_token() -> tuple[str | None, bool]:
    delta_token = request.args.get("$deltatoken")
    skip = request.args.get("$skiptoken")
    if delta_token is not None and delta_token.lower() == "latest":
        return None, True
    if delta_token == "":
        return None, False  # the Location of a reset: start over
    return (skip if skip is not None else delta_token), False


@bp.get("/users/<key>")
def get_user(key: str) -> Response:
    """GET /users/{id | userPrincipalName}."""
    ctx = require_app(*USER.read_roles)
    state = emulator_state()
    reject_query(USER, {"$select"})
    ts, _ = _users(state, ctx)
    return entity_response(USER, _user_or_404(ts, key), "users")


@bp.patch("/users/<key>")
def update_user(key: str) -> Response:
    """PATCH /users/{id}: 204."""
    ctx = require_app(*USER.write_roles)
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
    ctx = require_app(*USER.write_roles)
    state = emulator_state()
    with state.lock:
        ts, col = _users(state, ctx)
        user = dict(_user_or_404(ts, key))
        user["deletedDateTime"] = state.store.now_iso()
        ts.upn_index.pop(str(user.get("userPrincipalName", "")).lower(), None)
    _soft_remove(state, col, user)
    return no_content()


def _soft_remove(state: EmulatorState, col: Collection, item: dict[str, Any]) -> None:
    """Soft delete: delta says reason "changed"; the ChangeEvent carries the snapshot (item not None)."""
    state.store.remove(col, item["id"], reason="changed", snapshot=item)


# --- directory deleted items -----------------------------------------------------------------

def _deleted_collection(ts: TenantStore, type_name: str) -> tuple[ResourceType, Collection]:
    lowered = type_name.lower()
    if lowered == "microsoft.graph.user":
        return USER, ts.users()
    if lowered == "microsoft.graph.group":
        return GROUP, ts.groups()
    raise GraphHTTPError(400, "Request_BadRequest", f"Unsupported type cast '{type_name}'.")


@bp.get("/directory/deletedItems/<type_name>")
def list_deleted(type_name: str) -> Response:
    """GET /directory/deletedItems/microsoft.graph.user (or .group)."""
    ctx = require_app(*USER.read_roles, *GROUP.read_roles)
    state = emulator_state()
    ts = state.store.tenant(ctx.tenant_id)
    rtype, col = _deleted_collection(ts, type_name)
    with state.lock:
        values = [delta_mod.project(rtype, last, None) for (reason, last) in col.removed.values() if reason == "changed"]
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#directoryObjects", "value": values})


def _find_deleted(ts: TenantStore, item_id: str) -> tuple[ResourceType, Collection, dict[str, Any]]:
    for rtype, col in ((USER, ts.users()), (GROUP, ts.groups())):
        entry = col.removed.get(item_id.lower()) or col.removed.get(item_id)
        if entry is not None and entry[0] == "changed":
            return rtype, col, entry[1]
    raise GraphHTTPError(404, "Request_ResourceNotFound",
                         f"Resource '{item_id}' does not exist or one of its queried reference-property objects are not present.")


@bp.get("/directory/deletedItems/<item_id>")
def get_deleted(item_id: str) -> Response:
    """GET /directory/deletedItems/{id}."""
    ctx = require_app(*USER.read_roles, *GROUP.read_roles)
    state = emulator_state()
    rtype, _, item = _find_deleted(state.store.tenant(ctx.tenant_id), item_id)
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#directoryObjects/$entity",
                  "@odata.type": rtype.odata_type, **delta_mod.project(rtype, item, None)})


@bp.delete("/directory/deletedItems/<item_id>")
def purge_deleted(item_id: str) -> Response:
    """DELETE /directory/deletedItems/{id}: permanent delete (delta reason "deleted")."""
    ctx = require_app(*USER.write_roles, *GROUP.write_roles)
    state = emulator_state()
    ts = state.store.tenant(ctx.tenant_id)
    with state.lock:
        rtype, col, item = _find_deleted(ts, item_id)
    state.store.remove(col, item["id"], reason="deleted")
    if rtype is USER:
        _drop_memberships(state, ts, item["id"])
    return no_content()


@bp.post("/directory/deletedItems/<item_id>/restore")
def restore_deleted(item_id: str) -> Response:
    """POST /directory/deletedItems/{id}/restore: the object comes back (as new, in delta)."""
    ctx = require_app(*USER.write_roles, *GROUP.write_roles)
    state = emulator_state()
    ts = state.store.tenant(ctx.tenant_id)
    with state.lock:
        rtype, col, item = _find_deleted(ts, item_id)
        restored = dict(item)
        restored["deletedDateTime"] = None
        if rtype is USER:
            upn = str(restored.get("userPrincipalName", ""))
            if ts.find_user(upn) is not None:
                raise GraphHTTPError(400, "Request_BadRequest",
                                     "Another object with the same value for property userPrincipalName already exists.")
            ts.upn_index[upn.lower()] = restored["id"]
    state.store.put(col, restored["id"], restored, change_type="created")
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#directoryObjects/$entity",
                  "@odata.type": rtype.odata_type, **delta_mod.project(rtype, restored, None)})


def _drop_memberships(state: EmulatorState, ts: TenantStore, member_id: str) -> None:
    groups = ts.groups()
    touched = []
    with state.lock:
        for gid, members in groups.members.items():
            if member_id in members:
                seq = state.store.next_seq()
                del members[member_id]
                groups.member_log.setdefault(gid, []).append((seq, member_id, True))
                touched.append(gid)
    for gid in touched:
        state.store.touch(groups, gid)



# ================================================================================================
# Groups and membership
# ================================================================================================

def _groups(state: EmulatorState, ctx: AppContext) -> tuple[TenantStore, Collection]:
    ts = state.store.tenant(ctx.tenant_id)
    return ts, ts.groups()


def _group_or_404(col: Collection, gid: str) -> dict[str, Any]:
    group = col.get(gid.lower())
    if group is None:
        raise not_found_error(GROUP, gid)
    return group


@bp.get("/groups")
def list_groups() -> Response:
    """GET /groups."""
    ctx = require_app(*GROUP.read_roles)
    state = emulator_state()
    _, col = _groups(state, ctx)
    return list_response(state, col, "groups", allow_filter=True)


@bp.post("/groups")
def create_group() -> Response:
    """POST /groups (security or Microsoft 365 group)."""
    ctx = require_app(*GROUP.write_roles)
    state = emulator_state()
    body = json_body()
    props = validate_props(GROUP, body, creating=True, allow=frozenset({"members@odata.bind", "owners@odata.bind"}))
    check_types(GROUP, props)
    binds = props.pop("members@odata.bind", None) or []
    props.pop("owners@odata.bind", None)
    if not isinstance(binds, list):
        raise GraphHTTPError(400, "Request_BadRequest", "'members@odata.bind' must be a list of URLs.")
    ts, col = _groups(state, ctx)
    member_ids = [_directory_ref(ts, ref) for ref in binds]
    with state.lock:
        gid = state.store.new_guid()
        group: dict[str, Any] = {p: None for p in GROUP.properties}
        group.update({"groupTypes": [], "proxyAddresses": []})
        group.update(props)
        group.update({"id": gid, "createdDateTime": state.store.now_iso(), "deletedDateTime": None,
                      "renewedDateTime": state.store.now_iso()})
        if group.get("mailEnabled"):
            group["mail"] = f"{group['mailNickname']}@{state.tenants[ctx.tenant_id].domain}"
        members = col.members.setdefault(gid, {})
        log = col.member_log.setdefault(gid, [])
        seq = state.store.next_seq()
        for mid in member_ids:
            members[mid] = seq
            log.append((seq, mid, False))
    state.store.put(col, gid, group, change_type="created")
    return entity_response(GROUP, group, "groups", status=201)


@bp.get("/groups/delta")
def groups_delta() -> Response:
    """GET /groups/delta (members@delta with $select=members or $expand=members)."""
    ctx = require_app(*GROUP.read_roles)
    state = emulator_state()
    reject_query(GROUP, {"$select", "$deltatoken", "$skiptoken", "$top", "$expand", "$filter"})
    _, col = _groups(state, ctx)
    token, latest = _directory_token()
    return delta_mod.run_delta(state, col, link_path="groups/delta", token=token, token_kind="odata", latest=latest)


@bp.get("/groups/<gid>")
def get_group(gid: str) -> Response:
    """GET /groups/{id}."""
    ctx = require_app(*GROUP.read_roles)
    state = emulator_state()
    reject_query(GROUP, {"$select"})
    _, col = _groups(state, ctx)
    return entity_response(GROUP, _group_or_404(col, gid), "groups")


@bp.patch("/groups/<gid>")
def update_group(gid: str) -> Response:
    """PATCH /groups/{id}: 204."""
    ctx = require_app(*GROUP.write_roles)
    state = emulator_state()
    props = validate_props(GROUP, json_body(), creating=False)
    check_types(GROUP, props)
    _, col = _groups(state, ctx)
    with state.lock:
        group = dict(_group_or_404(col, gid))
        group.update(props)
    state.store.put(col, group["id"], group, change_type="updated")
    return no_content()


@bp.delete("/groups/<gid>")
def delete_group(gid: str) -> Response:
    """DELETE /groups/{id}: Microsoft 365 groups are soft-deleted, security groups permanently [DOC]."""
    ctx = require_app(*GROUP.write_roles)
    state = emulator_state()
    _, col = _groups(state, ctx)
    with state.lock:
        group = dict(_group_or_404(col, gid))
    if "Unified" in (group.get("groupTypes") or []):
        group["deletedDateTime"] = state.store.now_iso()
        _soft_remove(state, col, group)
    else:
        state.store.remove(col, group["id"], reason="deleted")
    return no_content()


_REF_RE = re.compile(r"/(?:directoryObjects|users|groups)/([^/?]+)$", re.IGNORECASE)


def _directory_ref(ts: TenantStore, ref: Any) -> str:
    """The object id an `@odata.id` / bind URL names (404 if it does not exist)."""
    if not isinstance(ref, str):
        raise GraphHTTPError(400, "Request_BadRequest", "Invalid object identifier in '@odata.id'.")
    m = _REF_RE.search(ref.strip())
    if m is None:
        raise GraphHTTPError(400, "Request_BadRequest", f"Invalid object identifier '{ref}'.")
    object_id = unquote(m.group(1)).strip("'()")
    user = ts.find_user(object_id)
    if user is not None:
        return str(user["id"])
    group = ts.groups().get(object_id.lower())
    if group is not None:
        return str(group["id"])
    raise GraphHTTPError(404, "Request_ResourceNotFound",
                         f"Resource '{object_id}' does not exist or one of its queried reference-property objects are not present.")


@bp.get("/groups/<gid>/members")
@bp.get("/groups/<gid>/members/microsoft.graph.user")
def list_members(gid: str) -> Response:
    """GET /groups/{id}/members (directoryObjects with @odata.type)."""
    ctx = require_app(*GROUP.read_roles)
    state = emulator_state()
    reject_query(GROUP, {"$select", "$top", "$skiptoken"})
    ts, col = _groups(state, ctx)
    group = _group_or_404(col, gid)
    select = delta_mod.parse_select(USER, request.args.get("$select"))
    top = request.args.get("$top")
    size = 100
    if top is not None:
        if not top.isdigit() or not 1 <= int(top) <= 999:
            raise GraphHTTPError(400, "Request_BadRequest", f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive.")
        size = int(top)
    key = f"members:{group['id']}"
    offset = 0
    skip = request.args.get("$skiptoken")
    if skip is not None:
        cursor = delta_mod.decode_token(state, skip)
        if cursor is None or cursor.key != key:
            raise GraphHTTPError(400, "Request_BadRequest", "Invalid skip token.")
        offset, size, select = cursor.pos or 0, cursor.page, cursor.select
    with state.lock:
        member_ids = list(col.members.get(group["id"], {}))
        chunk = member_ids[offset:offset + size]
        values = []
        users = ts.users()
        for mid in chunk:
            user = users.get(mid)
            if user is not None:
                values.append({"@odata.type": USER.odata_type, **delta_mod.project(USER, user, select)})
                continue
            member_group = col.get(mid)
            if member_group is not None and not request.path.endswith("microsoft.graph.user"):
                values.append({"@odata.type": GROUP.odata_type, **delta_mod.project(GROUP, member_group, None)})
    body: dict[str, Any] = {"@odata.context": f"{base_url()}/v1.0/$metadata#directoryObjects"}
    if offset + size < len(member_ids):
        nxt = delta_mod.Cursor(key, 0, 0, offset + size, 0, state.clock.time(), select, size, None, True, False)
        body["@odata.nextLink"] = f"{base_url()}{request.path}?$skiptoken={delta_mod.encode_token(state, nxt)}"
    body["value"] = values
    return json_response(body)


def _membership_event(state: EmulatorState, col: Collection, gid: str) -> None:
    group = col.get(gid)
    event = state.store.event_for(col, gid, "updated", group)
    extra = (f"groups/{gid}/members".lower(),)
    state.store.notify([type(event)(**{**event.__dict__, "collections": (*event.collections, *extra)})])


@bp.post("/groups/<gid>/members/$ref")
def add_member(gid: str) -> Response:
    """POST /groups/{id}/members/$ref {"@odata.id": ".../directoryObjects/{id}"}: 204."""
    ctx = require_app(*GROUP_MEMBER_WRITE_ROLES)
    state = emulator_state()
    body = json_body()
    ts, col = _groups(state, ctx)
    group = _group_or_404(col, gid)
    if set(body) != {"@odata.id"}:
        raise GraphHTTPError(400, "Request_BadRequest", "The request body must contain only '@odata.id'.")
    member_id = _directory_ref(ts, body["@odata.id"])
    with state.lock:
        members = col.members.setdefault(group["id"], {})
        if member_id in members:
            raise GraphHTTPError(400, "Request_BadRequest",
                                 "One or more added object references already exist for the following modified properties: 'members'.")
        seq = state.store.next_seq()
        members[member_id] = seq
        col.member_log.setdefault(group["id"], []).append((seq, member_id, False))
    state.store.touch(col, group["id"])
    _membership_event(state, col, group["id"])
    return no_content()


@bp.delete("/groups/<gid>/members/<member_id>/$ref")
def remove_member(gid: str, member_id: str) -> Response:
    """DELETE /groups/{id}/members/{memberId}/$ref: 204."""
    ctx = require_app(*GROUP_MEMBER_WRITE_ROLES)
    state = emulator_state()
    _, col = _groups(state, ctx)
    group = _group_or_404(col, gid)
    with state.lock:
        members = col.members.get(group["id"], {})
        key = member_id.lower()
        if key not in members:
            raise GraphHTTPError(404, "Request_ResourceNotFound",
                                 f"Resource '{member_id}' does not exist or one of its queried reference-property objects are not present.")
        seq = state.store.next_seq()
        del members[key]
        col.member_log.setdefault(group["id"], []).append((seq, key, True))
    state.store.touch(col, group["id"])
    _membership_event(state, col, group["id"])
    return no_content()


@bp.route("/me", methods=["GET", "POST", "PATCH", "DELETE", "PUT"])
@bp.route("/me/<path:rest>", methods=["GET", "POST", "PATCH", "DELETE", "PUT"])
def me(rest: str = "") -> Response:
    """/me needs a signed-in user; the emulator issues app-only tokens, as Graph answers them."""
    require_app()
    raise GraphHTTPError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
