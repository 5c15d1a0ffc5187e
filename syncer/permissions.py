"""What a delegated account needs granted for each declared resource type: Graph's delegated permissions.

``syncer.resources`` names the *application* permission of each type; a signed-in user's token carries
*delegated* permissions (the ``scp`` claim) instead, and Graph's table has a column for work or school
accounts and one for personal Microsoft accounts
(https://learn.microsoft.com/graph/api/subscription-post-subscriptions#permissions, and the change
notifications overview https://learn.microsoft.com/graph/change-notifications-overview#permissions).
``syncer doctor`` compares a token's ``scp`` with these; spec validation refuses the types a personal
account cannot have at all (``syncer.spec.model.PERSONAL_ACCOUNT_TYPES``).

Pure data and lookups, no I/O. A resource-type key missing here has no delegated permission we know of:
the doctor says so rather than guessing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from syncer.resources import ResourceType


@dataclass(frozen=True)
class DelegatedPermission:
    """The delegated permissions that let a signed-in user subscribe to and read one resource type.

    ``work`` / ``personal``: any one of these suffices (least privileged first); empty = Graph offers the
    type no delegated permission for that kind of account.
    """

    work: tuple[str, ...]
    personal: tuple[str, ...] = ()

    def accepted(self, *, personal: bool) -> tuple[str, ...]:
        return self.personal if personal else self.work


_MAIL = ("Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite")
_CALENDARS = ("Calendars.Read", "Calendars.ReadWrite")
_CONTACTS = ("Contacts.Read", "Contacts.ReadWrite")
# To Do subscriptions: Tasks.ReadWrite for both kinds of account
# (https://learn.microsoft.com/graph/api/subscription-post-subscriptions#permissions, todoTask row).
_TASKS = ("Tasks.ReadWrite",)

#: Resource-type key (``syncer.resources``) -> its delegated permissions.
BY_KEY: dict[str, DelegatedPermission] = {
    "user": DelegatedPermission(("User.Read.All", "User.ReadWrite.All", "Directory.Read.All")),
    "group": DelegatedPermission(("Group.Read.All", "Group.ReadWrite.All", "Directory.Read.All")),
    "conversation": DelegatedPermission(("Group.Read.All", "Group.ReadWrite.All")),
    "message": DelegatedPermission(_MAIL, _MAIL),
    "event": DelegatedPermission(_CALENDARS, _CALENDARS),
    "contact": DelegatedPermission(_CONTACTS, _CONTACTS),
    "todoTask": DelegatedPermission(_TASKS, _TASKS),
    # OneDrive for Business: Files.ReadWrite.All; a personal OneDrive: Files.ReadWrite.
    "driveItem": DelegatedPermission(("Files.ReadWrite.All", "Sites.ReadWrite.All"), ("Files.ReadWrite", "Files.ReadWrite.All")),
    "list": DelegatedPermission(("Sites.ReadWrite.All",)),
    "alert": DelegatedPermission(("SecurityEvents.ReadWrite.All",)),
    "presence": DelegatedPermission(("Presence.Read.All",)),
    # Teams (https://learn.microsoft.com/graph/teams-change-notification-in-microsoft-teams-overview and the
    # per-resource pages): only the paths that name one team, channel or chat, or the user's own chats.
    "chatMessage.channel": DelegatedPermission(("ChannelMessage.Read.All",)),
    "chatMessage.chat": DelegatedPermission(("Chat.Read", "Chat.ReadWrite")),
    "chatMessage.user": DelegatedPermission(("Chat.Read", "Chat.ReadWrite")),
    "chat.one": DelegatedPermission(("Chat.ReadBasic", "Chat.Read", "Chat.ReadWrite")),
    "channel": DelegatedPermission(("Channel.ReadBasic.All",)),
    "team.one": DelegatedPermission(("Team.ReadBasic.All",)),
    "conversationMember.team": DelegatedPermission(("TeamMember.Read.All",)),
    "conversationMember.channel": DelegatedPermission(("ChannelMember.Read.All",)),
    "conversationMember.chat": DelegatedPermission(("ChatMember.Read", "ChatMember.ReadWrite")),
}

#: Delegated permissions only a tenant administrator may consent to
#: (https://learn.microsoft.com/graph/permissions-reference, "Admin consent required").
ADMIN_CONSENT = frozenset({
    "User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Group.Read.All", "Group.ReadWrite.All",
    "ChannelMessage.Read.All", "TeamMember.Read.All", "ChannelMember.Read.All", "SecurityEvents.ReadWrite.All",
})


@dataclass(frozen=True)
class Missing:
    """One declaration whose type the granted scopes do not cover."""

    declaration: str
    type_name: str
    wanted: tuple[str, ...]  # any one would do; empty: Graph has no delegated permission for this account

    @property
    def scope(self) -> str:
        """The least privileged permission to ask for."""
        return self.wanted[0] if self.wanted else ""


def needed(rt: ResourceType, *, personal: bool) -> tuple[str, ...] | None:
    """The delegated permissions that cover *rt* (any one), ``()`` when Graph has none for this kind of
    account, None when syncer does not know."""
    entry = BY_KEY.get(rt.key)
    return None if entry is None else entry.accepted(personal=personal)


def missing(
    declarations: Iterable[tuple[str, ResourceType]], granted: Iterable[str], *, personal: bool
) -> tuple[list[Missing], list[str]]:
    """The declarations (name, type) whose permission is not in *granted* (``scp``), and the names of those
    whose delegated permission syncer does not know."""
    held = {g.casefold() for g in granted}
    lacking: list[Missing] = []
    unknown: list[str] = []
    for name, rt in declarations:
        wanted = needed(rt, personal=personal)
        if wanted is None:
            unknown.append(name)
        elif not any(w.casefold() in held for w in wanted):
            lacking.append(Missing(name, rt.name, wanted))
    return lacking, unknown
