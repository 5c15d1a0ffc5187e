"""The resource families the emulator serves, and the registry the shared core reads.

A family is one corner of Graph: its resource types, the Flask views serving their paths, which of its paths
accept subscriptions and how Graph words their notifications, and how the admin seed fills it
(:class:`~syncer.emulator.resources.Family`). The shared core -- app, store, delta, subscriptions, delivery,
identity, seed -- never names a family: it reads the tuples below. See docs/emulator-core.md, "Adding a resource
family".
"""

from __future__ import annotations

from syncer.emulator.families import (
    callrecords,
    conversations,
    directory,
    drive,
    mailbox,
    presence,
    printing,
    security,
    sharepoint,
    teams,
)
from syncer.emulator.resources import Family, ResourceType, Seeder
from syncer.emulator.subscription_model import SubscribableResource

#: Every family, in the order their blueprints register and their seeders run.
FAMILIES: tuple[Family, ...] = (directory.FAMILY, mailbox.OUTLOOK, mailbox.TODO, drive.FAMILY, sharepoint.FAMILY,
                                  security.FAMILY, callrecords.FAMILY, printing.FAMILY, teams.FAMILY,
                                  presence.FAMILY, conversations.FAMILY)

RESOURCE_TYPES: dict[str, ResourceType] = {r.name: r for f in FAMILIES for r in f.resource_types}
#: Subscription path shapes, matched in order.
SUBSCRIBABLE: tuple[SubscribableResource, ...] = tuple(s for f in FAMILIES for s in f.subscribable)
#: Admin seed fields that create items for each content user, run in this order.
PER_USER_SEEDERS: dict[str, Seeder] = {name: fn for f in FAMILIES for name, fn in f.seeders.items()}
#: First segments below /users/{id}/ that address a mailbox (the per-mailbox concurrency limit counts these).
MAILBOX_SEGMENTS: frozenset[str] = frozenset().union(*(f.mailbox_segments for f in FAMILIES))

#: Application permissions whose names do not end in ".All" (the other names without it are delegated-only).
_APP_ROLES_WITHOUT_ALL = frozenset({"Mail.Read", "Mail.ReadWrite", "Calendars.Read", "Calendars.ReadWrite",
                                    "Contacts.Read", "Contacts.ReadWrite", "Group.Create",
                                    "Mail.Send", "Team.Create", "Channel.Create", "Chat.Create"})


def all_roles() -> frozenset[str]:
    """Every application permission some resource type accepts."""
    roles: set[str] = set()
    for family in FAMILIES:
        roles |= family.extra_roles
        for rtype in family.resource_types:
            roles |= rtype.read_roles | rtype.write_roles
    # Delegated-only scopes never appear in an app-only token's roles.
    return frozenset(r for r in roles if r.endswith(".All") or r in _APP_ROLES_WITHOUT_ALL)


def all_delegated_scopes() -> frozenset[str]:
    """Every delegated permission some resource type accepts, and the sign-in basics (User.Read: one's own profile)."""
    scopes: set[str] = {"User.Read", "User.ReadWrite", "User.ReadBasic.All"}
    for family in FAMILIES:
        for rtype in family.resource_types:
            scopes |= rtype.delegated_read | rtype.delegated_write
    return frozenset(scopes)
