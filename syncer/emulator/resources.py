"""What a Graph resource type and a resource family are, as records the shared core reads.

One :class:`ResourceType` entry says everything type-specific: where its collection lives, which
application permissions read and write it, which properties exist (for ``$select`` and for rejecting
unknown properties in POST/PATCH), how delta pages it, and how a change notification names it. A
:class:`Family` groups the types of one corner of Graph with their views, subscription shapes and seeding.
The entries themselves live with their family (:mod:`syncer.emulator.families`); the store, delta, the
generic views and the subscription code read them without naming any family.

Page sizes marked "guess" are not documented by Microsoft; they are what traces people posted show.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Blueprint

    from syncer.emulator.changelog import Collection
    from syncer.emulator.state import EmulatorState
    from syncer.emulator.store import TenantStore
    from syncer.emulator.subscription_model import SubscribableResource

#: Extra collection paths an item's change is also "in" (subscription matching), given its tenant, collection and id.
EventCollections = Callable[["TenantStore", "Collection", str], list[str]]
#: Creates *count* items of one kind for one user id (admin seed; no notifications).
Seeder = Callable[["EmulatorState", "TenantStore", str, int], None]


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
    #: A date property delta's `$filter` may bound with `ge`/`gt` (messages: receivedDateTime
    #: [DOC: https://learn.microsoft.com/graph/delta-query-messages]); None = no such filter.
    date_filter: str | None = None


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
    #: Delegated permissions (a signed-in user's `scp`) that read / write it; empty = no delegated access.
    delegated_read: frozenset[str] = frozenset()
    delegated_write: frozenset[str] = frozenset()
    #: Graph serves it to personal Microsoft accounts (the "Delegated (personal Microsoft account)" column).
    personal_accounts: bool = False
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
    #: Items are findable by id alone through the tenant's index (users are found by id or UPN instead).
    index_by_id: bool = True
    #: Path of the item itself, for subscriptions on one item (e.g. "users/{id}").
    item_collection: str | None = None
    #: Replaces the collection and its aliases as the paths a change is "in" (drive items: the drive root).
    event_collections: EventCollections | None = None
    #: False = notifications carry ``resourceData: null`` (driveItem) [OBS].
    notification_resource_data: bool = True

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




@dataclass(frozen=True)
class Family:
    """One corner of Graph as the emulator serves it: a module (or folder) under :mod:`syncer.emulator.families`.

    The shared core iterates :data:`syncer.emulator.families.FAMILIES`; a new family is a new module that builds one
    of these, added to that tuple.
    """

    name: str
    resource_types: tuple[ResourceType, ...]
    #: The Flask blueprints serving its Graph paths, registered in this order.
    blueprints: tuple[Blueprint, ...]
    #: Which of its paths accept subscriptions (matched in order, across families).
    subscribable: tuple[SubscribableResource, ...] = ()
    #: Admin seed fields that create items per user, e.g. {"messagesPerUser": seed_messages}, run in order.
    seeders: Mapping[str, Seeder] = field(default_factory=dict)
    #: First path segments below /users/{id}/ that address a mailbox (the per-mailbox concurrency limit applies).
    mailbox_segments: frozenset[str] = frozenset()
    #: Application permissions it accepts besides its types' read and write roles.
    extra_roles: frozenset[str] = frozenset()
