"""syncer's own catalogue of the Graph resources one can subscribe to.

One entry per kind of subscribable resource path: which paths it covers, which ``changeType`` values
Graph accepts, the maximum lifetime (basic and rich), the application permission, quotas, lifecycle
events, and how syncer brings the mirror up to date (a delta query, or GETs when Graph has no delta).
Spec validation refuses what Graph would refuse before any call is made; reconcile and sync read the
same entries. This is the client's reading of Graph's documentation: the subscription resource and
its lifetimes (https://learn.microsoft.com/en-us/graph/api/resources/subscription), the supported
resources (https://learn.microsoft.com/en-us/graph/change-notifications-overview), lifecycle events,
rich notifications and delta query; the emulator keeps its own, independent catalogue so that
a misreading shows up as a failing test rather than as two matching bugs.

Pure data and lookups, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import unquote

MIN_LIFETIME = timedelta(minutes=45)
"""Graph raises any requested expiration under 45 minutes to 45 minutes (https://learn.microsoft.com/en-us/graph/api/resources/subscription)."""

CHANGE_TYPES = ("created", "updated", "deleted")

ALL_LIFECYCLE = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
REAUTH_ONLY = frozenset({"reauthorizationRequired"})

# Sync strategies: how a notification (or the periodic timer) turns into rows.
DELTA = "delta"  # GET {collection}/delta, follow nextLink to deltaLink, keep the deltaLink
CALENDAR_VIEW = "calendar_view"  # calendarView/delta over a time window (no $select on this endpoint)
DRIVE_DELTA = "drive_delta"  # drive root delta: ?token=, "deleted" facet instead of @removed
FETCH = "fetch"  # no delta in Graph (or not in our notes): GET the item by id + periodic full list
CURSOR = "cursor"  # no delta: list newest first with a lastModifiedDateTime cursor (one chat's messages)


@dataclass(frozen=True)
class Quota:
    """Subscription limits Graph enforces with ``403`` (https://learn.microsoft.com/en-us/graph/api/subscription-post-subscriptions); None = no documented limit."""

    per_mailbox: int | None = None  # all apps together, per mailbox (Outlook)
    per_tenant: int | None = None  # all apps together, per tenant (organization)
    per_app_tenant: int | None = None  # one app in one tenant
    per_app: int | None = None  # one app, all tenants together
    per_instance: int | None = None  # one app per chat / channel / team / meeting path
    per_user: int | None = None  # one app per user for user-scoped paths (users/{id}/chats/getAllMessages)
    pool: str | None = None  # a limit shared with other types: "teams" = one 10,000 pool per organization


_DIRECTORY_QUOTA = Quota(per_app=50_000, per_tenant=1_000, per_app_tenant=100)
_OUTLOOK_QUOTA = Quota(per_mailbox=1_000)
_TEAMS_QUOTA = Quota(per_tenant=10_000, per_instance=1, pool="teams")
_TEAMS_USER_QUOTA = Quota(per_tenant=10_000, per_user=10, pool="teams")  # users/{id}/chats...: 10 per user
_TEAMS_LIFECYCLE = frozenset({"reauthorizationRequired", "subscriptionRemoved"})
_MODELS_AB = frozenset({"A", "B"})  # https://learn.microsoft.com/en-us/graph/teams-licenses
_MODEL_B = frozenset({"B"})


@dataclass(frozen=True)
class ScopeOwner:
    """An owner column whose value comes from the scope a row was synced in, not from the item: the user of a
    mailbox, the folder or list of a delta, the drive. Same value for every row of the scope."""

    column: str
    value: str | None = None
    """Template over the scope's path parameters (``{user}``); None when only :attr:`lookup` can tell."""
    lookup: str | None = None
    """Graph path (template) of the owner object whose ``id`` is the value, when :attr:`value` is not one
    already (a user named by UPN, a folder by a well-known name): asked once per scope and kept in its state."""
    ids: str = ".+"
    """A regular expression: a :attr:`value` it matches in full is already the id (no lookup)."""


# https://learn.microsoft.com/en-us/graph/api/resources/user: a user's id is a GUID; a UPN (with "@") or
# "me" names the user and is looked up (https://learn.microsoft.com/en-us/graph/api/user-get).
_USER_ID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# https://learn.microsoft.com/en-us/graph/api/resources/mailfolder#well-known-folder-names stand in for a folder's id.
_WELL_KNOWN_MAIL_FOLDERS = (
    "archive|clutter|conflicts|conversationhistory|deleteditems|drafts|inbox|junkemail|localfailures|msgfolderroot"
    "|outbox|recoverableitemsdeletions|scheduled|searchfolders|sentitems|serverfailures|syncissues"
)
_USER_OWNER = ScopeOwner("user_id", "{user}", lookup="users/{user}", ids=_USER_ID)


@dataclass(frozen=True)
class ResourceType:
    """A kind of Graph resource path one can subscribe to, and what Graph allows for it."""

    key: str  # unique in the catalogue, e.g. "chatMessage.channel"; several keys may share a ``name``
    name: str  # the Graph entity type: "user", "message", "chatMessage", ...
    patterns: tuple[str, ...]  # resource-path templates, e.g. "users/{user}/mailFolders/{folder}/messages"
    change_types: frozenset[str]
    max_lifetime: timedelta  # basic notifications (https://learn.microsoft.com/en-us/graph/api/resources/subscription#subscription-lifetime)
    max_lifetime_rich: timedelta | None  # None = rich notifications (includeResourceData) unsupported
    permission: str  # least-privileged application permission to subscribe and read (https://learn.microsoft.com/en-us/graph/api/subscription-post-subscriptions#permissions)
    per_mailbox: bool = False  # one subscription per user mailbox (Outlook, To Do)
    lifecycle_events: frozenset[str] = REAUTH_ONLY
    sync: str = FETCH
    delta_paths: tuple[str | None, ...] = ()  # per pattern (same order): the delta request path template
    quota: Quota = field(default_factory=Quota)
    rich_required: bool = False  # presence: Graph only offers rich notifications
    rich_needs_select: bool = False  # Outlook: a rich subscription's resource must carry ?$select=
    lifecycle_url_over: timedelta | None = None  # Teams: lifecycleNotificationUrl required past this lifetime
    delegated_only: bool = False  # no application permission exists; needs delegated auth (not in version 1)
    delegated_paths: tuple[str, ...] | None = None
    """Patterns a signed-in work account may declare (Graph has a delegated permission for the subscription and for
    syncer's reads of it); None = no such list (mail and files follow the me/... rule), () = application only."""
    global_only: bool = False  # todoTask webhooks exist only in the global cloud
    select_supported: bool = (
        True  # calendarView delta refuses $select: mirror columns come from the full item
    )
    field_types: tuple[tuple[str, str], ...] = ()  # common properties' column types (default column type)
    models: frozenset[str] = frozenset()  # Teams' payment models the path takes as ?model= (empty: none)
    one_user_per_declaration: bool = False
    """Users share items (two members of a chat both list its messages) while a mirror row belongs to one scope:
    until rows can be shared, a ``{user}`` fan-out of such a type names exactly one user."""
    owner_columns: tuple[tuple[str, str, str], ...] = ()
    """Columns every mirror table of this type gets, indexed: (field, column, type). The ids of what owns
    an item (a message's team, channel, chat, thread root and sender), so that one SQL query can select by them."""
    scope_owners: tuple[ScopeOwner, ...] = ()
    """Owner columns taken from the scope (its path parameters, or ids looked up once per scope), indexed: a
    mailbox's ``user_id``, a folder's ``folder_id``. The first rule of a column whose parameters a declaration
    has applies (:mod:`syncer.owners`)."""
    app_only: bool = False
    """Graph grants only an application permission: a delegated (signed-in user) token is refused (403)."""
    query_options: str | None = None
    """The ``notificationQueryOptions`` Graph requires on every subscription of this type (sent as is)."""
    read_permissions: tuple[str, ...] = ()
    """Application permissions the reads need besides :attr:`permission` (a printer's jobs: PrintJob.Read.All)."""

    @property
    def delta_path(self) -> str | None:
        """The delta request template of the main (first) pattern."""
        return self.delta_paths[0] if self.delta_paths else None

    def max_lifetime_for(self, *, rich: bool) -> timedelta | None:
        """Longest lifetime Graph grants; None when *rich* notifications are not supported at all."""
        return self.max_lifetime_rich if rich else self.max_lifetime

    def field_type(self, field_name: str) -> str | None:
        """The column type of a well-known top-level property, or None when unknown."""
        return dict(self.field_types).get(field_name)


def _minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def _teams(**fields: Any) -> ResourceType:
    """A Teams type with the rules Graph applies to every Teams subscription: 4,320 minutes at most (basic
    and rich), the tenant's pool and one per app per resource, a lifecycle URL past an hour
    (https://learn.microsoft.com/en-us/graph/teams-change-notification-in-microsoft-teams-overview)."""
    shared: dict[str, Any] = {
        "max_lifetime": _minutes(4_320),
        "max_lifetime_rich": _minutes(4_320),
        "quota": _TEAMS_QUOTA,
        "lifecycle_url_over": timedelta(hours=1),
        "delegated_paths": (),  # the entries Graph and syncer serve to a signed-in user say which
    }
    return ResourceType(**{**shared, **fields})


_USER_FIELDS = (
    ("accountEnabled", "boolean"),
    ("businessPhones", "json"),
    ("proxyAddresses", "json"),
    ("otherMails", "json"),
    ("assignedLicenses", "json"),
    ("manager", "json"),
)
_GROUP_FIELDS = (
    ("groupTypes", "json"),
    ("mailEnabled", "boolean"),
    ("securityEnabled", "boolean"),
    ("members", "json"),
    ("proxyAddresses", "json"),
)
_MESSAGE_FIELDS = (
    ("from", "json"),
    ("sender", "json"),
    ("toRecipients", "json"),
    ("ccRecipients", "json"),
    ("bccRecipients", "json"),
    ("replyTo", "json"),
    ("body", "json"),
    ("categories", "json"),
    ("flag", "json"),
    ("isRead", "boolean"),
    ("isDraft", "boolean"),
    ("hasAttachments", "boolean"),
)
_EVENT_FIELDS = (
    ("start", "json"),
    ("end", "json"),
    ("location", "json"),
    ("locations", "json"),
    ("attendees", "json"),
    ("organizer", "json"),
    ("body", "json"),
    ("categories", "json"),
    ("isAllDay", "boolean"),
    ("isCancelled", "boolean"),
    ("isOnlineMeeting", "boolean"),
    ("recurrence", "json"),
)
_CONTACT_FIELDS = (
    ("emailAddresses", "json"),
    ("businessPhones", "json"),
    ("homePhones", "json"),
    ("categories", "json"),
)
_DRIVE_FIELDS = (
    ("size", "integer"),
    ("file", "json"),
    ("folder", "json"),
    ("parentReference", "json"),
    ("createdBy", "json"),
    ("lastModifiedBy", "json"),
    ("deleted", "json"),
)
_TASK_FIELDS = (
    ("body", "json"),
    ("dueDateTime", "json"),  # a dateTimeTimeZone object, not a plain timestamp
    ("reminderDateTime", "json"),
    ("completedDateTime", "json"),
    ("startDateTime", "json"),
    ("categories", "json"),
    ("isReminderOn", "boolean"),
)

_CHAT_MESSAGE_FIELDS = (
    ("body", "json"),
    ("from", "json"),
    ("attachments", "json"),
    ("mentions", "json"),
    ("reactions", "json"),
    ("channelIdentity", "json"),
)
# https://learn.microsoft.com/en-us/graph/api/resources/chatmessage: channelIdentity (channel messages), chatId
# (chat messages), replyToId (replies), from.user (a user sender; an application or device sends otherwise).
_CHAT_MESSAGE_OWNERS = (
    ("channelIdentity.teamId", "team_id", "text"),
    ("channelIdentity.channelId", "channel_id", "text"),
    ("chatId", "chat_id", "text"),
    ("replyToId", "reply_to_id", "text"),
    ("from.user.id", "from_user_id", "text"),
    ("createdDateTime", "created_date_time", "datetime"),
    ("deletedDateTime", "deleted_date_time", "datetime"),
)

# https://learn.microsoft.com/en-us/graph/api/resources/aaduserconversationmember: a membership carries its user, not
# the team or chat it belongs to; the declaration's path names that one (scope_owners).
_MEMBER_FIELDS = (("roles", "json"),)
_MEMBER_OWNERS = (("userId", "user_id", "text"),)

CATALOGUE: tuple[ResourceType, ...] = (
    # --- directory (delta, updated/deleted only: creation and soft delete arrive as "updated") -----
    ResourceType(
        key="user",
        name="user",
        patterns=("users", "users/{user}"),
        change_types=frozenset({"updated", "deleted"}),
        max_lifetime=_minutes(41_760),
        max_lifetime_rich=None,
        permission="User.Read.All",
        sync=DELTA,
        # A single user is synced through users/delta with $filter=id eq '{user}'.
        delta_paths=("users/delta", "users/delta"),
        quota=_DIRECTORY_QUOTA,
        field_types=_USER_FIELDS,
    ),
    ResourceType(
        key="group",
        name="group",
        patterns=("groups", "groups/{group}", "groups/{group}/members"),
        change_types=frozenset({"updated", "deleted"}),
        max_lifetime=_minutes(41_760),
        max_lifetime_rich=None,
        permission="Group.Read.All",
        sync=DELTA,
        # Membership changes come back as members@delta on the group (select members).
        delta_paths=("groups/delta", "groups/delta", "groups/delta"),
        quota=_DIRECTORY_QUOTA,
        field_types=_GROUP_FIELDS,
    ),
    ResourceType(
        # Owners are a relation of their own: groups delta documents members@delta, not owners
        # (https://learn.microsoft.com/en-us/graph/api/group-delta), so the owners are listed
        # (https://learn.microsoft.com/en-us/graph/api/group-list-owners), one row per owner.
        key="group.owners",
        name="group",
        patterns=("groups/{group}/owners",),
        change_types=frozenset({"updated", "deleted"}),
        max_lifetime=_minutes(41_760),
        max_lifetime_rich=None,
        permission="Group.Read.All",
        quota=_DIRECTORY_QUOTA,
        scope_owners=(ScopeOwner("group_id", "{group}"),),
    ),
    ResourceType(
        key="conversation",
        name="conversation",
        patterns=("groups/{group}/conversations",),
        change_types=frozenset(CHANGE_TYPES),
        max_lifetime=_minutes(4_230),
        max_lifetime_rich=None,
        permission="Group.Read.All",
        delegated_only=True,  # Graph: application permission "not supported"
        # A conversation does not name its group: the declared path does.
        scope_owners=(ScopeOwner("group_id", "{group}"),),
    ),
    # --- Outlook (per mailbox) --------------------------------------------------------------------
    ResourceType(
        key="message",
        name="message",
        patterns=("users/{user}/messages", "users/{user}/mailFolders/{folder}/messages"),
        change_types=frozenset(CHANGE_TYPES),
        max_lifetime=_minutes(10_080),
        max_lifetime_rich=_minutes(1_440),
        permission="Mail.Read",
        per_mailbox=True,
        lifecycle_events=ALL_LIFECYCLE,
        sync=DELTA,
        # Mail delta is per folder: for the whole mailbox, sync fills {folder} from the spec's folders.
        delta_paths=(
            "users/{user}/mailFolders/{folder}/messages/delta",
            "users/{user}/mailFolders/{folder}/messages/delta",
        ),
        quota=_OUTLOOK_QUOTA,
        rich_needs_select=True,
        field_types=_MESSAGE_FIELDS,
        scope_owners=(_USER_OWNER, ScopeOwner("folder_id", "{folder}", lookup="users/{user}/mailFolders/{folder}",
                                              ids=f"(?i)(?!(?:{_WELL_KNOWN_MAIL_FOLDERS})$).+")),
    ),
    ResourceType(
        key="event",
        name="event",
        patterns=("users/{user}/events",),
        change_types=frozenset(CHANGE_TYPES),
        max_lifetime=_minutes(10_080),
        max_lifetime_rich=_minutes(1_440),
        permission="Calendars.Read",
        per_mailbox=True,
        lifecycle_events=ALL_LIFECYCLE,
        sync=CALENDAR_VIEW,
        delta_paths=("users/{user}/calendarView/delta",),  # + startDateTime/endDateTime from the window
        quota=_OUTLOOK_QUOTA,
        rich_needs_select=True,
        select_supported=False,
        field_types=_EVENT_FIELDS,
        # users/{user}/events follows the default calendar: calendar_id only where a path names the calendar.
        scope_owners=(_USER_OWNER, ScopeOwner("calendar_id", "{calendar}")),
    ),
    ResourceType(
        key="contact",
        name="contact",
        patterns=("users/{user}/contacts", "users/{user}/contactFolders/{folder}/contacts"),
        change_types=frozenset(CHANGE_TYPES),
        max_lifetime=_minutes(10_080),
        max_lifetime_rich=_minutes(1_440),
        permission="Contacts.Read",
        per_mailbox=True,
        lifecycle_events=ALL_LIFECYCLE,
        sync=DELTA,
        delta_paths=(
            "users/{user}/contactFolders/{folder}/contacts/delta",
            "users/{user}/contactFolders/{folder}/contacts/delta",
        ),
        quota=_OUTLOOK_QUOTA,
        rich_needs_select=True,
        field_types=_CONTACT_FIELDS,
        scope_owners=(_USER_OWNER, ScopeOwner("folder_id", "{folder}")),
    ),
    ResourceType(
        key="todoTask",
        name="todoTask",
        patterns=("users/{user}/todo/lists/{list}/tasks",),
        change_types=frozenset(CHANGE_TYPES),
        max_lifetime=_minutes(4_230),
        max_lifetime_rich=None,
        # The create page says Tasks.ReadWrite.All; the update page says application is unsupported.
        permission="Tasks.ReadWrite.All",
        per_mailbox=True,
        sync=DELTA,
        delta_paths=("users/{user}/todo/lists/{list}/tasks/delta",),
        global_only=True,
        field_types=_TASK_FIELDS,
        scope_owners=(_USER_OWNER, ScopeOwner("list_id", "{list}")),
    ),
    # --- files and lists (shoulder taps: no item id, "updated" only) ----------------------------
    ResourceType(
        key="driveItem",
        name="driveItem",
        patterns=(
            "drives/{drive}/root",
            "users/{user}/drive/root",
            "groups/{group}/drive/root",
            "sites/{site}/drive/root",
        ),
        change_types=frozenset({"updated"}),
        max_lifetime=_minutes(42_300),
        max_lifetime_rich=None,
        permission="Files.Read.All",
        sync=DRIVE_DELTA,
        delta_paths=(
            "drives/{drive}/root/delta",
            "users/{user}/drive/root/delta",
            "groups/{group}/drive/root/delta",
            "sites/{site}/drive/root/delta",
        ),
        field_types=_DRIVE_FIELDS,
        # https://learn.microsoft.com/en-us/graph/api/drive-get: a OneDrive or a library has an id of its own. A group's
        # or a site's library is subscribed and synced as drives/{id}/root once its id is known (only drives/{id}/root
        # and users/{id}/drive/root are documented resources: syncer.resolve), and keeps its group or site.
        scope_owners=(
            ScopeOwner("drive_id", "{drive}"),
            ScopeOwner("drive_id", lookup="users/{user}/drive"),
            ScopeOwner("drive_id", lookup="groups/{group}/drive"),
            ScopeOwner("drive_id", lookup="sites/{site}/drive"),
            _USER_OWNER,
            ScopeOwner("group_id", "{group}"),
            ScopeOwner("site_id", "{site}"),
        ),
    ),
    ResourceType(
        # https://learn.microsoft.com/en-us/graph/api/listitem-delta: the list's items, a "deleted" facet for removals.
        # {site} in any form Graph takes (https://learn.microsoft.com/en-us/graph/api/site-get,
        # .../site-getbypath), resolved to the canonical id before subscribing (syncer.resolve).
        key="list",
        name="list",
        patterns=("sites/{site}/lists/{list}", "groups/{group}/sites/root/lists/{list}"),
        change_types=frozenset({"updated"}),
        max_lifetime=_minutes(42_300),
        max_lifetime_rich=None,
        permission="Sites.Read.All",
        sync=DELTA,
        delta_paths=("sites/{site}/lists/{list}/items/delta", None),
        # The canonical site and list ids (syncer.resolve); a group's team site is https://learn.microsoft.com/en-us/graph/api/site-get.
        scope_owners=(ScopeOwner("site_id", "{site}", lookup="groups/{group}/sites/root"), ScopeOwner("list_id", "{list}")),
    ),
    # --- Teams (one 10,000 pool per organization; lifecycle URL needed past 1 hour) -------------
    # https://learn.microsoft.com/en-us/graph/teams-changenotifications-chatmessage and the -chat, -team-and-channel,
    # -teammembership, -chatmembership and -channelmembership pages: one entry per set of change types and
    # per `model` rule, since Graph's rules differ between a collection and one of its items.
    _teams(
        key="chatMessage.channel",
        name="chatMessage",
        # Roots and replies are notified; the channel-message delta returns roots only (replies: not yet synced).
        patterns=("teams/{team}/channels/{channel}/messages",),
        change_types=frozenset(CHANGE_TYPES),
        permission="ChannelMessage.Read.All",
        lifecycle_events=_TEAMS_LIFECYCLE,
        sync=DELTA,
        delta_paths=("teams/{team}/channels/{channel}/messages/delta",),
        delegated_paths=("teams/{team}/channels/{channel}/messages",),  # ChannelMessage.Read.All, delta too
        field_types=_CHAT_MESSAGE_FIELDS,
        owner_columns=_CHAT_MESSAGE_OWNERS,
    ),
    _teams(
        key="chatMessage.allChannels",
        name="chatMessage",
        patterns=("teams/getAllMessages",),
        change_types=frozenset(CHANGE_TYPES),
        permission="ChannelMessage.Read.All",
        lifecycle_events=_TEAMS_LIFECYCLE,
        models=_MODELS_AB,
        field_types=_CHAT_MESSAGE_FIELDS,
        owner_columns=_CHAT_MESSAGE_OWNERS,
    ),
    _teams(
        key="chatMessage.chat",
        name="chatMessage",
        patterns=("chats/{chat}/messages",),
        change_types=frozenset(CHANGE_TYPES),
        permission="Chat.Read.All",
        delegated_paths=("chats/{chat}/messages",),  # Chat.Read: the user's own chats
        lifecycle_events=_TEAMS_LIFECYCLE,
        sync=CURSOR,
        field_types=_CHAT_MESSAGE_FIELDS,
        owner_columns=_CHAT_MESSAGE_OWNERS,
    ),
    _teams(
        key="chatMessage.allChats",
        name="chatMessage",
        patterns=("chats/getAllMessages",),
        change_types=frozenset(CHANGE_TYPES),
        permission="Chat.Read.All",
        lifecycle_events=_TEAMS_LIFECYCLE,
        models=_MODELS_AB,
        field_types=_CHAT_MESSAGE_FIELDS,
        owner_columns=_CHAT_MESSAGE_OWNERS,
    ),
    ResourceType(
        key="chatMessage.user",
        name="chatMessage",
        patterns=("users/{user}/chats/getAllMessages",),
        change_types=frozenset(CHANGE_TYPES),
        max_lifetime=_minutes(4_320),
        max_lifetime_rich=_minutes(4_320),
        permission="Chat.Read.All",
        lifecycle_events=_TEAMS_LIFECYCLE,
        sync=DELTA,
        delta_paths=("users/{user}/chats/getAllMessages/delta",),
        quota=_TEAMS_USER_QUOTA,
        one_user_per_declaration=True,
        lifecycle_url_over=timedelta(hours=1),
        # A user may subscribe (Chat.Read), but the getAllMessages delta serves apps only
        # (https://learn.microsoft.com/graph/api/chatmessage-delta): a user declares chats/{chat}/messages.
        delegated_paths=(),
        models=_MODEL_B,
        field_types=_CHAT_MESSAGE_FIELDS,
        owner_columns=_CHAT_MESSAGE_OWNERS,
    ),
    _teams(
        key="chatMessage.app",
        name="chatMessage",
        patterns=("appCatalogs/teamsApps/{app}/installedToChats/getAllMessages",),
        change_types=frozenset({"created", "updated"}),
        permission="Chat.Read.WhereInstalled",
        lifecycle_events=_TEAMS_LIFECYCLE,
        models=_MODEL_B,
        field_types=_CHAT_MESSAGE_FIELDS,
        owner_columns=_CHAT_MESSAGE_OWNERS,
    ),
    _teams(
        key="chat",
        name="chat",
        patterns=("chats",),
        change_types=frozenset({"created", "updated"}),
        permission="Chat.ReadBasic.All",
    ),
    _teams(
        key="chat.user",
        name="chat",
        patterns=("users/{user}/chats",),  # preview in Graph's table
        change_types=frozenset({"created", "updated"}),
        permission="Chat.ReadBasic.All",
        quota=_TEAMS_USER_QUOTA,
        # Users share chats while a mirror row belongs to one scope (as chatMessage.user).
        one_user_per_declaration=True,
    ),
    _teams(
        key="chat.one",
        name="chat",
        # "created" only with notifyOnUserSpecificProperties=true, which needs a user (delegated) context.
        patterns=("chats/{chat}",),
        change_types=frozenset({"updated"}),
        permission="Chat.ReadBasic.All",
    ),
    _teams(
        key="chat.app",
        name="chat",
        patterns=("appCatalogs/teamsApps/{app}/installedToChats",),
        change_types=frozenset({"created", "updated"}),
        permission="Chat.ReadBasic.WhereInstalled",
        models=_MODEL_B,
    ),
    _teams(
        key="channel.all",
        name="channel",
        patterns=("teams/getAllChannels",),
        change_types=frozenset(CHANGE_TYPES),
        permission="Channel.ReadBasic.All",
    ),
    _teams(
        key="channel",
        name="channel",
        patterns=("teams/{team}/channels",),
        change_types=frozenset(CHANGE_TYPES),
        permission="Channel.ReadBasic.All",
        delegated_paths=("teams/{team}/channels",),
    ),
    _teams(
        key="team",
        name="team",
        patterns=("teams",),
        change_types=frozenset(CHANGE_TYPES),
        permission="Team.ReadBasic.All",
    ),
    _teams(
        key="team.one",
        name="team",
        patterns=("teams/{team}",),
        change_types=frozenset({"updated", "deleted"}),
        permission="Team.ReadBasic.All",
    ),
    _teams(
        key="conversationMember.team",
        name="conversationMember",
        patterns=("teams/{team}/members",),
        change_types=frozenset(CHANGE_TYPES),
        permission="TeamMember.Read.All",
        field_types=_MEMBER_FIELDS,
        owner_columns=_MEMBER_OWNERS,
        scope_owners=(ScopeOwner("team_id", "{team}"),),
    ),
    _teams(
        key="conversationMember.allTeams",
        name="conversationMember",
        patterns=("teams/getAllMembers",),
        change_types=frozenset(CHANGE_TYPES),
        permission="TeamMember.Read.All",
        models=_MODELS_AB,
        field_types=_MEMBER_FIELDS,
        owner_columns=_MEMBER_OWNERS,
    ),
    _teams(
        key="conversationMember.channel",
        name="conversationMember",
        # Private and shared channels; teams/getAllChannels/getAllMembers is beta only (not in v1.0).
        patterns=("teams/{team}/channels/getAllMembers",),
        change_types=frozenset(CHANGE_TYPES),
        permission="ChannelMember.Read.All",
        field_types=_MEMBER_FIELDS,
        owner_columns=_MEMBER_OWNERS,
        scope_owners=(ScopeOwner("team_id", "{team}"),),
    ),
    _teams(
        key="conversationMember.chat",
        name="conversationMember",
        patterns=("chats/{chat}/members",),
        change_types=frozenset({"created", "deleted"}),
        permission="ChatMember.Read.All",
        field_types=_MEMBER_FIELDS,
        owner_columns=_MEMBER_OWNERS,
        scope_owners=(ScopeOwner("chat_id", "{chat}"),),
    ),
    _teams(
        key="conversationMember.allChats",
        name="conversationMember",
        patterns=("chats/getAllMembers",),
        change_types=frozenset({"created", "deleted"}),
        permission="ChatMember.Read.All",
        models=_MODELS_AB,
        field_types=_MEMBER_FIELDS,
        owner_columns=_MEMBER_OWNERS,
    ),
    _teams(
        key="conversationMember.app",
        name="conversationMember",
        patterns=("appCatalogs/teamsApps/{app}/installedToChats/getAllMembers",),
        change_types=frozenset({"created", "updated"}),
        permission="ChatMember.Read.WhereInstalled",
        models=_MODEL_B,
    ),
    ResourceType(
        key="callRecord",
        name="callRecord",
        patterns=("communications/callRecords",),
        change_types=frozenset({"created", "updated"}),
        max_lifetime=_minutes(4_230),
        max_lifetime_rich=None,
        permission="CallRecords.Read.All",
        quota=Quota(per_tenant=100),
        app_only=True,  # https://learn.microsoft.com/en-us/graph/changenotifications-for-callrecords
        # https://learn.microsoft.com/en-us/graph/api/resources/callrecords-callrecord
        field_types=(("version", "integer"), ("modalities", "json"), ("organizer_v2", "json"), ("sessions", "json"),
                     ("participants_v2", "json")),
    ),
    _teams(
        key="callRecording",
        name="callRecording",
        patterns=(
            "communications/onlineMeetings/getAllRecordings",
            "communications/onlineMeetings/{meeting}/recordings",
            "users/{user}/onlineMeetings/getAllRecordings",
        ),
        change_types=frozenset({"created"}),  # "a recording becomes available": our reading
        permission="OnlineMeetingRecording.Read.All",  # Graph's permission reference for the resource
    ),
    _teams(
        key="callTranscript",
        name="callTranscript",
        patterns=(
            "communications/onlineMeetings/getAllTranscripts",
            "communications/onlineMeetings/{meeting}/transcripts",
        ),
        change_types=frozenset({"created"}),  # "a transcript becomes available": our reading
        permission="OnlineMeetingTranscript.Read.All",  # Graph's permission reference for the resource
    ),
    ResourceType(
        key="presence",
        name="presence",
        patterns=("communications/presences/{user}", "communications/presences"),  # the latter with $filter
        change_types=frozenset({"updated"}),
        max_lifetime=_minutes(60),
        max_lifetime_rich=_minutes(60),
        permission="Presence.Read.All",
        # Older pages required rich notifications; https://learn.microsoft.com/graph/changenotifications-for-presence
        # now shows basic ones too, and syncer reads the presence by id either way.
        delegated_only=True,  # Graph: no application permission
        # At most 650 users per subscription: presence_ids_problem (below); one per signed-in user: spec validation.
        owner_columns=(("id", "user_id", "text"),),  # a presence's id is its user's
    ),
    # --- security and print --------------------------------------------------------------------
    ResourceType(
        key="alert",
        name="alert",
        patterns=("security/alerts", "security/alerts/{alert}"),  # the former with ?$filter=
        change_types=frozenset({"created", "updated"}),  # our reading: alerts are raised and updated
        max_lifetime=_minutes(43_200),
        max_lifetime_rich=None,
        permission="SecurityEvents.ReadWrite.All",
        # https://learn.microsoft.com/en-us/graph/api/resources/alert
        field_types=(("riskScore", "text"), ("userStates", "json"), ("hostStates", "json"), ("vendorInformation", "json"),
                     ("comments", "json"), ("tags", "json"), ("confidence", "integer")),
    ),
    ResourceType(
        key="printer",
        name="printer",
        patterns=("print/printers/{printer}/jobs",),
        # jobFetchable: "updated" with the isFetchable filter, both required
        # (https://learn.microsoft.com/en-us/graph/universal-print-webhook-notifications).
        change_types=frozenset({"updated"}),
        max_lifetime=_minutes(4_230),
        max_lifetime_rich=None,
        permission="Printer.Read.All",  # Graph's permission reference for the resource
        app_only=True,
        query_options="$filter = isFetchable eq true",
        read_permissions=("PrintJob.Read.All",),  # https://learn.microsoft.com/en-us/graph/api/printer-list-jobs
        # https://learn.microsoft.com/en-us/graph/api/resources/printjob
        field_types=(("isFetchable", "boolean"), ("status", "json"), ("documents", "json"), ("createdBy", "json"),
                     ("configuration", "json")),
    ),
    ResourceType(
        key="printTaskDefinition",
        name="printTaskDefinition",
        patterns=("print/taskDefinitions/{definition}/tasks",),
        change_types=frozenset({"created"}),  # jobStarted
        max_lifetime=_minutes(4_230),
        max_lifetime_rich=None,
        permission="PrintTaskDefinition.ReadWrite.All",  # Graph's permission reference for the resource
        app_only=True,
        field_types=(("status", "json"), ("definition", "json")),  # https://learn.microsoft.com/en-us/graph/api/resources/printtask
    ),
)

BY_KEY: dict[str, ResourceType] = {rt.key: rt for rt in CATALOGUE}

_PLACEHOLDER = re.compile(r"^\{(\w+)\}$")
# OData key syntax: teams('abc')/channels('19:x@thread')/messages -> teams/abc/channels/19:x@thread/messages
_ODATA_KEY = re.compile(r"\(\s*'((?:[^']|'')*)'\s*\)")


def split_resource(path: str) -> tuple[str, str]:
    """Split a resource into its normalised path (no leading ``/``, key syntax as segments) and its query."""
    path = path.strip()
    query = ""
    if "?" in path:
        path, query = path.split("?", 1)
    path = _ODATA_KEY.sub(lambda m: "/" + m.group(1).replace("''", "'"), path)
    return path.strip("/"), query


def _match_pattern(pattern: str, segments: list[str]) -> dict[str, str] | None:
    parts = pattern.split("/")
    if len(parts) != len(segments):
        return None
    params: dict[str, str] = {}
    for part, segment in zip(parts, segments, strict=True):
        placeholder = _PLACEHOLDER.match(part)
        if placeholder:
            if not segment:
                return None
            params[placeholder.group(1)] = unquote(segment)
        elif part.lower() != segment.lower():
            return None
    return params


def _segments(normalised: str) -> list[str]:
    """Path segments, ``me`` read as ``users/me``, a site named by path (``sites/{host}:/sites/ops:/lists/x``)
    kept as one segment (https://learn.microsoft.com/en-us/graph/api/site-getbypath)."""
    segments = normalised.split("/")
    if segments[0].lower() == "me":
        segments = ["users", "me", *segments[1:]]
    if len(segments) > 1 and segments[0].lower() == "sites" and segments[1].endswith(":"):
        end = next((i for i in range(2, len(segments)) if segments[i].endswith(":")), len(segments) - 1)
        segments = [segments[0], "/".join(segments[1 : end + 1]), *segments[end + 1 :]]
    return segments


def match_resource(path: str) -> tuple[ResourceType, dict[str, str]] | None:
    """The resource type a subscription *path* belongs to and the values of its placeholders.

    Accepts a leading ``/``, a query string (ignored), OData key syntax and any letter case, like
    Graph. ``me/...`` is read as ``users/me/...``. When two patterns match (``teams/getAllMessages``
    and ``teams/{team}``) the one with more literal segments wins.
    """
    normalised, _query = split_resource(path)
    if not normalised:
        return None
    segments = _segments(normalised)
    best: tuple[int, ResourceType, dict[str, str]] | None = None
    for rt in CATALOGUE:
        for pattern in rt.patterns:
            params = _match_pattern(pattern, segments)
            if params is None:
                continue
            literals = len(segments) - len(params)
            if best is None or literals > best[0]:
                best = (literals, rt, params)
    return (best[1], best[2]) if best else None


def matching_pattern(rt: ResourceType, path: str) -> str | None:
    """Which of *rt*'s patterns *path* matches (the one :func:`match_resource` chose)."""
    normalised, _query = split_resource(path)
    segments = _segments(normalised)
    for pattern in rt.patterns:
        if _match_pattern(pattern, segments) is not None:
            return pattern
    return None


def delta_path_for(path: str) -> str | None:
    """The delta request path for a concrete subscription *path*, placeholders filled from it.

    Placeholders the path does not fix stay in place for the caller (``{folder}`` for a whole
    mailbox). None when the resource has no delta in Graph (sync = "fetch").
    """
    matched = match_resource(path)
    if matched is None:
        return None
    rt, params = matched
    pattern = matching_pattern(rt, path)
    if pattern is None or not rt.delta_paths:
        return None
    template = rt.delta_paths[rt.patterns.index(pattern)]
    if template is None:
        return None
    return re.sub(r"\{(\w+)\}", lambda m: params.get(m.group(1), m.group(0)), template)


def placeholders(pattern: str) -> tuple[str, ...]:
    """The placeholder names of a pattern, in order: ``users/{user}/messages`` -> ``("user",)``."""
    return tuple(re.findall(r"\{(\w+)\}", pattern))


PRESENCE_MAX_IDS = 650
"""Users one presence subscription may name (https://learn.microsoft.com/en-us/graph/changenotifications-for-presence)."""


def presence_ids(resource: str) -> list[str] | None:
    """The user ids a presence resource names (``communications/presences/{id}`` or ``$filter=id in ('a','b')``),
    in order; None when it has no such filter."""
    path, query = split_resource(resource)
    parts = path.split("/")
    if len(parts) == 3:
        return [unquote(parts[2])]
    found = re.search(r"\$filter=\s*id\s+in\s*\((.*)\)\s*$", unquote(query), re.IGNORECASE | re.DOTALL)
    return None if found is None else re.findall(r"'([^']*)'", found.group(1))


def presence_ids_problem(name: str, resource: str) -> tuple[str, str] | None:
    """For a presence resource, (what Graph expects, what was found) when its users are missing or too many."""
    if name != "presence":
        return None
    ids = presence_ids(resource)
    if ids is None:
        return ("communications/presences/{id} or communications/presences?$filter=id in ('{id}', ...)",
                f"'{resource}' (no $filter=id in (...))")
    if not ids:
        return "at least one user id in $filter=id in (...)", f"'{resource}'"
    if len(ids) > PRESENCE_MAX_IDS:
        return f"at most {PRESENCE_MAX_IDS} user ids per presence subscription", f"{len(ids)} ids"
    return None
