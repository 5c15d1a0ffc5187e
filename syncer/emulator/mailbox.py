"""Outlook and To Do resources under /v1.0/users/{id|upn}/...: mail folders, messages, events
(with calendarView and its delta), contact folders, contacts, To Do lists and tasks.

One dispatcher parses the path below the user (segment names are case-insensitive, as in Graph) into a
:class:`Target` -- which resource type, which collection, which item -- and generic handlers do the
rest from the :mod:`resources` entries. Each mailbox is provisioned on first use with its well-known
folders (Inbox, Drafts, ...), the default Contacts folder and the default To Do list, so seeded users
have mailboxes without seeding cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, request

from syncer.emulator import delta as delta_mod
from syncer.emulator.api import (
    base_url,
    check_types,
    json_body,
    json_response,
    no_content,
    reject_query,
    validate_props,
)
from syncer.emulator.clock import parse_iso
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.identity import require_app
from syncer.emulator.resources import (
    CONTACT,
    CONTACT_FOLDER,
    EVENT,
    MAIL_FOLDER,
    MESSAGE,
    TODO_LIST,
    TODO_TASK,
    WELL_KNOWN_MAIL_FOLDERS,
    ResourceType,
)
from syncer.emulator.store import Collection, TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

bp = Blueprint("mailbox", __name__, url_prefix="/v1.0")

_FOLDER_NAMES = {
    "inbox": "Inbox", "drafts": "Drafts", "sentitems": "Sent Items", "deleteditems": "Deleted Items",
    "archive": "Archive", "junkemail": "Junk Email", "outbox": "Outbox",
}


def _state() -> EmulatorState:
    return current_app.config["EMULATOR_STATE"]


# --- provisioning -------------------------------------------------------------------------------

def ensure_mailbox(state: EmulatorState, ts: TenantStore, uid: str) -> None:
    """Create the user's well-known folders, default contact folder and default To Do list once."""
    if uid in ts.provisioned:
        return
    with state.lock:
        if uid in ts.provisioned:
            return
        ts.provisioned.add(uid)
        store = state.store
        now = store.now_iso()
        folders = ts.collection(MAIL_FOLDER, {"user": uid})
        root_id = store.new_outlook_id()
        for name in WELL_KNOWN_MAIL_FOLDERS:
            fid = store.new_outlook_id()
            ts.well_known[(uid, name)] = fid
            store.put(folders, fid, {
                "id": fid, "displayName": _FOLDER_NAMES[name], "parentFolderId": root_id, "childFolderCount": 0,
                "unreadItemCount": 0, "totalItemCount": 0, "isHidden": False,
            }, change_type="created", notify=False)
        contact_folders = ts.collection(CONTACT_FOLDER, {"user": uid})
        cfid = store.new_outlook_id()
        ts.well_known[(uid, "contacts")] = cfid
        store.put(contact_folders, cfid, {"id": cfid, "displayName": "Contacts", "parentFolderId": root_id},
                  change_type="created", notify=False)
        lists = ts.collection(TODO_LIST, {"user": uid})
        lid = store.new_outlook_id()
        ts.well_known[(uid, "defaultlist")] = lid
        store.put(lists, lid, _stamp(state, TODO_LIST, {
            "id": lid, "displayName": "Tasks", "isOwner": True, "isShared": False,
            "wellknownListName": "defaultList"}, created=now), change_type="created", notify=False)
        ts.collection(EVENT, {"user": uid})


def _stamp(state: EmulatorState, rtype: ResourceType, item: dict[str, Any], *, created: str | None = None) -> dict[str, Any]:
    """Refresh change stamps (lastModifiedDateTime, changeKey, @odata.etag) on a write."""
    now = state.store.now_iso()
    if created is not None and "createdDateTime" in rtype.properties:
        item["createdDateTime"] = created
    if "lastModifiedDateTime" in rtype.properties:
        item["lastModifiedDateTime"] = now
    if rtype.etag:
        key = state.store.new_change_key()
        if "changeKey" in rtype.properties:
            item["changeKey"] = key
        item["@odata.etag"] = f'W/"{key}"'
    return item


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
            return tail(MAIL_FOLDER, col(MAIL_FOLDER), segs[1:], f"{base}/mailFolders")
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


# --- defaults for new items --------------------------------------------------------------------

def _new_item(state: EmulatorState, rtype: ResourceType, col: Collection, props: dict[str, Any],
              *, user: dict[str, Any], draft: bool = True) -> dict[str, Any]:
    store = state.store
    now = store.now_iso()
    item: dict[str, Any] = dict.fromkeys(rtype.properties)
    email = {"emailAddress": {"name": user.get("displayName"), "address": user.get("mail") or user.get("userPrincipalName")}}
    if rtype is MESSAGE:
        item.update({"bccRecipients": [], "ccRecipients": [], "toRecipients": [], "replyTo": [], "categories": [],
                     "body": {"contentType": "text", "content": ""}, "importance": "normal",
                     "inferenceClassification": "focused", "isDeliveryReceiptRequested": False, "isDraft": draft,
                     "isRead": draft, "isReadReceiptRequested": False, "hasAttachments": False,
                     "receivedDateTime": now, "sentDateTime": None if draft else now, "flag": {"flagStatus": "notFlagged"},
                     "from": None if draft else email, "sender": None if draft else email,
                     "conversationId": store.new_outlook_id()[:40], "internetMessageId": f"<{store.new_guid()}@emulator>",
                     "parentFolderId": col.parents.get("mailFolder"), "subject": ""})
    elif rtype is EVENT:
        item.update({"attendees": [], "categories": [], "body": {"contentType": "html", "content": ""},
                     "importance": "normal", "isAllDay": False, "isCancelled": False, "isOnlineMeeting": False,
                     "isOrganizer": True, "isReminderOn": True, "reminderMinutesBeforeStart": 15,
                     "responseRequested": True, "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
                     "sensitivity": "normal", "showAs": "busy", "type": "singleInstance", "organizer": email,
                     "iCalUId": store.new_outlook_id()[:60], "location": {"displayName": ""}, "locations": [],
                     "originalStartTimeZone": "UTC", "originalEndTimeZone": "UTC", "subject": ""})
    elif rtype is CONTACT:
        item.update({"businessPhones": [], "homePhones": [], "emailAddresses": [], "categories": [], "children": [],
                     "imAddresses": [], "parentFolderId": col.parents.get("contactFolder")})
    elif rtype is MAIL_FOLDER:
        item.update({"childFolderCount": 0, "unreadItemCount": 0, "totalItemCount": 0, "isHidden": False,
                     "parentFolderId": None})
    elif rtype is CONTACT_FOLDER:
        item.update({"parentFolderId": None})
    elif rtype is TODO_LIST:
        item.update({"isOwner": True, "isShared": False, "wellknownListName": "none"})
    elif rtype is TODO_TASK:
        item.update({"status": "notStarted", "importance": "normal", "isReminderOn": False, "categories": [],
                     "body": {"content": "", "contentType": "text"}, "hasAttachments": False,
                     "bodyLastModifiedDateTime": now})
    item.update(props)
    if rtype is MESSAGE:
        body = item.get("body") or {}
        item["bodyPreview"] = str(body.get("content", ""))[:255] if isinstance(body, dict) else ""
    if rtype is CONTACT and not item.get("displayName"):
        item["displayName"] = " ".join(str(p) for p in (item.get("givenName"), item.get("surname")) if p)
    item["id"] = store.new_outlook_id()
    if "webLink" in rtype.properties:
        item["webLink"] = f"https://outlook.office365.com/owa/?ItemID={item['id']}&exvsurl=1&viewmodel=ReadMessageItem"
    return _stamp(state, rtype, item, created=now)


def _check_event_times(props: dict[str, Any]) -> None:
    for name in ("start", "end"):
        value = props.get(name)
        if value is None:
            continue
        if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
            raise GraphHTTPError(400, "ErrorInvalidRequest", f"Property '{name}' must be a dateTimeTimeZone object.")
        try:
            parse_iso(value["dateTime"])
        except ValueError:
            raise GraphHTTPError(400, "ErrorInvalidRequest",
                                 f"Cannot convert the literal '{value['dateTime']}' to the expected type 'Edm.DateTimeOffset'.") from None


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
        from syncer.emulator.drive import user_drive

        return user_drive(ukey, segs[1:])
    state = _state()
    # Permission before existence, as Graph does: resolve the type from the path shape first.
    rtype = _type_of(segs)
    write = request.method != "GET"
    ctx = require_app(*(rtype.write_roles if write else rtype.read_roles), family=rtype.family)
    ts = state.store.tenant(ctx.tenant_id)
    user = ts.find_user(ukey)
    if user is None:
        raise _invalid_user(ukey)
    uid = str(user["id"])
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
                cursor = delta_mod.decode_token(state, token)
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
            _check_event_times(props)
        updated = _stamp(state, rtype, {**item, **props})
        state.store.put(col, updated["id"], updated, change_type="updated")
        return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#{context}/$entity",
                      **delta_mod.project(rtype, updated, None)})
    if method == "DELETE":
        state.store.remove(col, item["id"], reason="deleted")
        return no_content()
    raise _method()


def _move(state: EmulatorState, ts: TenantStore, user: dict[str, Any], col: Collection, item: dict[str, Any]) -> Response:
    """POST .../messages/{id}/move {"destinationId"}: Exchange gives the moved copy a new id (so a
    notification's id can go stale, notes §3.1); the source folder's delta reports the old id removed."""
    body = json_body()
    if set(body) != {"destinationId"} or not isinstance(body["destinationId"], str):
        raise GraphHTTPError(400, "ErrorInvalidRequest", "The request body must contain only 'destinationId'.")
    uid = str(user["id"])
    dest_id = _folder(state, ts, uid, MAIL_FOLDER, body["destinationId"])
    dest = ts.collection(MESSAGE, {"user": uid, "mailFolder": dest_id})
    moved = _stamp(state, MESSAGE, {**item, "id": state.store.new_outlook_id(), "parentFolderId": dest_id})
    state.store.remove(col, item["id"], reason="deleted")
    state.store.put(dest, moved["id"], moved, change_type="created")
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#users('{uid}')/messages/$entity",
                  **delta_mod.project(MESSAGE, moved, None)}, 201)


def _method() -> GraphHTTPError:
    return GraphHTTPError(405, "ErrorInvalidRequest", f"The OData request is not supported: method {request.method}.")


def _list_collection(state: EmulatorState, ts: TenantStore, user: dict[str, Any], t: Target, context: str) -> Response:
    from syncer.emulator.api import list_response

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
        _check_event_times(props)
    item = _new_item(state, rtype, col, props, user=user)
    state.store.put(col, item["id"], item, change_type="created")
    return json_response({"@odata.context": f"{base_url()}/v1.0/$metadata#{context}/$entity",
                  **delta_mod.project(rtype, item, None)}, 201)


# --- seeding ------------------------------------------------------------------------------------

def seed_mailbox_content(state: EmulatorState, ts: TenantStore, uid: str, rtype: ResourceType, count: int) -> None:
    """Create *count* received messages / events / contacts / tasks for one user (no notifications)."""
    ensure_mailbox(state, ts, uid)
    user = ts.users().get(uid) or {"id": uid}
    if rtype is MESSAGE:
        col = ts.collection(MESSAGE, {"user": uid, "mailFolder": ts.well_known[(uid, "inbox")]})
    elif rtype is CONTACT:
        col = ts.collection(CONTACT, {"user": uid, "contactFolder": ts.well_known[(uid, "contacts")]})
    elif rtype is TODO_TASK:
        col = ts.collection(TODO_TASK, {"user": uid, "todoTaskList": ts.well_known[(uid, "defaultlist")]})
    else:
        col = ts.collection(EVENT, {"user": uid})
    base = state.clock.now().replace(minute=0, second=0, microsecond=0)
    from datetime import timedelta

    for i in range(count):
        if rtype is MESSAGE:
            props: dict[str, Any] = {"subject": f"Message {i}", "body": {"contentType": "text", "content": f"Hello {i}"},
                                     "toRecipients": [{"emailAddress": {"address": user.get("mail")}}]}
            item = _new_item(state, rtype, col, props, user=user, draft=False)
            item["isRead"] = False
        elif rtype is EVENT:
            start = base + timedelta(days=i % 30, hours=9)
            props = {"subject": f"Meeting {i}",
                     "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
                     "end": {"dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"}}
            item = _new_item(state, rtype, col, props, user=user)
        elif rtype is CONTACT:
            item = _new_item(state, rtype, col, {"givenName": f"Contact{i}", "surname": "Example",
                                                 "emailAddresses": [{"address": f"contact{i}@example.com"}]}, user=user)
        else:
            item = _new_item(state, rtype, col, {"title": f"Task {i}"}, user=user)
        state.store.put(col, item["id"], item, change_type="created", notify=False)
