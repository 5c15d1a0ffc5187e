"""Every Teams write, in one place: the Graph views, the admin API and the seeder all call these.

A user's post through the admin API and an imported post through Graph run the same function, so they have the same
effects: the change log (delta), the change notifications and the rich payload. ``notify=False`` is for seeding only.
Shapes follow https://learn.microsoft.com/graph/api/resources/team, .../channel, .../chat, .../chatmessage and
.../aadusercoversationmember.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from syncer.emulator.changelog import Collection
from syncer.emulator.errors import GraphHTTPError
from syncer.emulator.families.directory.groups import GROUP, add_members, groups_of
from syncer.emulator.families.directory.users import find_user
from syncer.emulator.families.teams.kinds import (
    CHANNEL,
    CHANNEL_MEMBER,
    CHANNEL_MESSAGE,
    CHANNEL_REPLY,
    CHAT,
    CHAT_MEMBER,
    CHAT_MESSAGE,
    TEAM,
    TEAM_MEMBER,
    USER_CHAT_MESSAGES,
    chat_member_ids,
    membership_id,
    one_on_one_chat_id,
    thread_id,
)
from syncer.emulator.resources import ResourceType
from syncer.emulator.store import ChangeEvent, TenantStore

if TYPE_CHECKING:
    from syncer.emulator.state import EmulatorState

MEMBER_TYPE = "#microsoft.graph.aadUserConversationMember"
#: Hidden copy of a soft-deleted message's body, so undoSoftDelete can bring it back (never returned).
SAVED_BODY = "@emulator.body"


def not_found(message: str) -> GraphHTTPError:
    """Teams' 404 (code ``NotFound``, as Teams errors read)."""
    return GraphHTTPError(404, "NotFound", message)


def bad(message: str) -> GraphHTTPError:
    """Teams' 400."""
    return GraphHTTPError(400, "BadRequest", message)


def ms_iso(ms: int) -> str:
    """Graph's timestamp with milliseconds (``2026-03-29T03:49:13.153Z``)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def now_ms(state: EmulatorState) -> int:
    """The emulator clock in epoch milliseconds."""
    return int(state.clock.time() * 1000)


def new_hex(state: EmulatorState) -> str:
    """32 lower-case hex digits from the seeded RNG."""
    with state.lock:
        return f"{state.store.rng.getrandbits(128):032x}"


def user_or_404(ts: TenantStore, key: str) -> dict[str, Any]:
    """A live user by id or UPN; Teams answers 404 for unknown (or disabled) users [DOC: team-post-members]."""
    user = find_user(ts, key)
    if user is None:
        raise not_found(f"User '{key}' not found or is disabled.")
    return user


def user_identity(ts: TenantStore, user: dict[str, Any]) -> dict[str, Any]:
    """The ``from`` of a message a user sent (https://learn.microsoft.com/graph/api/resources/chatmessagefromidentityset)."""
    return {"application": None, "device": None, "user": {
        "@odata.type": "#microsoft.graph.teamworkUserIdentity", "id": user["id"],
        "displayName": user.get("displayName"), "userIdentityType": "aadUser", "tenantId": ts.tenant_id}}


# --- lookups ---------------------------------------------------------------------------------------------------


def team_col(ts: TenantStore) -> Collection:
    return ts.collection(TEAM)


def team_or_404(ts: TenantStore, team_id: str) -> dict[str, Any]:
    team = team_col(ts).get(team_id)
    if team is None:
        raise not_found(f"No team found with Group Id {team_id}")
    return team


def channel_col(ts: TenantStore, team_id: str) -> Collection:
    team = team_or_404(ts, team_id)
    return ts.collection(CHANNEL, {"team": str(team["id"])})


def channel_or_404(ts: TenantStore, team_id: str, channel_id: str) -> dict[str, Any]:
    channel = channel_col(ts, team_id).get(channel_id)
    if channel is None:
        raise not_found(f"Channel '{channel_id}' not found in team '{team_id}'.")
    return channel


def roots_col(ts: TenantStore, team_id: str, channel_id: str) -> Collection:
    channel = channel_or_404(ts, team_id, channel_id)
    return ts.collection(CHANNEL_MESSAGE, {"team": team_id.lower(), "channel": str(channel["id"])})


def replies_col(ts: TenantStore, team_id: str, channel_id: str, root_id: str) -> Collection:
    roots = roots_col(ts, team_id, channel_id)
    if roots.get(root_id) is None:
        raise not_found(f"Message '{root_id}' not found.")
    return ts.collection(CHANNEL_REPLY, {**roots.parents, "message": root_id})


def chat_col(ts: TenantStore) -> Collection:
    return ts.collection(CHAT)


def chat_or_404(ts: TenantStore, chat_id: str) -> dict[str, Any]:
    chat = chat_col(ts).get(chat_id)
    if chat is None:
        raise not_found(f"Chat '{chat_id}' not found.")
    return chat


def chat_messages_col(ts: TenantStore, chat_id: str) -> Collection:
    chat = chat_or_404(ts, chat_id)
    return ts.collection(CHAT_MESSAGE, {"chat": str(chat["id"])})


def member_col(ts: TenantStore, *, team: str | None = None, channel: str | None = None,
               chat: str | None = None) -> Collection:
    """The membership collection of a team, a channel or a chat."""
    if chat is not None:
        return ts.collection(CHAT_MEMBER, {"chat": str(chat_or_404(ts, chat)["id"])})
    assert team is not None
    if channel is not None:
        found = channel_or_404(ts, team, channel)
        return ts.collection(CHANNEL_MEMBER, {"team": team.lower(), "channel": str(found["id"])})
    return ts.collection(TEAM_MEMBER, {"team": str(team_or_404(ts, team)["id"])})


# --- members ---------------------------------------------------------------------------------------------------


def member_item(ts: TenantStore, container: str, user: dict[str, Any], roles: list[str]) -> dict[str, Any]:
    """An aadUserConversationMember."""
    return {"@odata.type": MEMBER_TYPE, "id": membership_id(container, str(user["id"]), ts.tenant_id),
            "roles": list(roles), "displayName": user.get("displayName"), "userId": user["id"],
            "email": user.get("mail") or user.get("userPrincipalName"), "tenantId": ts.tenant_id,
            "visibleHistoryStartDateTime": "0001-01-01T00:00:00Z"}


def add_member(state: EmulatorState, ts: TenantStore, col: Collection, user: dict[str, Any], roles: list[str], *,
               notify: bool = True) -> dict[str, Any]:
    """Add (or re-role) one member; a team member also joins the team's group, as in Graph."""
    container = col.parents.get("chat") or col.parents.get("channel") or col.parents["team"]
    item = member_item(ts, container, user, roles)
    existing = col.get(item["id"])
    if existing is not None and existing.get("roles") == item["roles"]:
        return existing
    state.store.put(col, item["id"], item, change_type="updated" if existing else "created", notify=notify)
    if col.rtype is TEAM_MEMBER:
        gcol = groups_of(ts)
        with state.lock:
            if gcol.get(col.parents["team"]) is not None:
                add_members(state, gcol, col.parents["team"], [str(user["id"])])
                state.store.touch(gcol, col.parents["team"])
    if col.rtype is CHAT_MEMBER:
        _refresh_chat_members(state, ts, col.parents["chat"])
        if existing is None:
            _share_history(state, ts, col.parents["chat"], str(user["id"]))
    return item


def _share_history(state: EmulatorState, ts: TenantStore, chat_id: str, user_id: str) -> None:
    """A new chat member sees the history (``visibleHistoryStartDateTime`` 0001-01-01): the chat's messages join the
    member's ``/users/{id}/chats/getAllMessages`` (and its delta) [DOC: https://learn.microsoft.com/graph/api/chat-post-members]."""
    messages = ts.collections.get(f"chats/{chat_id}/messages".lower())
    if messages is None:
        return
    index = ts.collection(USER_CHAT_MESSAGES, {"user": user_id.lower()})
    with state.lock:
        for message_id, message in list(messages.iter_live()):
            state.store.put(index, f"{chat_id}|{message_id}", message, change_type="updated", notify=False)


def remove_member(state: EmulatorState, ts: TenantStore, col: Collection, membership: str) -> None:
    """Remove one membership (204 in Graph); 404 when it does not exist."""
    if col.get(membership) is None:
        raise not_found(f"Member '{membership}' not found.")
    state.store.remove(col, membership, reason="deleted")
    if col.rtype is CHAT_MEMBER:
        _refresh_chat_members(state, ts, col.parents["chat"])


def _refresh_chat_members(state: EmulatorState, ts: TenantStore, chat_id: str) -> None:
    """A chat's rich notification embeds its members: keep them on the item (no notification of its own)."""
    chats = chat_col(ts)
    chat = chats.get(chat_id)
    if chat is None:
        return
    members_col = ts.collections.get(f"chats/{chat_id}/members".lower())
    members = [m for _, m in members_col.iter_live()] if members_col is not None else []
    state.store.put(chats, str(chat["id"]), {**chat, "members": members}, change_type="updated", notify=False)


# --- teams and channels ----------------------------------------------------------------------------------------


def create_team(state: EmulatorState, ts: TenantStore, *, display_name: str, description: str | None = None,
                visibility: str = "private", group_id: str | None = None,
                members: list[tuple[dict[str, Any], list[str]]] | None = None, notify: bool = True,
                migration: bool = False, team_id: str | None = None) -> dict[str, Any]:
    """A team with its General channel and members; creates the Microsoft 365 group (id *team_id*, or a new one)
    unless *group_id* names an existing group."""
    created = state.store.now_iso()
    gcol = groups_of(ts)
    if group_id is None:
        group_id = team_id or state.store.new_guid()
        nick = "".join(ch for ch in display_name if ch.isalnum())[:56] or "team"
        group: dict[str, Any] = {p: None for p in GROUP.properties}
        group.update({"id": group_id, "displayName": display_name, "description": description,
                      "mailNickname": nick, "mail": f"{nick}@{state.config.tenant_domain}", "mailEnabled": True,
                      "securityEnabled": False, "groupTypes": ["Unified"], "visibility": visibility.title(),
                      "createdDateTime": created, "proxyAddresses": []})
        state.store.put(gcol, group_id, group, change_type="created", notify=notify)
    else:
        group = gcol.get(group_id) or {}
    general = thread_id(new_hex(state))
    team = {"id": group_id, "displayName": display_name, "description": description,
            "visibility": visibility.lower(), "createdDateTime": created,
            "webUrl": f"https://teams.microsoft.com/l/team/{general}/conversations?groupId={group_id}&tenantId={ts.tenant_id}",
            "isArchived": False, "internalId": general, "tenantId": ts.tenant_id, "classification": None,
            "specialization": "none",
            "memberSettings": {"allowCreateUpdateChannels": True, "allowCreatePrivateChannels": True},
            "messagingSettings": {"allowUserEditMessages": True, "allowUserDeleteMessages": True},
            "funSettings": {"allowGiphy": True}, "guestSettings": {"allowCreateUpdateChannels": False}}
    if migration:
        team["@emulator.migration"] = True
    state.store.put(team_col(ts), group_id, team, change_type="created", notify=notify)
    new_channel(state, ts, group_id, display_name="General", description=None, membership_type="standard",
                channel_id=general, notify=notify)
    col = ts.collection(TEAM_MEMBER, {"team": group_id})
    for user, roles in members or []:
        add_member(state, ts, col, user, roles, notify=notify)
    return team


def new_channel(state: EmulatorState, ts: TenantStore, team_id: str, *, display_name: str, description: str | None,
                membership_type: str, channel_id: str | None = None, notify: bool = True) -> dict[str, Any]:
    """One channel (https://learn.microsoft.com/graph/api/channel-post)."""
    team = team_or_404(ts, team_id)
    channel_id = channel_id or thread_id(new_hex(state))
    channel = {"id": channel_id, "displayName": display_name, "description": description,
               "membershipType": membership_type, "createdDateTime": state.store.now_iso(),
               "email": "", "isFavoriteByDefault": None, "tenantId": ts.tenant_id,
               "webUrl": f"https://teams.microsoft.com/l/channel/{channel_id}/{display_name}?groupId={team['id']}&tenantId={ts.tenant_id}"}
    state.store.put(ts.collection(CHANNEL, {"team": str(team["id"])}), channel_id, channel, change_type="created",
                    notify=notify)
    return channel


# --- chats -----------------------------------------------------------------------------------------------------


def create_chat(state: EmulatorState, ts: TenantStore, *, chat_type: str, topic: str | None,
                members: list[tuple[dict[str, Any], list[str]]], notify: bool = True) -> tuple[dict[str, Any], bool]:
    """A chat and its members; returns (chat, created). A second oneOnOne for the same pair returns the first
    (https://learn.microsoft.com/graph/api/chat-post)."""
    chats = chat_col(ts)
    if chat_type == "oneOnOne":
        chat_id = one_on_one_chat_id(str(members[0][0]["id"]), str(members[1][0]["id"]))
        existing = chats.get(chat_id)
        if existing is not None:
            return existing, False
    elif chat_type == "meeting":
        chat_id = thread_id(f"meeting_{new_hex(state)}", "thread.v2")
    else:
        chat_id = thread_id(new_hex(state), "thread.v2")
    now = state.store.now_iso()
    chat: dict[str, Any] = {"id": chat_id, "topic": topic if chat_type != "oneOnOne" else None, "chatType": chat_type,
            "createdDateTime": now, "lastUpdatedDateTime": now, "tenantId": ts.tenant_id,
            "webUrl": f"https://teams.microsoft.com/l/chat/{chat_id}/0?tenantId={ts.tenant_id}",
            "onlineMeetingInfo": None, "isHiddenForAllMembers": False, "members": []}
    col = ts.collection(CHAT_MEMBER, {"chat": chat_id})
    # members first, so the chat's notification reaches the members' /users/{id}/chats subscriptions
    for user, roles in members:
        state.store.put(col, membership_id(chat_id, str(user["id"]), ts.tenant_id),
                        member_item(ts, chat_id, user, roles), change_type="created", notify=notify)
    chat["members"] = [m for _, m in col.iter_live()]
    state.store.put(chats, chat_id, chat, change_type="created", notify=notify)
    return chat, True


# --- messages --------------------------------------------------------------------------------------------------


#: The tenant's last message id: ids are creation times in epoch ms, unique in the tenant (bumped on a clash).
_MESSAGE_CLOCK = ResourceType(
    name="teamsMessageClock", odata_type="", notification_type="", collection="teams-message-clock", family="teams",
    read_roles=frozenset(), write_roles=frozenset(), properties=("id", "ms"), index_by_id=False,
    notification_resource_data=False, event_collections=lambda ts, col, item_id: [],
)


def _fresh_id(state: EmulatorState, ts: TenantStore) -> int:
    """An epoch-ms id later than every message id the tenant has (caller holds the lock); O(1) however many share a
    millisecond (seeding, a frozen clock)."""
    clock = ts.collection(_MESSAGE_CLOCK)
    last = clock.get("last")
    ms = max(now_ms(state), int(last["ms"]) + 1 if last is not None else 0)
    state.store.put(clock, "last", {"id": "last", "ms": ms}, change_type="updated", notify=False)
    return ms


def post_message(state: EmulatorState, ts: TenantStore, col: Collection, body: dict[str, Any],
                 sender: dict[str, Any], *, notify: bool = True) -> dict[str, Any]:
    """A user's message in a channel (root), a reply (``col`` = the root's replies) or a chat."""
    content = body.get("body")
    if not isinstance(content, dict) or not isinstance(content.get("content"), str):
        raise bad("The 'body' property with 'content' is required.")
    return _write_new(state, ts, col, notify=notify, fields={
        "messageType": "message", "from": user_identity(ts, sender),
        "subject": body.get("subject") if col.rtype is not CHANNEL_REPLY else None, "summary": body.get("summary"),
        "importance": body.get("importance") or "normal",
        "body": {"contentType": content.get("contentType") or "text", "content": content["content"]},
        "attachments": list(body.get("attachments") or []), "mentions": list(body.get("mentions") or [])})


def system_event(state: EmulatorState, ts: TenantStore, col: Collection, detail: dict[str, Any]) -> dict[str, Any] | None:
    """A ``systemEventMessage`` (member added or removed, chat renamed, channel added), as Teams posts one
    (https://learn.microsoft.com/graph/system-messages); none when ``config.teams_system_messages`` is off."""
    if not state.config.teams_system_messages:
        return None
    return _write_new(state, ts, col, notify=True, fields={
        "messageType": "systemEventMessage", "from": None, "subject": None, "summary": None, "importance": "normal",
        "body": {"contentType": "html", "content": "<systemEventMessage/>"}, "attachments": [], "mentions": [],
        "eventDetail": {**detail, "initiator": {"application": None, "device": None, "user": None}}})


def member_detail(kind: str, ts: TenantStore, user_ids: list[str]) -> dict[str, Any]:
    """``membersAddedEventMessageDetail`` / ``membersDeletedEventMessageDetail``."""
    detail: dict[str, Any] = {"@odata.type": f"#microsoft.graph.{kind}EventMessageDetail", "members": [
        {"id": uid, "displayName": None, "userIdentityType": "aadUser", "tenantId": ts.tenant_id} for uid in user_ids]}
    if kind == "membersAdded":
        detail["visibleHistoryStartDateTime"] = "0001-01-01T00:00:00Z"
    return detail


def general_channel(ts: TenantStore, team_id: str) -> Collection:
    """The roots of a team's General channel (where Teams posts the team's system messages)."""
    team = team_or_404(ts, team_id)
    return roots_col(ts, str(team["id"]), str(team["internalId"]))


def _write_new(state: EmulatorState, ts: TenantStore, col: Collection, *, notify: bool,
               fields: dict[str, Any]) -> dict[str, Any]:
    parents = col.parents
    with state.lock:
        ms = _fresh_id(state, ts)
        created = ms_iso(ms)
        message_id = str(ms)
        channel = col.rtype in (CHANNEL_MESSAGE, CHANNEL_REPLY)
        item: dict[str, Any] = {
            "id": message_id, "replyToId": parents.get("message"), "etag": message_id, "messageType": "message",
            "createdDateTime": created, "lastModifiedDateTime": created, "lastEditedDateTime": None,
            "deletedDateTime": None, "subject": None, "summary": None, "chatId": None if channel else parents["chat"],
            "importance": "normal", "locale": "en-us",
            "webUrl": (f"https://teams.microsoft.com/l/message/{parents['channel']}/{message_id}"
                       f"?groupId={parents['team']}&tenantId={ts.tenant_id}") if channel else None,
            "policyViolation": None, "eventDetail": None, "from": None, "body": None,
            "channelIdentity": {"teamId": parents["team"], "channelId": parents["channel"]} if channel else None,
            "attachments": [], "mentions": [], "reactions": [], "messageHistory": [], "hostedContents": [],
        }
        item.update(fields)
        state.store.put(col, message_id, item, change_type="created", notify=notify)
    _after_write(state, ts, col, item)
    return item


def _after_write(state: EmulatorState, ts: TenantStore, col: Collection, item: dict[str, Any]) -> None:
    """What else a message write changes: the users' chat-message index, the chat's lastUpdatedDateTime, and
    (configurable) the root of a reply."""
    if col.rtype is CHAT_MESSAGE:
        chat_id = col.parents["chat"]
        for uid in chat_member_ids(ts, chat_id):
            index = ts.collection(USER_CHAT_MESSAGES, {"user": uid.lower()})
            state.store.put(index, f"{chat_id}|{item['id']}", item, change_type="updated", notify=False)
    elif col.rtype is CHANNEL_REPLY and state.config.teams_reply_resurfaces_root:
        roots = ts.collection(CHANNEL_MESSAGE, {"team": col.parents["team"], "channel": col.parents["channel"]})
        state.store.touch(roots, col.parents["message"])


def message_or_404(col: Collection, message_id: str) -> dict[str, Any]:
    item = col.get(message_id)
    if item is None:
        raise not_found(f"Message '{message_id}' not found.")
    return item


def edit_message(state: EmulatorState, ts: TenantStore, col: Collection, message_id: str,
                 changes: dict[str, Any]) -> dict[str, Any]:
    """A user's edit: new body/subject/importance/mentions, ``lastEditedDateTime`` and a new etag."""
    allowed = {"body", "subject", "importance", "mentions", "attachments", "reactions", "policyViolation"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise bad(f"The property '{unknown[0]}' cannot be updated on a chatMessage.")
    with state.lock:
        item = dict(message_or_404(col, message_id))
        if item.get("deletedDateTime"):
            raise bad("A deleted message cannot be edited.")
        ms = max(now_ms(state), int(item["etag"]) + 1)
        item.update(changes)
        if "body" in changes:
            item["body"] = {"contentType": (changes["body"] or {}).get("contentType") or "text",
                            "content": (changes["body"] or {}).get("content", "")}
            item["lastEditedDateTime"] = ms_iso(ms)
        item["lastModifiedDateTime"] = ms_iso(ms)
        item["etag"] = str(ms)
        state.store.put(col, message_id, item, change_type="updated")
    _after_write(state, ts, col, item)
    return item


def soft_delete(state: EmulatorState, ts: TenantStore, col: Collection, message_id: str, *, undo: bool = False) -> dict[str, Any]:
    """softDelete / undoSoftDelete (https://learn.microsoft.com/graph/api/chatmessage-softdelete): the message stays,
    with ``deletedDateTime`` set and its body emptied [OBS], and comes back on undo."""
    with state.lock:
        item = dict(message_or_404(col, message_id))
        ms = max(now_ms(state), int(item["etag"]) + 1)
        if undo:
            if not item.get("deletedDateTime"):
                return item
            item["body"] = item.pop(SAVED_BODY, item["body"])
            item["deletedDateTime"] = None
            change_type = "updated"
        else:
            if item.get("deletedDateTime"):
                return item
            item[SAVED_BODY] = item["body"]
            item["body"] = {"contentType": item["body"].get("contentType", "text"), "content": ""}
            item["deletedDateTime"] = ms_iso(ms)
            # Which changeType a soft delete raises is undocumented [UNCONFIRMED]: `deleted` by default.
            change_type = state.config.teams_soft_delete_change_type
        item["lastModifiedDateTime"] = ms_iso(ms)
        item["etag"] = str(ms)
        state.store.put(col, message_id, item, change_type=change_type)
    _after_write(state, ts, col, item)
    return item


# --- a team lives and dies with its group ------------------------------------------------------------------------


def on_change(state: EmulatorState, event: ChangeEvent) -> None:
    """Store listener: deleting a team's group deletes the team and its channels (each notified as deleted), and
    restoring the group brings them back (https://learn.microsoft.com/graph/api/group-delete: "a team dies with its
    group"; restore: https://learn.microsoft.com/graph/api/directory-deleteditems-restore)."""
    if event.resource_type != "group":
        return
    ts = state.store.tenants.get(event.tenant_id)
    if ts is None:
        return
    teams = ts.collections.get(TEAM.collection)
    if teams is None:
        return
    gid = event.item_id
    if event.change_type == "deleted":
        team = teams.get(gid)
        if team is None:
            return
        channels = ts.collection(CHANNEL, {"team": str(team["id"])})
        for channel_id, _ in list(channels.iter_live()):
            state.store.remove(channels, channel_id, reason="deleted")
        state.store.remove(teams, str(team["id"]), reason="deleted")
        return
    gone = teams.removed.get(gid)
    if gone is None or teams.get(gid) is not None:
        return
    _, last = gone
    state.store.put(teams, gid, dict(last), change_type="created")
    channels = ts.collection(CHANNEL, {"team": gid})
    for channel_id, (_, channel) in list(channels.removed.items()):
        state.store.put(channels, channel_id, dict(channel), change_type="created")
