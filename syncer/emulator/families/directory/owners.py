"""Group owners: a relation of its own (not members), read with ``GET /groups/{id}/owners`` and written with ``$ref``.

https://learn.microsoft.com/graph/api/group-list-owners, https://learn.microsoft.com/graph/api/group-post-owners,
https://learn.microsoft.com/graph/api/group-delete-owners. Owners are users or service principals, at most 100 per
group (https://learn.microsoft.com/graph/api/resources/group, ``owners``). An owner change is a change of the group:
it is logged on the group (groups delta reports the group) and notified to subscriptions on ``/groups``,
``/groups/{id}`` and ``/groups/{id}/owners``. Whether groups delta reports ``owners@delta`` is not documented
(``members@delta`` is): the emulator does not.

The links live in their own collection's ``members``/``member_log`` slots, keyed by group id, so members and owners
never mix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import base_url, emulator_state, json_body, json_response, no_content, reject_query
from syncer.emulator.changelog import Collection
from syncer.emulator.delta_token import Cursor, decode_token, encode_token
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.groups import (
    GROUP,
    GROUP_MEMBER_WRITE_ROLES,
    directory_ref,
    group_or_404,
    groups_of,
    link_event,
)
from syncer.emulator.families.directory.users import USER, users_of
from syncer.emulator.identity import require_app
from syncer.emulator.resources import ResourceType
from syncer.emulator.store import TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("directory_owners", __name__, url_prefix="/v1.0")

#: Limited to 100 owners (https://learn.microsoft.com/graph/api/resources/group).
MAX_OWNERS = 100

#: Not a Graph type: the record of the hidden collection holding the owner links.
OWNER_LINKS = ResourceType(
    name="groupOwnerLinks",
    odata_type="#microsoft.graph.directoryObject",
    notification_type="#Microsoft.Graph.Group",
    collection="groupowners",
    family="directory",
    read_roles=GROUP.read_roles,
    write_roles=GROUP_MEMBER_WRITE_ROLES,
    properties=("id",),
    index_by_id=False,
)


def owner_links(ts: TenantStore) -> Collection:
    """The tenant's owner links: ``members[group id] = {owner id: seq}``."""
    return ts.collection(OWNER_LINKS)


def owners_of(ts: TenantStore, group_id: str) -> list[str]:
    """Owner ids of a group, in the order they were added."""
    return list(owner_links(ts).members.get(group_id, {}))


def set_owner(state: EmulatorState, ts: TenantStore, group_id: str, owner_id: str, *, add: bool) -> None:
    """Add or remove one owner link (caller checked the group); logs the group and notifies."""
    links = owner_links(ts)
    groups = groups_of(ts)
    with state.lock:
        owners = links.members.setdefault(group_id, {})
        if add:
            if owner_id in owners:
                raise GraphHTTPError(400, "Request_BadRequest", "One or more added object references already exist "
                                     "for the following modified properties: 'owners'.")
            if len(owners) >= MAX_OWNERS:
                raise GraphHTTPError(400, "Request_BadRequest", f"A group can have at most {MAX_OWNERS} owners.")
        elif owner_id not in owners:
            raise GraphHTTPError(404, "Request_ResourceNotFound",
                                 f"Resource '{owner_id}' does not exist or one of its queried reference-property objects are not present.")
        seq = state.store.next_seq()
        if add:
            owners[owner_id] = seq
        else:
            del owners[owner_id]
        links.member_log.setdefault(group_id, []).append((seq, owner_id, not add))
    state.store.touch(groups, group_id)
    link_event(state, groups, group_id, relation="owners", changed=owner_id, removed=not add)


def add_owners_on_create(state: EmulatorState, ts: TenantStore, group_id: str, owner_ids: list[str]) -> None:
    """``owners@odata.bind`` of a new group (no notification: the creation itself is the change)."""
    links = owner_links(ts)
    if len(owner_ids) > MAX_OWNERS:
        raise GraphHTTPError(400, "Request_BadRequest", f"A group can have at most {MAX_OWNERS} owners.")
    with state.lock:
        owners = links.members.setdefault(group_id, {})
        for owner_id in owner_ids:
            seq = state.store.next_seq()
            owners[owner_id] = seq
            links.member_log.setdefault(group_id, []).append((seq, owner_id, False))


def drop_owner_everywhere(state: EmulatorState, ts: TenantStore, owner_id: str) -> None:
    """A user deleted for good owns nothing any more."""
    links = owner_links(ts)
    with state.lock:
        groups = [gid for gid, owners in links.members.items() if owner_id in owners]
    for gid in groups:
        set_owner(state, ts, gid, owner_id, add=False)


def _owner_id(ts: TenantStore, ref: Any) -> str:
    object_id = directory_ref(ts, ref)
    if users_of(ts).get(object_id) is None:
        # groups cannot own groups (users and service principals can)
        raise GraphHTTPError(400, "Request_BadRequest", "Invalid object identifier: a group owner must be a user or a service principal.")
    return object_id


@bp.get("/groups/<gid>/owners")
@bp.get("/groups/<gid>/owners/microsoft.graph.user")
def list_owners(gid: str) -> Response:
    """GET /groups/{id}/owners: directoryObjects with @odata.type, $select and $top paging."""
    ctx = require_app(*GROUP.read_roles)
    state = emulator_state()
    reject_query(GROUP, {"$select", "$top", "$skiptoken"})
    ts = state.store.tenant(ctx.tenant_id)
    group = group_or_404(groups_of(ts), gid)
    select = delta_mod.parse_select(USER, request.args.get("$select"))
    size = 100
    top = request.args.get("$top")
    if top is not None:
        if not top.isdigit() or not 1 <= int(top) <= 999:
            raise GraphHTTPError(400, "Request_BadRequest", f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive.")
        size = int(top)
    key = f"owners:{group['id']}"
    offset = 0
    skip = request.args.get("$skiptoken")
    if skip is not None:
        cursor = decode_token(state, skip)
        if cursor is None or cursor.key != key:
            raise GraphHTTPError(400, "Request_BadRequest", "Invalid skip token.")
        offset, size, select = cursor.pos or 0, cursor.page, cursor.select
    with state.lock:
        ids = owners_of(ts, str(group["id"]))
        users = users_of(ts)
        values = []
        for oid in ids[offset:offset + size]:
            user = users.get(oid)
            if user is not None:
                values.append({"@odata.type": USER.odata_type, **delta_mod.project(USER, user, select)})
    body: dict[str, Any] = {"@odata.context": f"{base_url()}/v1.0/$metadata#directoryObjects"}
    if offset + size < len(ids):
        nxt = Cursor(key, 0, 0, offset + size, 0, state.clock.time(), select, size, None, True, False)
        body["@odata.nextLink"] = f"{base_url()}{request.path}?$skiptoken={encode_token(state, nxt)}"
    body["value"] = values
    return json_response(body)


@bp.post("/groups/<gid>/owners/$ref")
def add_owner(gid: str) -> Response:
    """POST /groups/{id}/owners/$ref {"@odata.id": ".../users/{id}"}: 204."""
    ctx = require_app(*GROUP_MEMBER_WRITE_ROLES)
    state = emulator_state()
    body = json_body()
    ts = state.store.tenant(ctx.tenant_id)
    group = group_or_404(groups_of(ts), gid)
    if set(body) != {"@odata.id"}:
        raise GraphHTTPError(400, "Request_BadRequest", "The request body must contain only '@odata.id'.")
    set_owner(state, ts, str(group["id"]), _owner_id(ts, body["@odata.id"]), add=True)
    return no_content()


@bp.delete("/groups/<gid>/owners/<owner_id>/$ref")
def remove_owner(gid: str, owner_id: str) -> Response:
    """DELETE /groups/{id}/owners/{ownerId}/$ref: 204."""
    ctx = require_app(*GROUP_MEMBER_WRITE_ROLES)
    state = emulator_state()
    ts = state.store.tenant(ctx.tenant_id)
    group = group_or_404(groups_of(ts), gid)
    set_owner(state, ts, str(group["id"]), owner_id.lower(), add=False)
    return no_content()
