"""Declarative table of the Graph resource types the emulator serves.

One :class:`ResourceType` entry says everything type-specific: where its collection lives, which
application permissions read and write it, which properties exist (for ``$select`` and for rejecting
unknown properties in POST/PATCH), how delta pages it, and how a change notification names it. The store,
the generic views and EMU-B's subscription code read these entries; adding a resource type is adding an
entry (plus, at most, a parent resolver in :mod:`syncer.emulator.api` if it hangs under a new container).

Page sizes marked "guess" are not documented by Microsoft; they are what traces people posted show.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Well-known Outlook folder names (case-insensitive aliases of a folder id) [DOC: mailFolder resource].
WELL_KNOWN_MAIL_FOLDERS = ("inbox", "drafts", "sentitems", "deleteditems", "archive", "junkemail", "outbox")


@dataclass(frozen=True)
class DeltaSpec:
    """How a resource's delta query pages."""

    #: Path relative to the collection's parent that serves delta, e.g. "messages/delta"
    #: is implied; events use "calendarView/delta" instead of "events/delta".
    default_page: int
    max_page: int
    #: Outlook adds @odata.type to @removed items [DOC].
    removed_has_type: bool = False
    #: `$top` is accepted as a page size (Outlook, drive, To Do) [DOC]; directory rejects `$top`.
    accepts_top: bool = True


@dataclass(frozen=True)
class ResourceType:
    """One Graph entity type and how the emulator serves it."""

    name: str
    odata_type: str
    #: Pascal-cased type used in notification resourceData (Graph writes "#Microsoft.Graph.User").
    notification_type: str
    #: Canonical collection path; `{parent}` placeholders name the parent's resource type.
    collection: str
    family: str  # "directory" | "outlook" | "drive" | "todo"
    read_roles: frozenset[str]
    write_roles: frozenset[str]
    properties: tuple[str, ...]
    read_only: frozenset[str] = frozenset({"id"})
    required_on_create: tuple[str, ...] = ()
    #: Properties returned when there is no $select (None = all).
    default_select: tuple[str, ...] | None = None
    #: Never returned (write-only, e.g. passwordProfile).
    write_only: frozenset[str] = frozenset()
    delta: DeltaSpec | None = None
    list_default_page: int = 100
    list_max_page: int = 999
    #: Format of the notification `resource` (placeholders: parent names and {id}).
    notification_resource: str = ""
    #: Extra collection paths (with placeholders) the item is also "in" for subscription matching.
    alias_collections: tuple[str, ...] = ()
    #: Directory objects go to deletedItems first (@removed reason "changed") [DOC].
    soft_delete: bool = False
    #: Relationship properties that delta reports as `<name>@delta` [DOC].
    delta_links: tuple[str, ...] = ()
    #: Outlook-style `@odata.etag`/changeKey on every item.
    etag: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def parents(self) -> tuple[str, ...]:
        """Placeholder names in the collection path, outermost first."""
        return tuple(seg[1:-1] for seg in self.collection.split("/") if seg.startswith("{"))

    def canonical(self, name: str) -> str | None:
        """The declared spelling of property *name* (Graph matches property names case-insensitively)."""
        return _lower_index(self).get(name.lower())


_INDEX_CACHE: dict[str, dict[str, str]] = {}


def _lower_index(rtype: ResourceType) -> dict[str, str]:
    index = _INDEX_CACHE.get(rtype.name)
    if index is None:
        index = {p.lower(): p for p in (*rtype.properties, *rtype.delta_links)}
        _INDEX_CACHE[rtype.name] = index
    return index


_DIR_READ = frozenset({"Directory.Read.All", "Directory.ReadWrite.All"})
_DIR_WRITE = frozenset({"Directory.ReadWrite.All"})

USER = ResourceType(
    name="user",
    odata_type="#microsoft.graph.user",
    notification_type="#Microsoft.Graph.User",
    collection="users",
    family="directory",
    read_roles=frozenset({"User.Read.All", "User.ReadWrite.All"}) | _DIR_READ,
    write_roles=frozenset({"User.ReadWrite.All"}) | _DIR_WRITE,
    properties=(
        "id", "accountEnabled", "businessPhones", "city", "companyName", "country", "createdDateTime",
        "deletedDateTime", "department", "displayName", "employeeId", "givenName", "jobTitle", "mail",
        "mailNickname", "mobilePhone", "officeLocation", "otherMails", "passwordProfile", "postalCode",
        "preferredLanguage", "proxyAddresses", "state", "streetAddress", "surname", "usageLocation",
        "userPrincipalName", "userType",
    ),
    read_only=frozenset({"id", "createdDateTime", "deletedDateTime", "proxyAddresses"}),
    required_on_create=("accountEnabled", "displayName", "mailNickname", "userPrincipalName", "passwordProfile"),
    # Graph's default user projection [DOC: user resource "default properties"].
    default_select=(
        "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone", "officeLocation",
        "preferredLanguage", "surname", "userPrincipalName", "id",
    ),
    write_only=frozenset({"passwordProfile"}),
    # users delta: default page 100 [guess from traces], maxpagesize up to 999 [DOC list limit].
    delta=DeltaSpec(default_page=100, max_page=999, accepts_top=False),
    notification_resource="Users/{id}",
    soft_delete=True,
)

GROUP = ResourceType(
    name="group",
    odata_type="#microsoft.graph.group",
    notification_type="#Microsoft.Graph.Group",
    collection="groups",
    family="directory",
    read_roles=frozenset({"Group.Read.All", "Group.ReadWrite.All", "GroupMember.Read.All"}) | _DIR_READ,
    write_roles=frozenset({"Group.ReadWrite.All", "Group.Create"}) | _DIR_WRITE,
    properties=(
        "id", "classification", "createdDateTime", "deletedDateTime", "description", "displayName",
        "groupTypes", "mail", "mailEnabled", "mailNickname", "securityEnabled", "visibility",
        "proxyAddresses", "renewedDateTime",
    ),
    read_only=frozenset({"id", "createdDateTime", "deletedDateTime", "mail", "proxyAddresses", "renewedDateTime"}),
    required_on_create=("displayName", "mailEnabled", "mailNickname", "securityEnabled"),
    delta=DeltaSpec(default_page=100, max_page=999, accepts_top=False),
    notification_resource="Groups/{id}",
    soft_delete=True,  # only Microsoft 365 ("Unified") groups; security groups are hard-deleted
    delta_links=("members",),
)

#: Permissions for membership writes ($ref add/remove) [DOC: group-post-members].
GROUP_MEMBER_WRITE_ROLES = frozenset({"GroupMember.ReadWrite.All", "Group.ReadWrite.All", "Directory.ReadWrite.All"})

_MAIL_READ = frozenset({"Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic.All", "Mail.ReadBasic"})
_MAIL_WRITE = frozenset({"Mail.ReadWrite"})

MAIL_FOLDER = ResourceType(
    name="mailFolder",
    odata_type="#microsoft.graph.mailFolder",
    notification_type="#Microsoft.Graph.MailFolder",
    collection="users/{user}/mailFolders",
    family="outlook",
    read_roles=_MAIL_READ,
    write_roles=_MAIL_WRITE,
    properties=(
        "id", "displayName", "parentFolderId", "childFolderCount", "unreadItemCount", "totalItemCount",
        "isHidden",
    ),
    read_only=frozenset({"id", "parentFolderId", "childFolderCount", "unreadItemCount", "totalItemCount"}),
    required_on_create=("displayName",),
    delta=DeltaSpec(default_page=10, max_page=1000, removed_has_type=True),  # Outlook default 10 [guess]
    list_default_page=10,
    list_max_page=1000,
    notification_resource="Users/{user}/MailFolders/{id}",
    etag=False,
)

MESSAGE = ResourceType(
    name="message",
    odata_type="#microsoft.graph.message",
    notification_type="#Microsoft.Graph.Message",
    collection="users/{user}/mailFolders/{mailFolder}/messages",
    family="outlook",
    read_roles=_MAIL_READ,
    write_roles=_MAIL_WRITE,
    properties=(
        "id", "bccRecipients", "body", "bodyPreview", "categories", "ccRecipients", "changeKey",
        "conversationId", "conversationIndex", "createdDateTime", "flag", "from", "hasAttachments",
        "importance", "inferenceClassification", "internetMessageHeaders", "internetMessageId",
        "isDeliveryReceiptRequested", "isDraft", "isRead", "isReadReceiptRequested", "lastModifiedDateTime",
        "parentFolderId", "receivedDateTime", "replyTo", "sender", "sentDateTime", "subject", "toRecipients",
        "uniqueBody", "webLink",
    ),
    read_only=frozenset({
        "id", "changeKey", "conversationId", "conversationIndex", "createdDateTime", "hasAttachments",
        "lastModifiedDateTime", "parentFolderId", "webLink", "bodyPreview", "uniqueBody", "isDraft",
        "receivedDateTime", "sentDateTime",
    }),
    delta=DeltaSpec(default_page=10, max_page=1000, removed_has_type=True),
    list_default_page=10,
    list_max_page=1000,
    notification_resource="Users/{user}/Messages/{id}",
    alias_collections=("users/{user}/messages",),
    etag=True,
)

_CAL_READ = frozenset({"Calendars.Read", "Calendars.ReadWrite", "Calendars.ReadBasic"})
EVENT = ResourceType(
    name="event",
    odata_type="#microsoft.graph.event",
    notification_type="#Microsoft.Graph.Event",
    collection="users/{user}/events",
    family="outlook",
    read_roles=_CAL_READ,
    write_roles=frozenset({"Calendars.ReadWrite"}),
    properties=(
        "id", "attendees", "body", "bodyPreview", "categories", "changeKey", "createdDateTime", "end",
        "hasAttachments", "iCalUId", "importance", "isAllDay", "isCancelled", "isOnlineMeeting",
        "isOrganizer", "isReminderOn", "lastModifiedDateTime", "location", "locations", "onlineMeeting",
        "organizer", "originalEndTimeZone", "originalStartTimeZone", "recurrence", "reminderMinutesBeforeStart",
        "responseRequested", "responseStatus", "sensitivity", "seriesMasterId", "showAs", "start", "subject",
        "type", "webLink",
    ),
    read_only=frozenset({
        "id", "changeKey", "createdDateTime", "lastModifiedDateTime", "iCalUId", "bodyPreview", "webLink",
        "hasAttachments", "isOrganizer", "type", "seriesMasterId", "organizer", "responseStatus",
        "originalEndTimeZone", "originalStartTimeZone",
    }),
    required_on_create=("start", "end"),
    # calendarView delta: default ~10 per page [guess]; odata.maxpagesize honoured.
    delta=DeltaSpec(default_page=10, max_page=1000, removed_has_type=True, accepts_top=False),
    list_default_page=10,
    list_max_page=1000,
    notification_resource="Users/{user}/Events/{id}",
    alias_collections=("users/{user}/calendar/events",),
    etag=True,
)

_CONTACTS_READ = frozenset({"Contacts.Read", "Contacts.ReadWrite"})
CONTACT_FOLDER = ResourceType(
    name="contactFolder",
    odata_type="#microsoft.graph.contactFolder",
    notification_type="#Microsoft.Graph.ContactFolder",
    collection="users/{user}/contactFolders",
    family="outlook",
    read_roles=_CONTACTS_READ,
    write_roles=frozenset({"Contacts.ReadWrite"}),
    properties=("id", "displayName", "parentFolderId"),
    read_only=frozenset({"id", "parentFolderId"}),
    required_on_create=("displayName",),
    delta=DeltaSpec(default_page=10, max_page=1000, removed_has_type=True),
    list_default_page=10,
    list_max_page=1000,
    notification_resource="Users/{user}/ContactFolders/{id}",
)

CONTACT = ResourceType(
    name="contact",
    odata_type="#microsoft.graph.contact",
    notification_type="#Microsoft.Graph.Contact",
    collection="users/{user}/contactFolders/{contactFolder}/contacts",
    family="outlook",
    read_roles=_CONTACTS_READ,
    write_roles=frozenset({"Contacts.ReadWrite"}),
    properties=(
        "id", "assistantName", "birthday", "businessAddress", "businessHomePage", "businessPhones",
        "categories", "changeKey", "children", "companyName", "createdDateTime", "department", "displayName",
        "emailAddresses", "fileAs", "generation", "givenName", "homeAddress", "homePhones", "imAddresses",
        "initials", "jobTitle", "lastModifiedDateTime", "manager", "middleName", "mobilePhone", "nickName",
        "officeLocation", "otherAddress", "parentFolderId", "personalNotes", "profession", "spouseName",
        "surname", "title",
    ),
    read_only=frozenset({"id", "changeKey", "createdDateTime", "lastModifiedDateTime", "parentFolderId"}),
    delta=DeltaSpec(default_page=10, max_page=1000, removed_has_type=True),
    list_default_page=10,
    list_max_page=1000,
    notification_resource="Users/{user}/Contacts/{id}",
    alias_collections=("users/{user}/contacts",),
    etag=True,
)

_FILES_READ = frozenset({"Files.Read.All", "Files.ReadWrite.All", "Sites.Read.All", "Sites.ReadWrite.All"})
DRIVE_ITEM = ResourceType(
    name="driveItem",
    odata_type="#microsoft.graph.driveItem",
    notification_type="#Microsoft.Graph.DriveItem",
    collection="drives/{drive}/items",
    family="drive",
    read_roles=_FILES_READ,
    write_roles=frozenset({"Files.ReadWrite.All", "Sites.ReadWrite.All"}),
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
)

_TASKS_READ = frozenset({"Tasks.Read.All", "Tasks.ReadWrite.All", "Tasks.Read", "Tasks.ReadWrite"})
TODO_LIST = ResourceType(
    name="todoTaskList",
    odata_type="#microsoft.graph.todoTaskList",
    notification_type="#Microsoft.Graph.todoTaskList",
    collection="users/{user}/todo/lists",
    family="todo",
    read_roles=_TASKS_READ,
    write_roles=frozenset({"Tasks.ReadWrite.All", "Tasks.ReadWrite"}),
    properties=("id", "displayName", "isOwner", "isShared", "wellknownListName"),
    read_only=frozenset({"id", "isOwner", "isShared", "wellknownListName"}),
    required_on_create=("displayName",),
    delta=DeltaSpec(default_page=10, max_page=1000, removed_has_type=True),
    list_default_page=10,
    list_max_page=1000,
    notification_resource="Users/{user}/todo/lists/{id}",
    etag=True,
)

TODO_TASK = ResourceType(
    name="todoTask",
    odata_type="#microsoft.graph.todoTask",
    notification_type="#Microsoft.Graph.todoTask",
    collection="users/{user}/todo/lists/{todoTaskList}/tasks",
    family="todo",
    read_roles=_TASKS_READ,
    write_roles=frozenset({"Tasks.ReadWrite.All", "Tasks.ReadWrite"}),
    properties=(
        "id", "body", "bodyLastModifiedDateTime", "categories", "completedDateTime", "createdDateTime",
        "dueDateTime", "hasAttachments", "importance", "isReminderOn", "lastModifiedDateTime", "recurrence",
        "reminderDateTime", "startDateTime", "status", "title",
    ),
    read_only=frozenset({"id", "createdDateTime", "lastModifiedDateTime", "bodyLastModifiedDateTime", "hasAttachments"}),
    required_on_create=("title",),
    delta=DeltaSpec(default_page=10, max_page=1000, removed_has_type=True),
    list_default_page=10,
    list_max_page=1000,
    # [UNCONFIRMED] Graph's exact casing for To Do notification resources.
    notification_resource="Users/{user}/todo/lists/{todoTaskList}/tasks/{id}",
    etag=True,
)

RESOURCE_TYPES: dict[str, ResourceType] = {
    r.name: r
    for r in (USER, GROUP, MAIL_FOLDER, MESSAGE, EVENT, CONTACT_FOLDER, CONTACT, DRIVE_ITEM, TODO_LIST, TODO_TASK)
}


def all_roles() -> frozenset[str]:
    """Every application permission some resource type accepts."""
    roles: set[str] = set(GROUP_MEMBER_WRITE_ROLES)
    for rtype in RESOURCE_TYPES.values():
        roles |= rtype.read_roles | rtype.write_roles
    # Delegated-only scopes never appear in an app-only token's roles.
    return frozenset(r for r in roles if r.endswith(".All") or r in {"Mail.Read", "Mail.ReadWrite",
                     "Calendars.Read", "Calendars.ReadWrite", "Contacts.Read", "Contacts.ReadWrite", "Group.Create"})


def collection_for_subscription(resource: str) -> tuple[ResourceType, str] | None:
    """Map a subscription `resource` to (type, normalised collection path), or None if no type serves it.

    EMU-B uses this to pick permissions and lifetimes. Recognised shapes (case-insensitive, leading "/"
    and query string ignored): users, users/{id}, groups, groups/{id}, groups/{id}/members,
    users/{id}/messages, users/{id}/mailFolders/{id}/messages, users/{id}/events,
    users/{id}/contacts, users/{id}/contactFolders/{id}/contacts, drives/{id}/root, users/{id}/drive/root,
    users/{id}/todo/lists/{id}/tasks. Paths starting with "me/" map like "users/{id}/..." (delegated only).
    """
    path = resource.split("?", 1)[0].strip("/")
    segs = [s for s in path.split("/") if s]
    low = [s.lower() for s in segs]
    if low and low[0] == "me":
        low = ["users", "me", *low[1:]]
    n = len(low)
    norm = "/".join(low)
    if low == ["users"] or (n == 2 and low[0] == "users"):
        return USER, norm
    if low == ["groups"] or (n == 2 and low[0] == "groups") or (n == 3 and low[0] == "groups" and low[2] == "members"):
        return GROUP, norm
    if n >= 3 and low[0] == "users":
        tail = low[2:]
        if tail == ["messages"] or (len(tail) == 3 and tail[0] == "mailfolders" and tail[2] == "messages"):
            return MESSAGE, norm
        if tail in (["events"], ["calendar", "events"]):
            return EVENT, norm
        if tail == ["contacts"] or (len(tail) == 3 and tail[0] == "contactfolders" and tail[2] == "contacts"):
            return CONTACT, norm
        if tail == ["drive", "root"]:
            return DRIVE_ITEM, norm
        if len(tail) == 4 and tail[:2] == ["todo", "lists"] and tail[3] == "tasks":
            return TODO_TASK, norm
    if n == 3 and low[0] == "drives" and low[2] == "root":
        return DRIVE_ITEM, norm
    return None
