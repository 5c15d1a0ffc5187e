"""Directory deleted items: /v1.0/directory/deletedItems (list, get, purge, restore) for users and groups.

A soft-deleted user or Microsoft 365 group waits here (delta reason ``changed``) until it is restored (it comes back
as new) or purged (delta reason ``deleted``): https://learn.microsoft.com/graph/api/resources/directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import base_url, emulator_state, json_response, no_content
from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.groups import GROUP, groups_of
from syncer.emulator.families.directory.owners import drop_owner_everywhere
from syncer.emulator.families.directory.users import USER, find_user, users_of
from syncer.emulator.identity import require_app
from syncer.emulator.resources import ResourceType
from syncer.emulator.store import TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("directory_deleted", __name__, url_prefix="/v1.0")


def _deleted_collection(ts: TenantStore, type_name: str) -> tuple[ResourceType, Collection]:
    lowered = type_name.lower()
    if lowered == "microsoft.graph.user":
        return USER, users_of(ts)
    if lowered == "microsoft.graph.group":
        return GROUP, groups_of(ts)
    raise GraphHTTPError(400, "Request_BadRequest", f"Unsupported type cast '{type_name}'.")


@bp.get("/directory/deletedItems/<type_name>")
def list_deleted(type_name: str) -> Response:
    """GET /directory/deletedItems/microsoft.graph.user (or .group)."""
    ctx = require_app(*USER.read_roles, *GROUP.read_roles, delegated=USER.delegated_read | GROUP.delegated_read)
    state = emulator_state()
    ts = state.store.tenant(ctx.tenant_id)
    rtype, col = _deleted_collection(ts, type_name)
    with state.lock:
        values = [delta_mod.project(rtype, last, None) for (reason, last) in col.removed.values() if reason == "changed"]
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#directoryObjects", "value": values})


def _find_deleted(ts: TenantStore, item_id: str) -> tuple[ResourceType, Collection, dict[str, Any]]:
    for rtype, col in ((USER, users_of(ts)), (GROUP, groups_of(ts))):
        entry = col.removed.get(item_id.lower()) or col.removed.get(item_id)
        if entry is not None and entry[0] == "changed":
            return rtype, col, entry[1]
    raise GraphHTTPError(404, "Request_ResourceNotFound",
                         f"Resource '{item_id}' does not exist or one of its queried reference-property objects are not present.")


@bp.get("/directory/deletedItems/<item_id>")
def get_deleted(item_id: str) -> Response:
    """GET /directory/deletedItems/{id}."""
    ctx = require_app(*USER.read_roles, *GROUP.read_roles, delegated=USER.delegated_read | GROUP.delegated_read)
    state = emulator_state()
    rtype, _, item = _find_deleted(state.store.tenant(ctx.tenant_id), item_id)
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#directoryObjects/$entity",
                  "@odata.type": rtype.odata_type, **delta_mod.project(rtype, item, None)})


@bp.delete("/directory/deletedItems/<item_id>")
def purge_deleted(item_id: str) -> Response:
    """DELETE /directory/deletedItems/{id}: permanent delete (delta reason "deleted")."""
    ctx = require_app(*USER.write_roles, *GROUP.write_roles, delegated=USER.delegated_write | GROUP.delegated_write)
    state = emulator_state()
    ts = state.store.tenant(ctx.tenant_id)
    with state.lock:
        rtype, col, item = _find_deleted(ts, item_id)
    state.store.remove(col, item["id"], reason="deleted")
    if rtype is USER:
        _drop_memberships(state, ts, item["id"])
        drop_owner_everywhere(state, ts, item["id"])
    return no_content()


@bp.post("/directory/deletedItems/<item_id>/restore")
def restore_deleted(item_id: str) -> Response:
    """POST /directory/deletedItems/{id}/restore: the object comes back (as new, in delta)."""
    ctx = require_app(*USER.write_roles, *GROUP.write_roles, delegated=USER.delegated_write | GROUP.delegated_write)
    state = emulator_state()
    ts = state.store.tenant(ctx.tenant_id)
    with state.lock:
        rtype, col, item = _find_deleted(ts, item_id)
        restored = dict(item)
        restored["deletedDateTime"] = None
        if rtype is USER:
            upn = str(restored.get("userPrincipalName", ""))
            if find_user(ts, upn) is not None:
                raise GraphHTTPError(400, "Request_BadRequest",
                                     "Another object with the same value for property userPrincipalName already exists.")
            ts.upn_index[upn.lower()] = restored["id"]
    state.store.put(col, restored["id"], restored, change_type="created")
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#directoryObjects/$entity",
                  "@odata.type": rtype.odata_type, **delta_mod.project(rtype, restored, None)})


def _drop_memberships(state: EmulatorState, ts: TenantStore, member_id: str) -> None:
    groups = groups_of(ts)
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
