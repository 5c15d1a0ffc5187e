"""The Outlook resource types of a mailbox: mail folders, messages, events, contact folders and contacts.

Property lists follow the resource pages (https://learn.microsoft.com/graph/api/resources/message,
.../event, .../contact, .../mailfolder, .../contactfolder). Page sizes marked "guess" are not documented.
"""

from __future__ import annotations

from syncer.emulator.resources import DeltaSpec, ResourceType

# Well-known Outlook folder names (case-insensitive aliases of a folder id) [DOC: mailFolder resource].
WELL_KNOWN_MAIL_FOLDERS = ("inbox", "drafts", "sentitems", "deleteditems", "archive", "junkemail", "outbox")

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
    delegated_read=frozenset({"Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic"}),
    delegated_write=_MAIL_WRITE,
    personal_accounts=True,
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
    delegated_read=frozenset({"Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic"}),
    delegated_write=_MAIL_WRITE,
    personal_accounts=True,
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
    delta=DeltaSpec(default_page=10, max_page=1000, removed_has_type=True, date_filter="receivedDateTime"),
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
    delegated_read=frozenset({"Calendars.Read", "Calendars.ReadWrite", "Calendars.ReadBasic"}),
    delegated_write=frozenset({"Calendars.ReadWrite"}),
    personal_accounts=True,
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
    delegated_read=frozenset({"Contacts.Read", "Contacts.ReadWrite"}),
    delegated_write=frozenset({"Contacts.ReadWrite"}),
    personal_accounts=True,
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
    delegated_read=frozenset({"Contacts.Read", "Contacts.ReadWrite"}),
    delegated_write=frozenset({"Contacts.ReadWrite"}),
    personal_accounts=True,
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
