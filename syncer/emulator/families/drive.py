"""OneDrive / SharePoint drive items: /drives/{id}/... and /users/{id|upn}/drive/...

Items live in one collection per drive (the delta scope ``drives/{id}/root``). The root folder is an
item too and appears in delta, as in Graph. Folders are created with ``POST .../children``, files with
``PUT .../{parent}:/{name}:/content``; a delete removes the item and everything below it, each
reported in delta with the ``deleted`` facet. Delta links use ``?token=`` and the older
``delta(token='...')`` path form is accepted too (https://learn.microsoft.com/graph/api/driveitem-delta).
Subscriptions name a drive's root only, and hear of a change anywhere in the drive.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import (
    base_url,
    emulator_state,
    json_body,
    json_response,
    no_content,
    reject_query,
    validate_props,
)
from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.users import find_user
from syncer.emulator.identity import check_owner, require_access
from syncer.emulator.resources import DeltaSpec, Family, ResourceType
from syncer.emulator.store import TenantStore
from syncer.emulator.subscription_model import SubscribableResource

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("drive", __name__, url_prefix="/v1.0")

_PUT_RE = re.compile(r"^(?P<parent>[^:]+):/(?P<name>[^:]+):/content$")


def _root_collections(ts: TenantStore, col: Collection, item_id: str) -> list[str]:
    """A change anywhere in a drive is a change of its root, also addressed through the owner's /drive."""
    drive_id = col.parents["drive"]
    collections = [f"drives/{drive_id}/root".lower()]
    owner = ts.drives.get(drive_id)
    if owner:
        collections.append(f"users/{owner}/drive/root".lower())
    return collections


_FILES_READ = frozenset({"Files.Read.All", "Files.ReadWrite.All", "Sites.Read.All", "Sites.ReadWrite.All"})
DRIVE_ITEM = ResourceType(
    name="driveItem",
    odata_type="#microsoft.graph.driveItem",
    notification_type="#Microsoft.Graph.DriveItem",
    collection="drives/{drive}/items",
    family="drive",
    read_roles=_FILES_READ,
    write_roles=frozenset({"Files.ReadWrite.All", "Sites.ReadWrite.All"}),
    delegated_read=_FILES_READ | {"Files.Read", "Files.ReadWrite"},
    delegated_write=frozenset({"Files.ReadWrite", "Files.ReadWrite.All", "Sites.ReadWrite.All"}),
    personal_accounts=True,
    properties=(
        "id", "cTag", "createdBy", "createdDateTime", "deleted", "description", "eTag", "file",
        "fileSystemInfo", "folder", "lastModifiedBy", "lastModifiedDateTime", "name", "parentReference",
        "root", "size", "webUrl",
    ),
    read_only=frozenset({
        "id", "cTag", "createdBy", "createdDateTime", "deleted", "eTag", "lastModifiedBy",
        "lastModifiedDateTime", "parentReference", "root", "size", "webUrl",
    }),
    required_on_create=("name",),
    # drive delta: default 200 [guess], $top honoured up to 1000 [guess].
    delta=DeltaSpec(default_page=200, max_page=1000),
    list_default_page=200,
    list_max_page=1000,
    notification_resource="drives/{drive}/root",
    event_collections=_root_collections,
    notification_resource_data=False,
)


def _not_found() -> GraphHTTPError:
    return GraphHTTPError(404, "itemNotFound", "The resource could not be found.")


def ensure_user_drive(state: EmulatorState, ts: TenantStore, uid: str) -> str:
    """The user's OneDrive id, created (with its root folder) on first use."""
    did = ts.user_drive.get(uid)
    if did is not None:
        return did
    with state.lock:
        did = ts.user_drive.get(uid)
        if did is not None:
            return did
        did = new_drive(state, ts, owner_user=uid)
        ts.user_drive[uid] = did
    return did


def new_drive(state: EmulatorState, ts: TenantStore, *, owner_user: str | None = None,
              library_of: tuple[str, str] | None = None) -> str:
    """A new drive with its root folder: a user's OneDrive, or a document library (*library_of* = ("group" or
    "site", id)) as a group's or site's default library (https://learn.microsoft.com/graph/api/resources/drive)."""
    with state.lock:
        raw = state.store.rng.getrandbits(8 * 48).to_bytes(48, "big")
        did = "b!" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
        ts.drives[did] = owner_user
        if library_of is not None:
            ts.well_known[(did, f"owner:{library_of[0]}")] = library_of[1]
        col = ts.collection(DRIVE_ITEM, {"drive": did})
        root_id = state.store.new_drive_item_id()
        ts.well_known[(did, "root")] = root_id
        now = state.store.now_iso()
        root = _item_body(state, did, root_id, name="root", parent=None, folder=True, created=now)
        root["root"] = {}
        state.store.put(col, root_id, root, change_type="created", notify=False)
    return did


def drive_json(ts: TenantStore, did: str) -> dict[str, Any]:
    """The drive resource: a user's OneDrive (``business``) or a library (``documentLibrary``, owned by its group or
    site)."""
    owner = ts.drives.get(did)
    group = ts.well_known.get((did, "owner:group"))
    site = ts.well_known.get((did, "owner:site"))
    if owner is not None or (group is None and site is None):
        return {"id": did, "driveType": "business", "name": "OneDrive",
                "owner": {"user": {"id": owner}} if owner else None,
                "webUrl": f"https://contoso-my.sharepoint.com/personal/{did[2:12]}/Documents"}
    return {"id": did, "driveType": "documentLibrary", "name": "Documents",
            "owner": {"group": {"id": group}} if group else {"site": {"id": site}},
            "webUrl": f"https://contoso.sharepoint.com/sites/{did[2:12]}/Shared%20Documents"}


def _item_body(state: EmulatorState, did: str, item_id: str, *, name: str, parent: str | None, folder: bool,
               created: str, size: int = 0) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id, "name": name, "createdDateTime": created, "lastModifiedDateTime": created,
        "eTag": f'"{{{item_id}}},1"', "cTag": f'"c:{{{item_id}}},1"', "size": size,
        "webUrl": f"https://contoso-my.sharepoint.com/personal/{did[2:12]}/Documents/{name}",
        "createdBy": {"application": {"displayName": "emulator"}},
        "lastModifiedBy": {"application": {"displayName": "emulator"}},
        "parentReference": {"driveId": did, "driveType": "business", **({"id": parent} if parent else {})},
        "fileSystemInfo": {"createdDateTime": created, "lastModifiedDateTime": created},
    }
    if folder:
        item["folder"] = {"childCount": 0}
    else:
        item["file"] = {"mimeType": "application/octet-stream", "hashes": {}}
    return item


def _bump(item: dict[str, Any], now: str) -> dict[str, Any]:
    version = int(str(item["eTag"]).rsplit(",", 1)[1].rstrip('"')) + 1
    item["eTag"] = f'"{{{item["id"]}}},{version}"'
    item["cTag"] = f'"c:{{{item["id"]}}},{version}"'
    item["lastModifiedDateTime"] = now
    return item


def _drive_col(state: EmulatorState, ts: TenantStore, did: str) -> Collection:
    if did not in ts.drives:
        raise GraphHTTPError(404, "itemNotFound", "The drive could not be found.")
    return ts.collection(DRIVE_ITEM, {"drive": did})


def _children(col: Collection, parent_id: str) -> list[dict[str, Any]]:
    return [item for _, item in col.iter_live() if (item.get("parentReference") or {}).get("id") == parent_id]


@bp.route("/drives/<did>", methods=["GET"])
@bp.route("/drives/<did>/<path:rest>", methods=["GET", "POST", "PATCH", "DELETE", "PUT"])
def drives(did: str, rest: str = "") -> Response:
    """Everything under /drives/{id}."""
    return _dispatch(did, [s for s in rest.split("/") if s], link_base=f"drives/{did}", raw_rest=rest)


def user_drive(ukey: str, segs: list[str]) -> Response:
    """/users/{u}/drive/... (called by the mailbox dispatcher)."""
    state = emulator_state()
    ctx = require_access(DRIVE_ITEM, write=request.method != "GET")
    ts = state.store.tenant(ctx.tenant_id)
    user = find_user(ts, ukey)
    if user is None:
        raise GraphHTTPError(404, "itemNotFound", f"The user '{ukey}' could not be found.")
    check_owner(ctx, str(user["id"]), "drive")
    did = ensure_user_drive(state, ts, str(user["id"]))
    raw = request.path.split("/drive", 1)[1].lstrip("/") if "/drive" in request.path else ""
    return _dispatch(did, segs, link_base=f"users/{ukey}/drive", raw_rest=raw)


def _dispatch(did: str, segs: list[str], *, link_base: str, raw_rest: str) -> Response:
    state = emulator_state()
    method = request.method
    ctx = require_access(DRIVE_ITEM, write=method != "GET")
    ts = state.store.tenant(ctx.tenant_id)
    col = _drive_col(state, ts, did)
    owner_id = ts.drives.get(did)
    if owner_id:
        # a signed-in user reaches their own OneDrive (sharing is not emulated)
        check_owner(ctx, owner_id, "drive")
    root_id = ts.well_known[(did, "root")]
    low = [s.lower() for s in segs]
    if not segs:
        if method != "GET":
            raise _method()
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#drives/$entity", **drive_json(ts, did)})
    # PUT .../items/{parent}:/{name}:/content and .../root:/{name}:/content
    if method == "PUT":
        return _put_content(state, col, did, root_id, raw_rest)
    if low[0] == "root":
        item_id, rest = root_id, segs[1:]
    elif low[0] == "items" and len(segs) >= 2:
        item_id = root_id if low[1] == "root" else segs[1]
        rest = segs[2:]
    else:
        raise GraphHTTPError(400, "invalidRequest", f"Resource not found for the segment '{segs[0]}'.")
    rest_low = [s.lower() for s in rest]
    if rest_low and (rest_low[0] == "delta" or rest_low[0].startswith("delta(")):
        if item_id != root_id:
            raise GraphHTTPError(400, "invalidRequest", "Delta is only supported on the root of a drive.")
        if method != "GET":
            raise _method()
        return _delta(state, col, rest[0], link_path=f"{link_base}/root/delta")
    with state.lock:
        item = col.get(item_id)
    if item is None:
        raise _not_found()
    if rest_low == ["children"]:
        if method == "GET":
            reject_query(DRIVE_ITEM, {"$select", "$top"})
            select = delta_mod.parse_select(DRIVE_ITEM, request.args.get("$select"))
            with state.lock:
                values = [delta_mod.project(DRIVE_ITEM, c, select) for c in _children(col, item_id)]
            return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#drives('{did}')/items", "value": values})
        if method == "POST":
            return _create_child(state, col, did, item)
        raise _method()
    if rest:
        raise GraphHTTPError(400, "invalidRequest", f"Resource not found for the segment '{rest[0]}'.")
    if method == "GET":
        select = delta_mod.parse_select(DRIVE_ITEM, request.args.get("$select"))
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#drives('{did}')/items/$entity",
                      **delta_mod.project(DRIVE_ITEM, item, select)})
    if method == "PATCH":
        return _patch(state, col, did, item)
    if method == "DELETE":
        if item_id == root_id:
            raise GraphHTTPError(403, "accessDenied", "The root of a drive cannot be deleted.")
        _delete_tree(state, col, item)
        return no_content()
    raise _method()


def _method() -> GraphHTTPError:
    return GraphHTTPError(405, "invalidRequest", f"The method {request.method} is not supported on this resource.")


def _delta(state: EmulatorState, col: Collection, segment: str, *, link_path: str) -> Response:
    token = delta_mod.drive_token_from_path(segment) if segment.lower().startswith("delta(") else None
    if segment.lower().startswith("delta(") and token is None:
        raise GraphHTTPError(400, "invalidRequest", "Malformed delta token segment.")
    reject_query(DRIVE_ITEM, {"$select", "$top", "$expand", "$skiptoken", "$deltatoken", "token"})
    if token is None:
        token = request.args.get("token") or request.args.get("$skiptoken") or request.args.get("$deltatoken") or None
    latest = False
    if token is not None and token.lower() == "latest":
        token, latest = None, True
    return delta_mod.run_delta(state, col, link_path=link_path, token=token, token_kind="drive", latest=latest)


def _unique_name(col: Collection, parent_id: str, name: str, behaviour: str) -> tuple[str, dict[str, Any] | None]:
    siblings = {str(c["name"]).lower(): c for c in _children(col, parent_id)}
    existing = siblings.get(name.lower())
    if existing is None:
        return name, None
    if behaviour == "replace":
        return name, existing
    if behaviour == "rename":
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        n = 1
        while True:
            candidate = f"{stem} {n}{dot}{ext}" if dot else f"{name} {n}"
            if candidate.lower() not in siblings:
                return candidate, None
            n += 1
    raise GraphHTTPError(409, "nameAlreadyExists", "The specified item name already exists.")


def _create_child(state: EmulatorState, col: Collection, did: str, parent: dict[str, Any]) -> Response:
    if "folder" not in parent:
        raise GraphHTTPError(400, "invalidRequest", "The parent item is not a folder.")
    body = json_body()
    behaviour = str(body.pop("@microsoft.graph.conflictBehavior", "fail"))
    props = validate_props(DRIVE_ITEM, body, creating=True, allow=frozenset({"folder", "file"}))
    if not isinstance(props.get("name"), str) or not props["name"] or "/" in props["name"]:
        raise GraphHTTPError(400, "invalidRequest", "Invalid name.")
    if "folder" not in props and "file" not in props:
        raise GraphHTTPError(400, "invalidRequest", "Either 'folder' or 'file' must be set.")
    with state.lock:
        name, replaced = _unique_name(col, parent["id"], props["name"], behaviour)
        now = state.store.now_iso()
        item_id = replaced["id"] if replaced else state.store.new_drive_item_id()
        item = _item_body(state, did, item_id, name=name, parent=parent["id"], folder="folder" in props, created=now)
        if "description" in props:
            item["description"] = props["description"]
    state.store.put(col, item_id, item, change_type="updated")
    _touch_parent(state, col, parent["id"])
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#drives('{did}')/items/$entity", **item}, 201)


def _put_content(state: EmulatorState, col: Collection, did: str, root_id: str, raw_rest: str) -> Response:
    rest = raw_rest.split("/", 1)[1] if raw_rest.lower().startswith("items/") else raw_rest
    match = _PUT_RE.match(rest)
    if match is None:
        raise GraphHTTPError(400, "invalidRequest", "Use PUT .../items/{parent-id}:/{filename}:/content.")
    parent_key = match.group("parent")
    parent_id = root_id if parent_key.lower() == "root" else parent_key
    data = request.get_data()
    with state.lock:
        parent = col.get(parent_id)
        if parent is None or "folder" not in parent:
            raise _not_found()
        name = match.group("name")
        _, existing = _unique_name(col, parent_id, name, "replace")
        now = state.store.now_iso()
        if existing is not None:
            item = _bump(dict(existing), now)
            item["size"] = len(data)
            status = 200
        else:
            item = _item_body(state, did, state.store.new_drive_item_id(), name=name, parent=parent_id, folder=False,
                              created=now, size=len(data))
            status = 201
    state.store.put(col, item["id"], item, change_type="updated")
    _touch_parent(state, col, parent_id)
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#drives('{did}')/items/$entity", **item}, status)


def _touch_parent(state: EmulatorState, col: Collection, parent_id: str) -> None:
    """A folder changes when its children do (childCount, eTag), as in OneDrive's delta."""
    with state.lock:
        parent = col.get(parent_id)
        if parent is None:
            return
        updated = _bump(dict(parent), state.store.now_iso())
        updated["folder"] = {"childCount": len(_children(col, parent_id))}
    state.store.put(col, parent_id, updated, change_type="updated", notify=False)


def _patch(state: EmulatorState, col: Collection, did: str, item: dict[str, Any]) -> Response:
    body = json_body()
    parent_ref = body.pop("parentReference", None)
    props = validate_props(DRIVE_ITEM, body, creating=False)
    with state.lock:
        updated = _bump(dict(item), state.store.now_iso())
        old_parent = (item.get("parentReference") or {}).get("id")
        new_parent = old_parent
        if parent_ref is not None:
            if not isinstance(parent_ref, dict) or not isinstance(parent_ref.get("id"), str):
                raise GraphHTTPError(400, "invalidRequest", "parentReference.id is required to move an item.")
            target = col.get(parent_ref["id"])
            if target is None or "folder" not in target:
                raise _not_found()
            new_parent = target["id"]
            updated["parentReference"] = {**(updated.get("parentReference") or {}), "id": new_parent}
        if "name" in props:
            if not isinstance(props["name"], str) or not props["name"]:
                raise GraphHTTPError(400, "invalidRequest", "Invalid name.")
            if props["name"].lower() != str(item["name"]).lower():
                _unique_name(col, new_parent or "", props["name"], "fail")  # 409 on a clash
        updated.update(props)
    state.store.put(col, updated["id"], updated, change_type="updated")
    for parent in {old_parent, new_parent} - {None}:
        _touch_parent(state, col, str(parent))
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#drives('{did}')/items/$entity", **updated})


def _delete_tree(state: EmulatorState, col: Collection, item: dict[str, Any]) -> None:
    with state.lock:
        order = [item]
        i = 0
        while i < len(order):
            if "folder" in order[i]:
                order.extend(_children(col, order[i]["id"]))
            i += 1
    parent_id = (item.get("parentReference") or {}).get("id")
    for node in reversed(order):
        state.store.remove(col, node["id"], reason="deleted", notify=node is item)
    if parent_id:
        _touch_parent(state, col, parent_id)


def seed_drive_content(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """Create a folder with *count* files in the user's drive (no notifications)."""
    did = ensure_user_drive(state, ts, uid)
    col = ts.collection(DRIVE_ITEM, {"drive": did})
    root_id = ts.well_known[(did, "root")]
    now = state.store.now_iso()
    folder_id = state.store.new_drive_item_id()
    folder = _item_body(state, did, folder_id, name=f"Seeded {folder_id[-6:]}", parent=root_id, folder=True, created=now)
    folder["folder"] = {"childCount": count}
    state.store.put(col, folder_id, folder, change_type="created", notify=False)
    for i in range(count):
        file_id = state.store.new_drive_item_id()
        state.store.put(col, file_id, _item_body(state, did, file_id, name=f"file{i}.txt", parent=folder_id,
                                                 folder=False, created=now, size=100 + i),
                        change_type="created", notify=False)


SUBSCRIBABLE_DRIVE_ROOT = SubscribableResource(
    resource_type="driveItem",
    shapes=(("drives", "*", "root"), ("users", "*", "drive", "root")),
    change_types=frozenset({"updated"}),
    max_minutes=42_300,
    max_minutes_rich=None,
    permissions=("Files.Read.All", "Files.ReadWrite.All", "Sites.Read.All", "Sites.ReadWrite.All"),
    rich_refusal="File Services workload is not enabled for rich notifications.",
    quota="none",
    # A drive root only ever says "updated" (https://learn.microsoft.com/graph/api/resources/driveitem).
    reported_as_updated=frozenset({"created", "deleted", "softDeleted"}),
    provision=ensure_user_drive,
)

#: Serves the paths below one drive; other families (group and site libraries) reach their drives through it.
dispatch = _dispatch

FAMILY = Family(
    name="drive",
    resource_types=(DRIVE_ITEM,),
    blueprints=(bp,),
    subscribable=(SUBSCRIBABLE_DRIVE_ROOT,),
    seeders={"driveItemsPerUser": seed_drive_content},
)
