"""What a mailbox holds before anyone writes, and what a new item holds: provisioning, defaults, seeding.

Each mailbox is provisioned on first use with its well-known folders (Inbox, Drafts, ...), the default Contacts folder
and the default To Do list, so seeded users have mailboxes without seeding cost. A new item gets Outlook's defaults
and change stamps (``lastModifiedDateTime``, ``changeKey``, ``@odata.etag``) before the request's properties apply.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from syncer.emulator.changelog import Collection
from syncer.emulator.clock import parse_iso
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.users import users_of
from syncer.emulator.families.mailbox.kinds import (
    CONTACT,
    CONTACT_FOLDER,
    EVENT,
    MAIL_FOLDER,
    MESSAGE,
    WELL_KNOWN_MAIL_FOLDERS,
)
from syncer.emulator.families.mailbox.todo import TODO_LIST, TODO_TASK, new_list, new_task
from syncer.emulator.resources import ResourceType
from syncer.emulator.store import TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

_FOLDER_NAMES = {
    "inbox": "Inbox", "drafts": "Drafts", "sentitems": "Sent Items", "deleteditems": "Deleted Items",
    "archive": "Archive", "junkemail": "Junk Email", "outbox": "Outbox",
}


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
        store.put(lists, lid, stamp(state, TODO_LIST, {
            "id": lid, "displayName": "Tasks", "isOwner": True, "isShared": False,
            "wellknownListName": "defaultList"}, created=now), change_type="created", notify=False)
        ts.collection(EVENT, {"user": uid})


def stamp(state: EmulatorState, rtype: ResourceType, item: dict[str, Any], *, created: str | None = None) -> dict[str, Any]:
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


def new_item(state: EmulatorState, rtype: ResourceType, col: Collection, props: dict[str, Any],
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
        new_list(item)
    elif rtype is TODO_TASK:
        new_task(item, now=now)
    item.update(props)
    if rtype is MESSAGE:
        body = item.get("body") or {}
        item["bodyPreview"] = str(body.get("content", ""))[:255] if isinstance(body, dict) else ""
    if rtype is CONTACT and not item.get("displayName"):
        item["displayName"] = " ".join(str(p) for p in (item.get("givenName"), item.get("surname")) if p)
    item["id"] = store.new_outlook_id()
    if "webLink" in rtype.properties:
        item["webLink"] = f"https://outlook.office365.com/owa/?ItemID={item['id']}&exvsurl=1&viewmodel=ReadMessageItem"
    return stamp(state, rtype, item, created=now)


def check_event_times(props: dict[str, Any]) -> None:
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


# --- seeding ------------------------------------------------------------------------------------

def _seed(state: EmulatorState, ts: TenantStore, uid: str, rtype: ResourceType, count: int,
          props: Callable[[int], dict[str, Any]], *, folder: tuple[str, str] | None = None, draft: bool = True,
          unread: bool = False) -> None:
    """Create *count* items of *rtype* for one user (no notifications); *folder* = (parent name, well-known name)."""
    ensure_mailbox(state, ts, uid)
    user = users_of(ts).get(uid) or {"id": uid}
    parents = {"user": uid}
    if folder is not None:
        parents[folder[0]] = ts.well_known[(uid, folder[1])]
    col = ts.collection(rtype, parents)
    for i in range(count):
        item = new_item(state, rtype, col, props(i), user=user, draft=draft)
        if unread:
            item["isRead"] = False
        state.store.put(col, item["id"], item, change_type="created", notify=False)


def seed_messages(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* received, unread messages in the user's Inbox."""
    address = (users_of(ts).get(uid) or {}).get("mail")
    _seed(state, ts, uid, MESSAGE, count, lambda i: {
        "subject": f"Message {i}", "body": {"contentType": "text", "content": f"Hello {i}"},
        "toRecipients": [{"emailAddress": {"address": address}}]}, folder=("mailFolder", "inbox"), draft=False,
        unread=True)


def seed_events(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* one-hour meetings at 09:00 over the next 30 days."""
    base = state.clock.now().replace(minute=0, second=0, microsecond=0)

    def props(i: int) -> dict[str, Any]:
        start = base + timedelta(days=i % 30, hours=9)
        return {"subject": f"Meeting {i}",
                "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"},
                "end": {"dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"}}

    _seed(state, ts, uid, EVENT, count, props)


def seed_contacts(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* contacts in the default Contacts folder."""
    _seed(state, ts, uid, CONTACT, count, lambda i: {
        "givenName": f"Contact{i}", "surname": "Example", "emailAddresses": [{"address": f"contact{i}@example.com"}]},
        folder=("contactFolder", "contacts"))


def seed_tasks(state: EmulatorState, ts: TenantStore, uid: str, count: int) -> None:
    """*count* tasks in the default To Do list."""
    _seed(state, ts, uid, TODO_TASK, count, lambda i: {"title": f"Task {i}"}, folder=("todoTaskList", "defaultlist"))
