"""Graph's resource endpoints under /v1.0: the write API tests drive, reads, and the delta routes.

The views are thin: they resolve the URL to a collection (checking parents exist), check permissions
from the :mod:`resources` entry, validate bodies against the entry's property table (unknown or
read-only properties are a 400, as in Graph), and call the store. Per-type behaviour that a table cannot
say (user soft delete, group membership, drive children, calendar windows) is written out below.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from flask import Blueprint, Response, current_app, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity import AppContext, require_app
from syncer.emulator.resources import (
    GROUP,
    USER,
    ResourceType,
)
from syncer.emulator.store import Collection, TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("graph", __name__, url_prefix="/v1.0")

JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


def _state() -> EmulatorState:
    return current_app.config["EMULATOR_STATE"]


def _base() -> str:
    return request.host_url.rstrip("/")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(orjson.dumps(body), status=status, content_type=JSON)
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def _no_content() -> Response:
    return Response(b"", status=204)


def _code(rtype: ResourceType, kind: str) -> str:
    directory = rtype.family == "directory"
    return {
        "bad": "Request_BadRequest" if directory else ("invalidRequest" if rtype.family == "drive" else "RequestBodyRead"),
        "notfound": "Request_ResourceNotFound" if directory else ("itemNotFound" if rtype.family == "drive" else "ErrorItemNotFound"),
    }[kind]


def _not_found(rtype: ResourceType, item_id: str) -> GraphHTTPError:
    if rtype.family == "directory":
        return GraphHTTPError(404, "Request_ResourceNotFound",
                              f"Resource '{item_id}' does not exist or one of its queried reference-property objects are not present.")
    if rtype.family == "drive":
        return GraphHTTPError(404, "itemNotFound", "The resource could not be found.")
    return GraphHTTPError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def _body() -> dict[str, Any]:
    """The request's JSON object body, or Graph's 400."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise GraphHTTPError(400, "BadRequest", "Empty Payload. JSON content expected.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GraphHTTPError(400, "BadRequest",
                             "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.") from None
    if not isinstance(body, dict):
        raise GraphHTTPError(400, "BadRequest", "Unable to read JSON request payload: a JSON object is expected.")
    return body


def _validate(rtype: ResourceType, body: dict[str, Any], *, creating: bool,
              allow: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Canonicalise property names; 400 on unknown or read-only properties or missing required ones."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name.startswith("@odata.") or name in allow:
            if name in allow:
                out[name] = value
            continue
        canonical = rtype.canonical(name)
        if canonical is None or canonical in rtype.delta_links:
            raise GraphHTTPError(400, _code(rtype, "bad"),
                                 f"The property '{name}' does not exist on type 'microsoft.graph.{rtype.name}'. "
                                 "Make sure to only use property names that are defined by the type or mark the type as open type.")
        if canonical in rtype.read_only:
            raise GraphHTTPError(400, _code(rtype, "bad"),
                                 f"Property '{canonical}' is read-only and cannot be set.")
        out[canonical] = value
    if creating:
        for name in rtype.required_on_create:
            if out.get(name) in (None, ""):
                raise GraphHTTPError(400, _code(rtype, "bad"),
                                     f"Invalid value specified for property '{name}' of resource '{rtype.name[0].upper()}{rtype.name[1:]}'.")
    return out


_SIMPLE_QUERY = {"$select"}


def _reject_query(rtype: ResourceType, allowed: set[str]) -> None:
    for name in request.args:
        if name.startswith("$") and name not in allowed:
            raise GraphHTTPError(400, "Request_UnsupportedQuery" if rtype.family == "directory" else "BadRequest",
                                 f"Unsupported query option '{name}' for this request.")


def _entity(rtype: ResourceType, item: dict[str, Any], context: str, status: int = 200) -> Response:
    select = delta_mod.parse_select(rtype, request.args.get("$select"))
    body = {"@odata.context": f"{_base()}/v1.0/$metadata#{context}/$entity", **delta_mod.project(rtype, item, select)}
    return _json(body, status)


def _list(state: EmulatorState, col: Collection, context: str) -> Response:
    """A plain (non-delta) collection GET with $top / $skiptoken paging."""
    rtype = col.rtype
    _reject_query(rtype, {"$select", "$top", "$skiptoken", "$count"} if rtype.family != "directory"
                  else {"$select", "$top", "$skiptoken"})
    select = delta_mod.parse_select(rtype, request.args.get("$select"))
    top = request.args.get("$top")
    size = rtype.list_default_page
    if top is not None:
        if not top.isdigit() or not 1 <= int(top) <= rtype.list_max_page:
            raise GraphHTTPError(400, "Request_BadRequest" if rtype.family == "directory" else "BadRequest",
                                 f"Invalid page size specified: '{top}'. Must be between 1 and {rtype.list_max_page} inclusive.")
        size = int(top)
    skip = request.args.get("$skiptoken")
    now = state.clock.time()
    if skip is not None:
        cursor = delta_mod.decode_token(state, skip)
        if cursor is None or cursor.key != col.key or cursor.is_delta_link:
            raise GraphHTTPError(400, "Request_BadRequest" if rtype.family == "directory" else "BadRequest",
                                 "Invalid skip token.")
        select = cursor.select
        size = cursor.page
    else:
        with state.lock:
            hwm = state.store.seq
        cursor = delta_mod.Cursor(col.key, 0, hwm, None, 0, now, select, size, None, True, False)
    with state.lock:
        emitted, pos, sub, done = col.walk(since=0, hwm=cursor.hwm, pos=cursor.pos, sub=cursor.sub, limit=size,
                                           include_removed=False)
        values = [delta_mod.project(rtype, e.item, select) for e in emitted if e.item is not None]
    body: dict[str, Any] = {"@odata.context": f"{_base()}/v1.0/$metadata#{context}"}
    if not done:
        cursor.pos, cursor.sub = pos, sub
        body["@odata.nextLink"] = f"{_base()}{request.path}?$skiptoken={delta_mod.encode_token(state, cursor)}"
    body["value"] = values
    return _json(body)


# ================================================================================================
# Users
# ================================================================================================

def _users(state: EmulatorState, ctx: AppContext) -> tuple[TenantStore, Collection]:
    ts = state.store.tenant(ctx.tenant_id)
    return ts, ts.users()


def _user_or_404(ts: TenantStore, key: str) -> dict[str, Any]:
    user = ts.find_user(key)
    if user is None:
        raise _not_found(USER, key)
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


def _check_types(rtype: ResourceType, props: dict[str, Any]) -> None:
    bools = {"accountEnabled", "mailEnabled", "securityEnabled", "isRead", "isAllDay", "isReminderOn", "isHidden"}
    for name, value in props.items():
        if name in bools and not isinstance(value, bool):
            raise GraphHTTPError(400, _code(rtype, "bad"),
                                 f"Cannot convert the literal '{value}' to the expected type 'Edm.Boolean'.")
        if name in ("displayName", "mailNickname", "subject", "title", "name") and value is not None \
                and not isinstance(value, str):
            raise GraphHTTPError(400, _code(rtype, "bad"),
                                 f"Cannot convert the literal '{value}' to the expected type 'Edm.String'.")


@bp.get("/users")
def list_users() -> Response:
    """GET /users."""
    ctx = require_app(*USER.read_roles)
    state = _state()
    _, col = _users(state, ctx)
    return _list(state, col, "users")


@bp.post("/users")
def create_user() -> Response:
    """POST /users."""
    ctx = require_app(*USER.write_roles)
    state = _state()
    props = _validate(USER, _body(), creating=True)
    _check_types(USER, props)
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
    return _entity(USER, user, "users", status=201)


@bp.get("/users/delta")
def users_delta() -> Response:
    """GET /users/delta (and its links)."""
    ctx = require_app(*USER.read_roles)
    state = _state()
    _reject_query(USER, {"$select", "$deltatoken", "$skiptoken", "$top", "$expand"})
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
    state = _state()
    _reject_query(USER, {"$select"})
    ts, _ = _users(state, ctx)
    return _entity(USER, _user_or_404(ts, key), "users")


@bp.patch("/users/<key>")
def update_user(key: str) -> Response:
    """PATCH /users/{id}: 204."""
    ctx = require_app(*USER.write_roles)
    state = _state()
    props = _validate(USER, _body(), creating=False)
    _check_types(USER, props)
    with state.lock:
        ts, col = _users(state, ctx)
        user = dict(_user_or_404(ts, key))
        if "userPrincipalName" in props:
            upn = _check_upn(state, ts, props["userPrincipalName"], current_id=user["id"])
            ts.upn_index.pop(str(user.get("userPrincipalName", "")).lower(), None)
            ts.upn_index[upn.lower()] = user["id"]
        user.update({k: v for k, v in props.items() if k not in USER.write_only})
    state.store.put(col, user["id"], user, change_type="updated")
    return _no_content()


@bp.delete("/users/<key>")
def delete_user(key: str) -> Response:
    """DELETE /users/{id}: soft delete (to deletedItems for 30 days; delta reason "changed")."""
    ctx = require_app(*USER.write_roles)
    state = _state()
    with state.lock:
        ts, col = _users(state, ctx)
        user = dict(_user_or_404(ts, key))
        user["deletedDateTime"] = state.store.now_iso()
        col.items[user["id"]] = user  # remember the snapshot with deletedDateTime
        ts.upn_index.pop(str(user.get("userPrincipalName", "")).lower(), None)
    _soft_remove(state, col, user)
    return _no_content()


def _soft_remove(state: EmulatorState, col: Collection, item: dict[str, Any]) -> None:
    """Soft delete: delta says reason "changed"; the ChangeEvent carries the snapshot (item not None)."""
    with state.lock:
        event = state.store.remove(col, item["id"], reason="changed", notify=False)
    del event
    ev = state.store.event_for(col, item["id"], "deleted", item)
    state.store.notify([ev])


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
    state = _state()
    ts = state.store.tenant(ctx.tenant_id)
    rtype, col = _deleted_collection(ts, type_name)
    with state.lock:
        values = [delta_mod.project(rtype, last, None) for (reason, last) in col.removed.values() if reason == "changed"]
    return _json({"@odata.context": f"{_base()}/v1.0/$metadata#directoryObjects", "value": values})


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
    state = _state()
    rtype, _, item = _find_deleted(state.store.tenant(ctx.tenant_id), item_id)
    return _json({"@odata.context": f"{_base()}/v1.0/$metadata#directoryObjects/$entity",
                  "@odata.type": rtype.odata_type, **delta_mod.project(rtype, item, None)})


@bp.delete("/directory/deletedItems/<item_id>")
def purge_deleted(item_id: str) -> Response:
    """DELETE /directory/deletedItems/{id}: permanent delete (delta reason "deleted")."""
    ctx = require_app(*USER.write_roles, *GROUP.write_roles)
    state = _state()
    ts = state.store.tenant(ctx.tenant_id)
    with state.lock:
        rtype, col, item = _find_deleted(ts, item_id)
    state.store.remove(col, item["id"], reason="deleted")
    if rtype is USER:
        _drop_memberships(state, ts, item["id"])
    return _no_content()


@bp.post("/directory/deletedItems/<item_id>/restore")
def restore_deleted(item_id: str) -> Response:
    """POST /directory/deletedItems/{id}/restore: the object comes back (as new, in delta)."""
    ctx = require_app(*USER.write_roles, *GROUP.write_roles)
    state = _state()
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
    return _json({"@odata.context": f"{_base()}/v1.0/$metadata#directoryObjects/$entity",
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


def seed_content(state: EmulatorState, ts: TenantStore, user_id: str, rtype: ResourceType | None, count: int) -> None:
    """Create *count* items of *rtype* for one user (admin seeding; no notifications)."""
    raise GraphHTTPError(501, "notImplemented", "Seeding this content type is not implemented yet.")
