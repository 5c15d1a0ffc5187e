"""Groups and their membership: /v1.0/groups (list, get, create, update, delete, delta) and members/$ref.

Microsoft 365 ("Unified") groups are soft-deleted like users; security groups are deleted permanently at once.
Membership changes go through Graph's ``$ref`` API and show up in groups delta as ``members@delta``
(https://learn.microsoft.com/graph/api/group-delta).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
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
from syncer.emulator.changelog import Collection
from syncer.emulator.delta_token import Cursor, decode_token, encode_token
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.users import (
    DIRECTORY_READ,
    DIRECTORY_RICH_REFUSAL,
    DIRECTORY_WRITE,
    USER,
    directory_token,
    find_user,
    soft_remove,
    users_of,
)
from syncer.emulator.identity import AppContext, require_access, require_app
from syncer.emulator.resources import DeltaSpec, ResourceType
from syncer.emulator.store import TenantStore
from syncer.emulator.subscription_model import SubscribableResource

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("directory_groups", __name__, url_prefix="/v1.0")

GROUP = ResourceType(
    name="group",
    odata_type="#microsoft.graph.group",
    notification_type="#Microsoft.Graph.Group",
    collection="groups",
    family="directory",
    read_roles=frozenset({"Group.Read.All", "Group.ReadWrite.All", "GroupMember.Read.All"}) | DIRECTORY_READ,
    write_roles=frozenset({"Group.ReadWrite.All", "Group.Create"}) | DIRECTORY_WRITE,
    delegated_read=frozenset({"Group.Read.All", "Group.ReadWrite.All", "GroupMember.Read.All"}) | DIRECTORY_READ,
    delegated_write=frozenset({"Group.ReadWrite.All"}) | DIRECTORY_WRITE,
    properties=(
        "id", "classification", "createdDateTime", "deletedDateTime", "description", "displayName",
        "groupTypes", "mail", "mailEnabled", "mailNickname", "securityEnabled", "visibility",
        "proxyAddresses", "renewedDateTime",
    ),
    read_only=frozenset({"id", "createdDateTime", "deletedDateTime", "mail", "proxyAddresses", "renewedDateTime"}),
    required_on_create=("displayName", "mailEnabled", "mailNickname", "securityEnabled"),
    delta=DeltaSpec(default_page=100, max_page=999, accepts_top=False),
    notification_resource="Groups/{id}",
    soft_delete=True,  # only Microsoft 365 ("Unified") groups; security groups are hard-deleted
    delta_links=("members",),
    item_collection="groups/{id}",
)


#: Permissions for membership writes ($ref add/remove) [DOC: group-post-members].
GROUP_MEMBER_WRITE_ROLES = frozenset({"GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"})

SUBSCRIBABLE_GROUPS = SubscribableResource(
    resource_type="group",
    # /groups/{id}/owners too (https://learn.microsoft.com/graph/api/subscription-post-subscriptions)
    shapes=(("groups",), ("groups", "*", "members"), ("groups", "*", "owners")),
    item_shapes=(("groups", "*"),),
    change_types=frozenset({"updated", "deleted"}),
    max_minutes=41_760,
    max_minutes_rich=None,
    permissions=("Group.Read.All", "Group.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
    rich_refusal=DIRECTORY_RICH_REFUSAL,
    quota="directory",
    reported_as_updated=frozenset({"created", "softDeleted"}),
)


def groups_of(ts: TenantStore) -> Collection:
    """The tenant's group collection."""
    return ts.collection(GROUP)


def add_members(state: EmulatorState, col: Collection, gid: str, member_ids: Iterable[str]) -> None:
    """Record *member_ids* as members of group *gid* in one change (caller holds the lock, then logs the group)."""
    members = col.members.setdefault(gid, {})
    log = col.member_log.setdefault(gid, [])
    seq = state.store.next_seq()
    for mid in member_ids:
        members[mid] = seq
        log.append((seq, mid, False))


# --- views --------------------------------------------------------------------------------------

def _groups(state: EmulatorState, ctx: AppContext) -> tuple[TenantStore, Collection]:
    ts = state.store.tenant(ctx.tenant_id)
    return ts, groups_of(ts)


def _group_or_404(col: Collection, gid: str) -> dict[str, Any]:
    group = col.get(gid.lower())
    if group is None:
        raise not_found_error(GROUP, gid)
    return group


@bp.get("/groups")
def list_groups() -> Response:
    """GET /groups."""
    ctx = require_access(GROUP)
    state = emulator_state()
    _, col = _groups(state, ctx)
    return list_response(state, col, "groups", allow_filter=True)


@bp.post("/groups")
def create_group() -> Response:
    """POST /groups (security or Microsoft 365 group)."""
    ctx = require_access(GROUP, write=True)
    state = emulator_state()
    body = json_body()
    props = validate_props(GROUP, body, creating=True, allow=frozenset({"members@odata.bind", "owners@odata.bind"}))
    check_types(GROUP, props)
    binds = props.pop("members@odata.bind", None) or []
    owner_binds = props.pop("owners@odata.bind", None) or []
    if not isinstance(binds, list) or not isinstance(owner_binds, list):
        raise GraphHTTPError(400, "Request_BadRequest", "'members@odata.bind' and 'owners@odata.bind' must be lists of URLs.")
    ts, col = _groups(state, ctx)
    member_ids = [_directory_ref(ts, ref) for ref in binds]
    owner_ids = [_directory_ref(ts, ref) for ref in owner_binds]
    with state.lock:
        gid = state.store.new_guid()
        group: dict[str, Any] = {p: None for p in GROUP.properties}
        group.update({"groupTypes": [], "proxyAddresses": []})
        group.update(props)
        group.update({"id": gid, "createdDateTime": state.store.now_iso(), "deletedDateTime": None,
                      "renewedDateTime": state.store.now_iso()})
        if group.get("mailEnabled"):
            group["mail"] = f"{group['mailNickname']}@{state.tenants[ctx.tenant_id].domain}"
        add_members(state, col, gid, member_ids)
        from syncer.emulator.families.directory.owners import (
            add_owners_on_create,  # owners builds on this module
        )
        add_owners_on_create(state, ts, gid, owner_ids)
    state.store.put(col, gid, group, change_type="created")
    return entity_response(GROUP, group, "groups", status=201)


@bp.get("/groups/delta")
def groups_delta() -> Response:
    """GET /groups/delta (members@delta with $select=members or $expand=members)."""
    ctx = require_access(GROUP)
    state = emulator_state()
    reject_query(GROUP, {"$select", "$deltatoken", "$skiptoken", "$top", "$expand", "$filter"})
    _, col = _groups(state, ctx)
    token, latest = directory_token()
    return delta_mod.run_delta(state, col, link_path="groups/delta", token=token, token_kind="odata", latest=latest)


@bp.get("/groups/<gid>")
def get_group(gid: str) -> Response:
    """GET /groups/{id}."""
    ctx = require_access(GROUP)
    state = emulator_state()
    reject_query(GROUP, {"$select"})
    _, col = _groups(state, ctx)
    return entity_response(GROUP, _group_or_404(col, gid), "groups")


@bp.patch("/groups/<gid>")
def update_group(gid: str) -> Response:
    """PATCH /groups/{id}: 204."""
    ctx = require_access(GROUP, write=True)
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
    ctx = require_access(GROUP, write=True)
    state = emulator_state()
    _, col = _groups(state, ctx)
    with state.lock:
        group = dict(_group_or_404(col, gid))
    if "Unified" in (group.get("groupTypes") or []):
        group["deletedDateTime"] = state.store.now_iso()
        soft_remove(state, col, group)
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
    user = find_user(ts, object_id)
    if user is not None:
        return str(user["id"])
    group = groups_of(ts).get(object_id.lower())
    if group is not None:
        return str(group["id"])
    raise GraphHTTPError(404, "Request_ResourceNotFound",
                         f"Resource '{object_id}' does not exist or one of its queried reference-property objects are not present.")


@bp.get("/groups/<gid>/members")
@bp.get("/groups/<gid>/members/microsoft.graph.user")
def list_members(gid: str) -> Response:
    """GET /groups/{id}/members (directoryObjects with @odata.type)."""
    ctx = require_access(GROUP)
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
        cursor = decode_token(state, skip)
        if cursor is None or cursor.key != key:
            raise GraphHTTPError(400, "Request_BadRequest", "Invalid skip token.")
        offset, size, select = cursor.pos or 0, cursor.page, cursor.select
    with state.lock:
        member_ids = list(col.members.get(group["id"], {}))
        chunk = member_ids[offset:offset + size]
        values = []
        users = users_of(ts)
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
        nxt = Cursor(key, 0, 0, offset + size, 0, state.clock.time(), select, size, None, True, False)
        body["@odata.nextLink"] = f"{base_url()}{request.path}?$skiptoken={encode_token(state, nxt)}"
    body["value"] = values
    return json_response(body)


def link_event(state: EmulatorState, col: Collection, gid: str, *, relation: str, changed: str, removed: bool) -> None:
    """Notify a membership or ownership change: the group is ``updated``, also on ``/groups/{id}/{relation}``.

    Member changes carry the link as ``members@delta`` in ``resourceData`` [OBS:
    https://github.com/microsoftgraph/microsoft-graph-docs/issues/9915] (``group_notification_members_delta``).
    """
    group = col.get(gid)
    event = state.store.event_for(col, gid, "updated", group)
    data = event.resource_data
    if relation == "members" and data is not None and state.config.group_notification_members_delta:
        link: dict[str, Any] = {"@odata.type": USER.odata_type, "id": changed}
        if removed:
            link["@removed"] = {"reason": "deleted"}
        data = {**data, "members@delta": [link]}
    extra = (f"groups/{gid}/{relation}".lower(),)
    state.store.notify([replace(event, collections=(*event.collections, *extra), resource_data=data)])


@bp.post("/groups/<gid>/members/$ref")
def add_member(gid: str) -> Response:
    """POST /groups/{id}/members/$ref {"@odata.id": ".../directoryObjects/{id}"}: 204."""
    ctx = require_app(*GROUP_MEMBER_WRITE_ROLES, delegated=GROUP.delegated_write | {"GroupMember.ReadWrite.All"})
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
    link_event(state, col, group["id"], relation="members", changed=member_id, removed=False)
    return no_content()


@bp.delete("/groups/<gid>/members/<member_id>/$ref")
def remove_member(gid: str, member_id: str) -> Response:
    """DELETE /groups/{id}/members/{memberId}/$ref: 204."""
    ctx = require_app(*GROUP_MEMBER_WRITE_ROLES, delegated=GROUP.delegated_write | {"GroupMember.ReadWrite.All"})
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
    link_event(state, col, group["id"], relation="members", changed=key, removed=True)
    return no_content()


#: For the owners module, which shares the group lookups.
group_or_404 = _group_or_404
directory_ref = _directory_ref


# --- seeding ------------------------------------------------------------------------------------

def seed_groups(state: EmulatorState, ts: TenantStore, count: int, member_ids: list[str]) -> None:
    """Create *count* security groups, each with *member_ids* as members (no notifications)."""
    gcol = groups_of(ts)
    created = state.store.now_iso()
    for g in range(count):
        gid = state.store.new_guid()
        item: dict[str, Any] = {p: None for p in GROUP.properties}
        item.update({"id": gid, "displayName": f"Group {g}", "mailNickname": f"group{g}", "mailEnabled": False,
                     "securityEnabled": True, "groupTypes": [], "createdDateTime": created, "proxyAddresses": []})
        with state.lock:
            state.store.put(gcol, gid, item, change_type="created", notify=False)
            add_members(state, gcol, gid, member_ids)
            state.store.touch(gcol, gid)
