"""Outlook and To Do paths under /v1.0/users/{id|upn}/...: mail folders, messages, events
(with calendarView and its delta), contact folders, contacts, To Do lists and tasks.

One dispatcher parses the path below the user (segment names are case-insensitive, as in Graph) into a
:class:`Target` -- which resource type, which collection, which item -- and generic handlers do the
rest from the :class:`~syncer.emulator.resources.ResourceType` entries. The mailbox is provisioned on first use
(:func:`~syncer.emulator.families.mailbox.items.ensure_mailbox`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import (
    base_url,
    check_types,
    emulator_state,
    json_body,
    json_response,
    list_response,
    no_content,
    reject_query,
    validate_props,
)
from syncer.emulator.changelog import Collection
from syncer.emulator.clock import parse_iso
from syncer.emulator.delta_token import decode_token
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.users import find_user
from syncer.emulator.families.drive import user_drive
from syncer.emulator.families.mailbox.items import check_event_times, ensure_mailbox, new_item, stamp
from syncer.emulator.families.mailbox.kinds import CONTACT, CONTACT_FOLDER, EVENT, MAIL_FOLDER, MESSAGE
from syncer.emulator.families.mailbox.todo import TODO_LIST, TODO_TASK
from syncer.emulator.identity import check_owner, require_access
from syncer.emulator.resources import ResourceType
from syncer.emulator.store import TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("mailbox", __name__, url_prefix="/v1.0")



# --- path parsing -------------------------------------------------------------------------------

@dataclass
class Target:
    """What a path under /users/{u}/ addresses."""

    rtype: ResourceType
    col: Collection | None  # None for cross-folder views (users/{u}/messages)
    item_id: str | None = None
    delta: bool = False
    link_path: str = ""
    calendar_view: bool = False
    #: an action on the item, e.g. "move"
    action: str | None = None


def _invalid_user(key: str) -> GraphHTTPError:
    return GraphHTTPError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")


def _folder(state: EmulatorState, ts: TenantStore, uid: str, rtype: ResourceType, key: str) -> str:
    """Resolve a folder/list id or well-known name under the user."""
    lowered = key.lower()
    well = ts.well_known.get((uid, lowered))
    if well is not None:
        return well
    col = ts.collection(rtype, {"user": uid})
    if col.get(key) is None:
        raise GraphHTTPError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return key


def _resolve(state: EmulatorState, ts: TenantStore, uid: str, segs: list[str], ukey: str) -> Target:
    low = [s.lower() for s in segs]
    n = len(low)
    base = f"users/{ukey}"

    def col(rtype: ResourceType, **parents: str) -> Collection:
        return ts.collection(rtype, {"user": uid, **parents})

    def tail(rtype: ResourceType, c: Collection, rest: list[str], path: str) -> Target:
        if not rest:
            return Target(rtype, c, link_path=path)
        if len(rest) == 1 and rest[0].lower() == "delta":
            return Target(rtype, c, delta=True, link_path=f"{path}/delta")
        if len(rest) == 1:
            return Target(rtype, c, item_id=rest[0], link_path=path)
        raise GraphHTTPError(400, "BadRequest", f"Resource not found for the segment '{rest[1]}'.")

    head = low[0]
    if head == "mailfolders":
        if n <= 2:
            rest = segs[1:]
            if n == 2 and low[1] != "delta":
                # A well-known name stands for its folder here too (https://learn.microsoft.com/en-us/graph/api/mailfolder-get).
                rest = [_folder(state, ts, uid, MAIL_FOLDER, segs[1])]
            return tail(MAIL_FOLDER, col(MAIL_FOLDER), rest, f"{base}/mailFolders")
        fid = _folder(state, ts, uid, MAIL_FOLDER, segs[1])
        if low[2] == "messages":
            if n == 5 and low[4] == "move":
                return Target(MESSAGE, col(MESSAGE, mailFolder=fid), item_id=segs[3], action="move")
            return tail(MESSAGE, col(MESSAGE, mailFolder=fid), segs[3:], f"{base}/mailFolders/{segs[1]}/messages")
    elif head == "messages":
        if n == 1:
            return Target(MESSAGE, None, link_path=f"{base}/messages")
        if n == 2 and low[1] != "delta":
            return Target(MESSAGE, _indexed(ts, uid, MESSAGE, segs[1]), item_id=segs[1])
        if n == 3 and low[2] == "move":
            return Target(MESSAGE, _indexed(ts, uid, MESSAGE, segs[1]), item_id=segs[1], action="move")
    elif head in ("events", "calendar") and (head == "events" or (n >= 2 and low[1] == "events")):
        rest = segs[1:] if head == "events" else segs[2:]
        if rest and rest[0].lower() == "delta":
            raise GraphHTTPError(400, "BadRequest", "Use calendarView/delta with startDateTime and endDateTime.")
        return tail(EVENT, col(EVENT), rest, f"{base}/events")
    elif head == "calendarview":
        if n == 1:
            return Target(EVENT, col(EVENT), calendar_view=True, link_path=f"{base}/calendarView")
        if n == 2 and low[1] == "delta":
            return Target(EVENT, col(EVENT), delta=True, calendar_view=True, link_path=f"{base}/calendarView/delta")
    elif head == "contactfolders":
        if n <= 2:
            return tail(CONTACT_FOLDER, col(CONTACT_FOLDER), segs[1:], f"{base}/contactFolders")
        fid = _folder(state, ts, uid, CONTACT_FOLDER, segs[1])
        if low[2] == "contacts":
            return tail(CONTACT, col(CONTACT, contactFolder=fid), segs[3:], f"{base}/contactFolders/{segs[1]}/contacts")
    elif head == "contacts":
        fid = ts.well_known[(uid, "contacts")]
        if n == 2 and low[1] != "delta":
            return Target(CONTACT, _indexed(ts, uid, CONTACT, segs[1]), item_id=segs[1])
        return tail(CONTACT, col(CONTACT, contactFolder=fid), segs[1:], f"{base}/contacts")
    elif head == "todo" and n >= 2 and low[1] == "lists":
        if n <= 3:
            return tail(TODO_LIST, col(TODO_LIST), segs[2:], f"{base}/todo/lists")
        lid = _folder(state, ts, uid, TODO_LIST, segs[2])
        if low[3] == "tasks":
            return tail(TODO_TASK, col(TODO_TASK, todoTaskList=lid), segs[4:], f"{base}/todo/lists/{segs[2]}/tasks")
    raise GraphHTTPError(400, "BadRequest", f"Resource not found for the segment '{segs[-1]}'.")


def _indexed(ts: TenantStore, uid: str, rtype: ResourceType, item_id: str) -> Collection:
    """The collection holding *item_id* (messages/contacts addressed without their folder)."""
    key = ts.index.get(item_id)
    col = ts.collections.get(key) if key else None
    if col is None or col.rtype is not rtype or col.parents.get("user") != uid or col.get(item_id) is None:
        raise GraphHTTPError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return col


def _event_bounds(item: dict[str, Any]) -> tuple[datetime, datetime] | None:
    try:
        # The emulator stores times as given and reads them as UTC (no time-zone database) [guess].
        return parse_iso(item["start"]["dateTime"]), parse_iso(item["end"]["dateTime"])
    except (KeyError, TypeError, ValueError):
        return None


def _window() -> tuple[datetime, datetime]:
    start, end = request.args.get("startDateTime"), request.args.get("endDateTime")
    if not start or not end:
        raise GraphHTTPError(400, "ErrorInvalidParameter",
                             "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.")
    try:
        return parse_iso(start), parse_iso(end)
    except ValueError:
        raise GraphHTTPError(400, "ErrorInvalidParameter", "The value of StartDateTime or EndDateTime is not a valid date.") from None


def _in_window(start: datetime, end: datetime) -> Callable[[dict[str, Any]], bool]:
    def check(item: dict[str, Any]) -> bool:
        bounds = _event_bounds(item)
        return bounds is not None and bounds[0] < end and bounds[1] > start
    return check


# --- the dispatcher -----------------------------------------------------------------------------

@bp.route("/users/<ukey>/<path:rest>", methods=["GET", "POST", "PATCH", "DELETE"])
def mailbox(ukey: str, rest: str) -> Response:
    """Every Outlook / To Do path below a user (the drive is served by :mod:`drive`)."""
    segs = [s for s in rest.split("/") if s]
    if segs and segs[0].lower() == "drive":
        return user_drive(ukey, segs[1:])
    state = emulator_state()
    # Permission before existence, as Graph does: resolve the type from the path shape first.
    rtype = _type_of(segs)
    write = request.method != "GET"
    ctx = require_access(rtype, write=write)
    ts = state.store.tenant(ctx.tenant_id)
    user = find_user(ts, ukey)
    if user is None:
        raise _invalid_user(ukey)
    uid = str(user["id"])
    check_owner(ctx, uid, rtype.family)
    ensure_mailbox(state, ts, uid)
    target = _resolve(state, ts, uid, segs, ukey)
    return _handle(state, ts, user, target)


def _type_of(segs: list[str]) -> ResourceType:
    low = [s.lower() for s in segs]
    order = (("messages", MESSAGE), ("tasks", TODO_TASK), ("contacts", CONTACT), ("events", EVENT),
             ("calendarview", EVENT), ("mailfolders", MAIL_FOLDER), ("contactfolders", CONTACT_FOLDER),
             ("lists", TODO_LIST))
    for name, rtype in order:
        if name in low:
            return rtype
    raise GraphHTTPError(400, "BadRequest", f"Resource not found for the segment '{segs[0] if segs else ''}'.")


def _handle(state: EmulatorState, ts: TenantStore, user: dict[str, Any], t: Target) -> Response:
    rtype, method = t.rtype, request.method
    context = f"users('{user['id']}')/{t.link_path.split('/', 2)[-1]}" if t.link_path else f"users('{user['id']}')/{rtype.name}s"
    if t.delta:
        if method != "GET":
            raise _method()
        assert t.col is not None
        allowed = {"$select", "$deltatoken", "$skiptoken", "$top", "$expand", "$filter"}
        if t.calendar_view:
            allowed = {"$deltatoken", "$skiptoken"}
            for name in request.args:
                if name.startswith("$") and name not in allowed:
                    raise GraphHTTPError(400, "ErrorInvalidUrlQuery",
                                         f"The following parameters are not supported with change tracking over the 'CalendarView' resource: '{name}'.")
        else:
            reject_query(rtype, allowed)
        token = request.args.get("$skiptoken") or request.args.get("$deltatoken") or None  # "" = restart
        window = None
        in_window = None
        if t.calendar_view:
            if token is None:
                start, end = _window()
                window = [start.isoformat(), end.isoformat()]
            else:
                cursor = decode_token(state, token)
                if cursor is not None and cursor.window:
                    start, end = parse_iso(cursor.window[0]), parse_iso(cursor.window[1])
                else:
                    start, end = _window()
            in_window = _in_window(start, end)
        return delta_mod.run_delta(state, t.col, link_path=t.link_path, token=token, token_kind="odata",
                                   window=window, in_window=in_window)
    if t.calendar_view:
        if method != "GET":
            raise _method()
        start, end = _window()
        assert t.col is not None
        check = _in_window(start, end)
        select = delta_mod.parse_select(rtype, request.args.get("$select"))
        with state.lock:
            values = [delta_mod.project(rtype, item, select) for _, item in t.col.iter_live() if check(item)]
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#{context}", "value": values})
    if t.item_id is None:
        if method == "GET":
            return _list_collection(state, ts, user, t, context)
        if method == "POST":
            return _create(state, ts, user, t, context)
        raise _method()
    assert t.col is not None
    col = t.col
    with state.lock:
        item = col.get(t.item_id)
    if item is None:
        raise GraphHTTPError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    if t.action == "move":
        if method != "POST":
            raise _method()
        return _move(state, ts, user, col, item)
    if method == "GET":
        reject_query(rtype, {"$select", "$expand"})
        select = delta_mod.parse_select(rtype, request.args.get("$select"))
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#{context}/$entity",
                      **delta_mod.project(rtype, item, select)})
    if method == "PATCH":
        props = validate_props(rtype, json_body(), creating=False)
        check_types(rtype, props)
        if rtype is EVENT:
            check_event_times(props)
        updated = stamp(state, rtype, {**item, **props})
        state.store.put(col, updated["id"], updated, change_type="updated")
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#{context}/$entity",
                      **delta_mod.project(rtype, updated, None)})
    if method == "DELETE":
        state.store.remove(col, item["id"], reason="deleted")
        return no_content()
    raise _method()


def _move(state: EmulatorState, ts: TenantStore, user: dict[str, Any], col: Collection, item: dict[str, Any]) -> Response:
    """POST .../messages/{id}/move {"destinationId"}: Exchange gives the moved copy a new id (so a
    notification's id can go stale, https://learn.microsoft.com/graph/outlook-change-notifications-overview); the source folder's delta reports the old id removed."""
    body = json_body()
    if set(body) != {"destinationId"} or not isinstance(body["destinationId"], str):
        raise GraphHTTPError(400, "ErrorInvalidRequest", "The request body must contain only 'destinationId'.")
    uid = str(user["id"])
    dest_id = _folder(state, ts, uid, MAIL_FOLDER, body["destinationId"])
    dest = ts.collection(MESSAGE, {"user": uid, "mailFolder": dest_id})
    moved = stamp(state, MESSAGE, {**item, "id": state.store.new_outlook_id(), "parentFolderId": dest_id})
    state.store.remove(col, item["id"], reason="deleted")
    state.store.put(dest, moved["id"], moved, change_type="created")
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#users('{uid}')/messages/$entity",
                  **delta_mod.project(MESSAGE, moved, None)}, 201)


def _method() -> GraphHTTPError:
    return GraphHTTPError(405, "ErrorInvalidRequest", f"The OData request is not supported: method {request.method}.")


def _list_collection(state: EmulatorState, ts: TenantStore, user: dict[str, Any], t: Target, context: str) -> Response:
    if t.col is not None:
        return list_response(state, t.col, context)
    # users/{u}/messages: every folder's messages (newest writes last; small mailboxes only)
    reject_query(t.rtype, {"$select", "$top"})
    select = delta_mod.parse_select(t.rtype, request.args.get("$select"))
    prefix = f"users/{str(user['id']).lower()}/mailfolders/"
    values: list[dict[str, Any]] = []
    with state.lock:
        for key, col in ts.collections.items():
            if key.startswith(prefix) and col.rtype is MESSAGE:
                values.extend(delta_mod.project(MESSAGE, item, select) for _, item in col.iter_live())
    top = request.args.get("$top")
    if top is not None and top.isdigit():
        values = values[: int(top)]
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#{context}", "value": values})


def _create(state: EmulatorState, ts: TenantStore, user: dict[str, Any], t: Target, context: str) -> Response:
    rtype = t.rtype
    col = t.col
    if col is None:  # POST users/{u}/messages creates a draft in Drafts
        col = ts.collection(MESSAGE, {"user": str(user["id"]), "mailFolder": ts.well_known[(str(user["id"]), "drafts")]})
    props = validate_props(rtype, json_body(), creating=True)
    check_types(rtype, props)
    if rtype is EVENT:
        check_event_times(props)
    item = new_item(state, rtype, col, props, user=user)
    state.store.put(col, item["id"], item, change_type="created")
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#{context}/$entity",
                  **delta_mod.project(rtype, item, None)}, 201)
