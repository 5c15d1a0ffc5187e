"""Microsoft Teams resource types: team, channel, chat, chatMessage and conversationMember, as records.

Where each lives in the store (collection keys, lower-case):

* ``teams``                                          team (id = the group's id, https://learn.microsoft.com/graph/api/resources/team)
* ``teams/{team}/channels``                          channel (``19:<hex>@thread.tacv2``)
* ``teams/{team}/members``                           team membership (aadUserConversationMember)
* ``teams/{team}/channels/{channel}/members``        private and shared channel membership
* ``teams/{team}/channels/{channel}/messages``       root messages (what channel delta walks)
* ``teams/{team}/channels/{channel}/messages/{message}/replies``   replies of one root
* ``teams/{team}/operations``                        teamsAsyncOperation of ``POST /teams``
* ``chats``, ``chats/{chat}/members``, ``chats/{chat}/messages``
* ``users/{user}/chats/getallmessages``              every chat message of a user's chats (the per-user chats delta),
  keyed ``{chat}|{message}`` because message ids are only unique within one conversation

Three types share the name ``chatMessage`` and three ``conversationMember`` (same properties): subscriptions match on
the name, and each change names the collections it is "in" (``event_collections``) so that ``/teams/getAllMessages``,
``/chats/getAllMembers`` or a user's chats hear of it. Notification ``resource`` strings follow
https://learn.microsoft.com/graph/teams-changenotifications-chatmessage (``teams('..')/channels('..')/messages('..')``,
replies under ``/replies('..')``).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from syncer.emulator.resources import DeltaSpec, ResourceType

if TYPE_CHECKING:
    from syncer.emulator.changelog import Collection
    from syncer.emulator.store import TenantStore

# --- permissions (application roles; https://learn.microsoft.com/graph/permissions-reference) ---------------------
_GROUP_READ = frozenset({"Group.Read.All", "Group.ReadWrite.All"})
TEAM_READ = frozenset({"Team.ReadBasic.All", "TeamSettings.Read.All", "TeamSettings.ReadWrite.All",
                       "Directory.Read.All", "Directory.ReadWrite.All"}) | _GROUP_READ
TEAM_WRITE = frozenset({"Team.Create", "TeamSettings.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"})
CHANNEL_READ = frozenset({"Channel.ReadBasic.All", "ChannelSettings.Read.All", "ChannelSettings.ReadWrite.All"}) | _GROUP_READ
CHANNEL_WRITE = frozenset({"Channel.Create", "ChannelSettings.ReadWrite.All", "Group.ReadWrite.All"})
TEAM_MEMBER_READ = frozenset({"TeamMember.Read.All", "TeamMember.ReadWrite.All", "TeamMember.ReadWriteNonOwnerRole.All"}) | _GROUP_READ
TEAM_MEMBER_WRITE = frozenset({"TeamMember.ReadWrite.All", "TeamMember.ReadWriteNonOwnerRole.All"})
CHANNEL_MEMBER_READ = frozenset({"ChannelMember.Read.All", "ChannelMember.ReadWrite.All"})
CHANNEL_MEMBER_WRITE = frozenset({"ChannelMember.ReadWrite.All"})
CHANNEL_MESSAGE_READ = frozenset({"ChannelMessage.Read.All"}) | _GROUP_READ
#: App tokens may post only while importing (https://learn.microsoft.com/microsoftteams/platform/graph-api/import-messages/import-external-messages-to-teams).
MIGRATE = frozenset({"Teamwork.Migrate.All"})
CHAT_READ_BASIC = frozenset({"Chat.ReadBasic.All", "Chat.Read.All", "Chat.ReadWrite.All"})
CHAT_WRITE = frozenset({"Chat.Create", "Chat.ReadWrite.All"})
#: Deleting a chat (https://learn.microsoft.com/graph/api/chat-delete).
CHAT_DELETE = frozenset({"Chat.ManageDeletion.All"})
CHAT_MEMBER_READ = frozenset({"ChatMember.Read.All", "ChatMember.ReadWrite.All"}) | CHAT_READ_BASIC
CHAT_MEMBER_WRITE = frozenset({"ChatMember.ReadWrite.All", "Chat.ReadWrite.All"})
CHAT_MESSAGE_READ = frozenset({"Chat.Read.All", "Chat.ReadWrite.All"})

# Delegated permissions (a signed-in user; personal accounts have none), from the same pages' tables.
_DELEGATED_GROUP = frozenset({"Group.Read.All", "Group.ReadWrite.All"})
DELEGATED_TEAM_READ = frozenset({"Team.ReadBasic.All", "TeamSettings.Read.All", "TeamSettings.ReadWrite.All"}) | _DELEGATED_GROUP
DELEGATED_CHANNEL_READ = frozenset({"Channel.ReadBasic.All", "ChannelSettings.Read.All",
                                    "ChannelSettings.ReadWrite.All"}) | _DELEGATED_GROUP
DELEGATED_TEAM_MEMBER_READ = frozenset({"TeamMember.Read.All", "TeamMember.ReadWrite.All"}) | _DELEGATED_GROUP
DELEGATED_CHANNEL_MEMBER_READ = frozenset({"ChannelMember.Read.All", "ChannelMember.ReadWrite.All"})
DELEGATED_CHANNEL_MESSAGE_READ = frozenset({"ChannelMessage.Read.All"}) | _DELEGATED_GROUP
DELEGATED_CHAT_READ_BASIC = frozenset({"Chat.ReadBasic", "Chat.Read", "Chat.ReadWrite"})
DELEGATED_CHAT_MEMBER_READ = frozenset({"ChatMember.Read", "ChatMember.ReadWrite"}) | DELEGATED_CHAT_READ_BASIC
DELEGATED_CHAT_MESSAGE_READ = frozenset({"Chat.Read", "Chat.ReadWrite"})

#: Every Teams list page holds at most 50 items (https://learn.microsoft.com/graph/api/channel-list-messages).
MAX_TOP = 50

MEMBER_PROPERTIES = ("id", "roles", "displayName", "userId", "email", "tenantId", "visibleHistoryStartDateTime")
MESSAGE_PROPERTIES = (
    "id", "replyToId", "etag", "messageType", "createdDateTime", "lastModifiedDateTime", "lastEditedDateTime",
    "deletedDateTime", "subject", "summary", "chatId", "importance", "locale", "webUrl", "policyViolation",
    "eventDetail", "from", "body", "channelIdentity", "attachments", "mentions", "reactions", "messageHistory",
    "hostedContents",
)
#: Emulator bookkeeping kept on items, never returned (keys starting with "@" stay out of rich payloads too).
HIDDEN = frozenset({"@emulator.body", "@emulator.migration"})
MESSAGE_READ_ONLY = frozenset({
    "id", "replyToId", "etag", "messageType", "createdDateTime", "lastModifiedDateTime", "lastEditedDateTime",
    "deletedDateTime", "chatId", "webUrl", "channelIdentity", "messageHistory", "locale", "eventDetail", "from",
})


# --- which collections a change is "in" (subscription matching) ---------------------------------------------------


def _channel(ts: TenantStore, team: str, channel: str) -> dict[str, Any] | None:
    col = ts.collections.get(f"teams/{team}/channels".lower())
    return col.get(channel) if col is not None else None


def _shared(ts: TenantStore, team: str, channel: str) -> bool:
    found = _channel(ts, team, channel)
    return found is not None and found.get("membershipType") == "shared"


def _root_collections(ts: TenantStore, col: Collection, item_id: str) -> list[str]:
    team, channel = col.parents["team"], col.parents["channel"]
    if _shared(ts, team, channel):
        return []  # shared-channel messages raise no notifications [OBS: Microsoft Tech Community, 2026]
    return [col.key, "teams/getallmessages"]


def _reply_collections(ts: TenantStore, col: Collection, item_id: str) -> list[str]:
    team, channel = col.parents["team"], col.parents["channel"]
    if _shared(ts, team, channel):
        return []
    # A channel subscription delivers replies too (https://learn.microsoft.com/graph/teams-changenotifications-chatmessage).
    return [col.key, f"teams/{team}/channels/{channel}/messages".lower(), "teams/getallmessages"]


def chat_member_ids(ts: TenantStore, chat: str) -> list[str]:
    """User ids of the chat's members."""
    col = ts.collections.get(f"chats/{chat}/members".lower())
    if col is None:
        return []
    return [str(m["userId"]) for _, m in col.iter_live()]


def _chat_collections(ts: TenantStore, col: Collection, item_id: str) -> list[str]:
    return [col.key, f"chats/{item_id}".lower(), *(f"users/{uid}/chats".lower() for uid in chat_member_ids(ts, item_id))]


def _chat_message_collections(ts: TenantStore, col: Collection, item_id: str) -> list[str]:
    chat = col.parents["chat"]
    return [col.key, "chats/getallmessages",
            *(f"users/{uid}/chats/getallmessages".lower() for uid in chat_member_ids(ts, chat))]


def _channel_member_collections(ts: TenantStore, col: Collection, item_id: str) -> list[str]:
    team, channel = col.parents["team"], col.parents["channel"]
    found = _channel(ts, team, channel) or {}
    out = [col.key, f"teams/{team}/channels/getallmembers".lower()]
    if found.get("membershipType") == "private":
        out.append("teams/getallchannels/getallmembers")  # beta: private channels only
    return out


def _team_collections(ts: TenantStore, col: Collection, item_id: str) -> list[str]:
    return [col.key, f"teams/{item_id}".lower()]


TEAM = ResourceType(
    name="team",
    odata_type="#microsoft.graph.team",
    notification_type="#microsoft.graph.team",
    collection="teams",
    family="teams",
    read_roles=TEAM_READ,
    write_roles=TEAM_WRITE,
    delegated_read=DELEGATED_TEAM_READ,
    properties=("id", "displayName", "description", "visibility", "createdDateTime", "webUrl", "isArchived",
                "internalId", "tenantId", "classification", "specialization", "memberSettings", "messagingSettings",
                "funSettings", "guestSettings"),
    read_only=frozenset({"id", "createdDateTime", "webUrl", "isArchived", "internalId", "tenantId"}),
    write_only=HIDDEN,
    list_default_page=MAX_TOP,
    list_max_page=MAX_TOP,
    notification_resource="teams('{id}')",
    index_by_id=False,
    event_collections=_team_collections,
)

CHANNEL = ResourceType(
    name="channel",
    odata_type="#microsoft.graph.channel",
    notification_type="#microsoft.graph.channel",
    collection="teams/{team}/channels",
    family="teams",
    read_roles=CHANNEL_READ,
    write_roles=CHANNEL_WRITE,
    delegated_read=DELEGATED_CHANNEL_READ,
    properties=("id", "displayName", "description", "membershipType", "createdDateTime", "email", "webUrl",
                "tenantId", "isFavoriteByDefault"),
    read_only=frozenset({"id", "createdDateTime", "email", "webUrl", "tenantId"}),
    required_on_create=("displayName",),
    notification_resource="teams('{team}')/channels('{id}')",
    alias_collections=("teams/getallchannels",),
    index_by_id=False,
)

TEAM_MEMBER = ResourceType(
    name="conversationMember",
    odata_type="#microsoft.graph.aadUserConversationMember",
    notification_type="#microsoft.graph.aadUserConversationMember",
    collection="teams/{team}/members",
    family="teams",
    read_roles=TEAM_MEMBER_READ,
    write_roles=TEAM_MEMBER_WRITE,
    delegated_read=DELEGATED_TEAM_MEMBER_READ,
    properties=MEMBER_PROPERTIES,
    read_only=frozenset({"id", "displayName", "email", "tenantId", "userId"}),
    notification_resource="teams('{team}')/members('{id}')",
    alias_collections=("teams/getallmembers",),
    index_by_id=False,
)

CHANNEL_MEMBER = ResourceType(
    name="conversationMember",
    odata_type="#microsoft.graph.aadUserConversationMember",
    notification_type="#microsoft.graph.aadUserConversationMember",
    collection="teams/{team}/channels/{channel}/members",
    family="teams",
    read_roles=CHANNEL_MEMBER_READ | TEAM_MEMBER_READ,
    write_roles=CHANNEL_MEMBER_WRITE,
    delegated_read=DELEGATED_CHANNEL_MEMBER_READ,
    properties=MEMBER_PROPERTIES,
    read_only=TEAM_MEMBER.read_only,
    notification_resource="teams('{team}')/channels('{channel}')/members('{id}')",
    index_by_id=False,
    event_collections=_channel_member_collections,
)

CHAT = ResourceType(
    name="chat",
    odata_type="#microsoft.graph.chat",
    notification_type="#microsoft.graph.chat",
    collection="chats",
    family="teams",
    read_roles=CHAT_READ_BASIC,
    write_roles=CHAT_WRITE,
    delegated_read=DELEGATED_CHAT_READ_BASIC,
    properties=("id", "topic", "chatType", "createdDateTime", "lastUpdatedDateTime", "tenantId", "webUrl",
                "onlineMeetingInfo", "isHiddenForAllMembers", "members"),
    read_only=frozenset({"id", "createdDateTime", "lastUpdatedDateTime", "tenantId", "webUrl", "onlineMeetingInfo"}),
    # `members` is kept on the item for rich notifications (which embed them) but read only with $expand=members.
    default_select=("id", "topic", "createdDateTime", "lastUpdatedDateTime", "chatType", "webUrl", "tenantId",
                    "onlineMeetingInfo", "isHiddenForAllMembers"),
    list_default_page=MAX_TOP,
    list_max_page=MAX_TOP,
    notification_resource="chats('{id}')",
    index_by_id=False,
    event_collections=_chat_collections,
)

CHAT_MEMBER = ResourceType(
    name="conversationMember",
    odata_type="#microsoft.graph.aadUserConversationMember",
    notification_type="#microsoft.graph.aadUserConversationMember",
    collection="chats/{chat}/members",
    family="teams",
    read_roles=CHAT_MEMBER_READ,
    write_roles=CHAT_MEMBER_WRITE,
    delegated_read=DELEGATED_CHAT_MEMBER_READ,
    properties=MEMBER_PROPERTIES,
    read_only=TEAM_MEMBER.read_only,
    notification_resource="chats('{chat}')/members('{id}')",
    alias_collections=("chats/getallmembers",),
    index_by_id=False,
)

#: Channel delta: 20 per page by default [guess from traces], `$top` up to 50
#: (https://learn.microsoft.com/graph/api/chatmessage-delta).
_MESSAGE_DELTA = DeltaSpec(default_page=20, max_page=MAX_TOP, date_filter="lastModifiedDateTime")

CHANNEL_MESSAGE = ResourceType(
    name="chatMessage",
    odata_type="#microsoft.graph.chatMessage",
    notification_type="#microsoft.graph.chatMessage",
    collection="teams/{team}/channels/{channel}/messages",
    family="teams",
    read_roles=CHANNEL_MESSAGE_READ,
    write_roles=MIGRATE,
    delegated_read=DELEGATED_CHANNEL_MESSAGE_READ,
    properties=MESSAGE_PROPERTIES,
    read_only=MESSAGE_READ_ONLY,
    write_only=HIDDEN,
    required_on_create=("body",),
    delta=_MESSAGE_DELTA,
    list_default_page=20,
    list_max_page=MAX_TOP,
    notification_resource="teams('{team}')/channels('{channel}')/messages('{id}')",
    index_by_id=False,
    event_collections=_root_collections,
)

CHANNEL_REPLY = ResourceType(
    name="chatMessage",
    odata_type="#microsoft.graph.chatMessage",
    notification_type="#microsoft.graph.chatMessage",
    collection="teams/{team}/channels/{channel}/messages/{message}/replies",
    family="teams",
    read_roles=CHANNEL_MESSAGE_READ,
    write_roles=MIGRATE,
    delegated_read=DELEGATED_CHANNEL_MESSAGE_READ,
    properties=MESSAGE_PROPERTIES,
    read_only=MESSAGE_READ_ONLY,
    write_only=HIDDEN,
    required_on_create=("body",),
    list_default_page=20,
    list_max_page=MAX_TOP,
    notification_resource="teams('{team}')/channels('{channel}')/messages('{message}')/replies('{id}')",
    index_by_id=False,
    event_collections=_reply_collections,
)

CHAT_MESSAGE = ResourceType(
    name="chatMessage",
    odata_type="#microsoft.graph.chatMessage",
    notification_type="#microsoft.graph.chatMessage",
    collection="chats/{chat}/messages",
    family="teams",
    read_roles=CHAT_MESSAGE_READ,
    write_roles=MIGRATE,
    delegated_read=DELEGATED_CHAT_MESSAGE_READ,
    properties=MESSAGE_PROPERTIES,
    read_only=MESSAGE_READ_ONLY,
    write_only=HIDDEN,
    required_on_create=("body",),
    list_default_page=MAX_TOP,
    list_max_page=MAX_TOP,
    notification_resource="chats('{chat}')/messages('{id}')",
    index_by_id=False,
    event_collections=_chat_message_collections,
)

#: A user's chat messages across chats, for ``/users/{id}/chats/getAllMessages[/delta]`` (never notifies itself).
USER_CHAT_MESSAGES = ResourceType(
    name="chatMessage",
    odata_type="#microsoft.graph.chatMessage",
    notification_type="#microsoft.graph.chatMessage",
    collection="users/{user}/chats/getallmessages",
    family="teams",
    read_roles=CHAT_MESSAGE_READ,
    write_roles=frozenset(),
    delegated_read=DELEGATED_CHAT_MESSAGE_READ,
    properties=MESSAGE_PROPERTIES,
    read_only=MESSAGE_READ_ONLY,
    write_only=HIDDEN,
    delta=_MESSAGE_DELTA,
    list_default_page=MAX_TOP,
    list_max_page=MAX_TOP,
    index_by_id=False,
    notification_resource_data=False,
    event_collections=lambda ts, col, item_id: [],
)

TEAMS_ASYNC_OPERATION = ResourceType(
    name="teamsAsyncOperation",
    odata_type="#microsoft.graph.teamsAsyncOperation",
    notification_type="#microsoft.graph.teamsAsyncOperation",
    collection="teams/{team}/operations",
    family="teams",
    read_roles=TEAM_READ | TEAM_WRITE,
    write_roles=TEAM_WRITE,
    properties=("id", "operationType", "status", "createdDateTime", "lastActionDateTime", "attemptsCount",
                "targetResourceId", "targetResourceLocation", "error"),
    index_by_id=False,
    notification_resource_data=False,
    event_collections=lambda ts, col, item_id: [],
)

RESOURCE_TYPES = (TEAM, CHANNEL, TEAM_MEMBER, CHANNEL_MEMBER, CHAT, CHAT_MEMBER, CHANNEL_MESSAGE, CHANNEL_REPLY,
                  CHAT_MESSAGE, USER_CHAT_MESSAGES, TEAMS_ASYNC_OPERATION)


# --- ids in Graph's forms (https://learn.microsoft.com/graph/api/resources/channel, .../chat) ------------------------


def thread_id(hex32: str, suffix: str = "thread.tacv2") -> str:
    """``19:<32 hex>@thread.tacv2`` (channels) or ``@thread.v2`` (group and meeting chats)."""
    return f"19:{hex32}@{suffix}"


def one_on_one_chat_id(user_a: str, user_b: str) -> str:
    """``19:<userA>_<userB>@unq.gbl.spaces``, the two user ids sorted so the pair has one chat."""
    first, second = sorted((user_a.lower(), user_b.lower()))
    return f"19:{first}_{second}@unq.gbl.spaces"


def membership_id(container: str, user_id: str, tenant_id: str) -> str:
    """An opaque base64 membership id, shaped like Graph's (``MCMjMSMj...``): container, tenant and user."""
    raw = f"0#1#{container}##{tenant_id}##{user_id}".encode()
    return base64.b64encode(raw).decode().rstrip("=")
