"""In-memory data of the emulated tenants: every write goes through :class:`Store`.

Each collection keeps its items and change log (:mod:`syncer.emulator.changelog`); the store hands out the change
sequence numbers, the ids Graph would mint, and the indexes that cross collections. Every committed write calls the
listeners with a :class:`ChangeEvent` (after the lock is released), which is how the subscription dispatcher learns
about changes. Bulk seeding does not notify: it builds a tenant, it is not a change in one.
"""

from __future__ import annotations

import base64
import bisect
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from syncer.emulator.changelog import Collection, SeedBlock
from syncer.emulator.clock import Clock, iso_ts
from syncer.emulator.resources import ResourceType


@dataclass(frozen=True)
class ChangeEvent:
    """One committed change, as the subscription dispatcher consumes it (see docs/emulator-core.md)."""

    tenant_id: str
    resource_type: str
    change_type: str  # "created" | "updated" | "deleted"
    item_id: str
    collections: tuple[str, ...]
    resource: str
    resource_data: dict[str, Any] | None
    item: dict[str, Any] | None
    mailbox: str | None


@dataclass
class TenantStore:
    """All collections of one tenant plus the indexes that cross collections."""

    tenant_id: str
    collections: dict[str, Collection] = field(default_factory=dict)
    #: lower-case UPN -> user id for users written through the API (seeded UPNs are parsed).
    upn_index: dict[str, str] = field(default_factory=dict)
    #: item id -> collection key, for items addressable without their full path (messages, events...).
    index: dict[str, str] = field(default_factory=dict)
    #: user ids whose mailbox/drive/To Do containers exist.
    provisioned: set[str] = field(default_factory=set)
    #: drive id -> owner user id (None for group/site drives).
    drives: dict[str, str | None] = field(default_factory=dict)
    user_drive: dict[str, str] = field(default_factory=dict)
    #: well-known folder name -> folder id, per user: (uid, "inbox") -> id
    well_known: dict[tuple[str, str], str] = field(default_factory=dict)

    def collection(self, rtype: ResourceType, parents: dict[str, str] | None = None) -> Collection:
        """The collection of *rtype* under *parents*, created empty on first use."""
        parents = parents or {}
        key = fill_path(rtype.collection, parents)
        col = self.collections.get(key)
        if col is None:
            # setdefault is atomic: two requests creating the same collection must share one object
            col = self.collections.setdefault(key, Collection(key, rtype, self.tenant_id, dict(parents)))
        return col


def fill_path(pattern: str, values: dict[str, str]) -> str:
    """*pattern* with its ``{name}`` segments filled from *values*, lower-case (a collection key)."""
    return "/".join(values[seg[1:-1]] if seg.startswith("{") else seg for seg in pattern.split("/")).lower()


Listener = Callable[[ChangeEvent], None]


class Store:
    """All tenants' data; every write goes through here so the log and the listeners stay exact."""

    def __init__(self, *, clock: Clock, lock: threading.RLock, seed: int = 0) -> None:
        self.clock = clock
        self.lock = lock
        self.seed = seed
        self.rng = random.Random(seed ^ 0xD47A)
        self.seq = 0
        #: commit time of each seq (index seq-1), emulator clock
        self.seq_times: list[float] = []
        self.tenants: dict[str, TenantStore] = {}
        self._listeners: list[Listener] = []
        self.seed_blocks = 0

    # --- plumbing ------------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        """Call *fn(event)* after every committed write (outside the lock; must not block)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling *fn*."""
        if fn in self._listeners:
            self._listeners.remove(fn)

    def notify(self, events: list[ChangeEvent]) -> None:
        """Deliver *events* to the listeners; call without holding the lock."""
        for event in events:
            for fn in list(self._listeners):
                fn(event)

    def tenant(self, tenant_id: str) -> TenantStore:
        """The data of *tenant_id* (created empty on first use)."""
        with self.lock:
            ts = self.tenants.get(tenant_id)
            if ts is None:
                ts = TenantStore(tenant_id)
                self.tenants[tenant_id] = ts
            return ts

    def clear(self) -> None:
        """Drop all data (listeners stay)."""
        with self.lock:
            self.tenants.clear()
            self.seq = 0
            self.seq_times.clear()
            self.seed_blocks = 0

    def next_seq(self) -> int:
        """A fresh change sequence number (caller holds the lock)."""
        self.seq += 1
        self.seq_times.append(self.clock.time())
        return self.seq

    def seq_visible_at(self, instant: float) -> int:
        """The newest seq committed at or before *instant* (for replication lag)."""
        return bisect.bisect_right(self.seq_times, instant)

    def now_iso(self) -> str:
        """The clock's now, Graph-formatted."""
        return iso_ts(self.clock.time())

    # --- ids -----------------------------------------------------------------------------------

    def new_guid(self) -> str:
        """A version-4 GUID from the seeded RNG (reproducible runs)."""
        with self.lock:
            raw = self.rng.getrandbits(128)
        raw = (raw & ~(0xF000 << 64)) | (0x4000 << 64)
        raw = (raw & ~(0xC000 << 48)) | (0x8000 << 48)
        h = f"{raw:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def new_outlook_id(self) -> str:
        """An Exchange-style opaque id ("AAMkAG..."), URL-safe base64."""
        with self.lock:
            raw = self.rng.getrandbits(8 * 48).to_bytes(48, "big")
        return "AAMkAG" + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def new_drive_item_id(self) -> str:
        """A OneDrive-for-Business style item id (34 upper-case base32-ish characters)."""
        with self.lock:
            raw = self.rng.getrandbits(160).to_bytes(20, "big")
        return "01" + base64.b32encode(raw).decode().rstrip("=")[:32]

    def new_change_key(self) -> str:
        """A fresh Outlook changeKey."""
        with self.lock:
            raw = self.rng.getrandbits(8 * 18).to_bytes(18, "big")
        return "CQAAAB" + base64.b64encode(raw).decode()

    def new_block_prefix(self) -> str:
        """A 24-character GUID prefix for a seed block ("xxxxxxxx-xxxx-4xxx-8xxx-")."""
        with self.lock:
            raw = self.rng.getrandbits(80)
        h = f"{raw:020x}"
        return f"{h[:8]}-{h[8:12]}-4{h[12:15]}-8{h[15:18]}-"

    # --- writes --------------------------------------------------------------------------------

    def put(self, col: Collection, item_id: str, item: dict[str, Any], *, change_type: str,
            notify: bool = True) -> ChangeEvent | None:
        """Create or update an item; returns the event (already delivered if *notify*)."""
        with self.lock:
            seq = self.next_seq()
            col.put(item_id, item, seq)
            ts = self.tenants[col.tenant_id]
            if col.rtype.index_by_id:
                ts.index[item_id] = col.key
            event = self.event_for(col, item_id, change_type, item) if notify else None
        if event is not None:
            self.notify([event])
        return event

    def remove(self, col: Collection, item_id: str, *, reason: str, notify: bool = True,
               snapshot: dict[str, Any] | None = None) -> ChangeEvent | None:
        """Remove an item: reason "changed" = soft delete (restorable), "deleted" = permanent.

        A soft delete keeps *snapshot* (the item as deleted, e.g. with deletedDateTime) and hands it to
        the listeners as the event's ``item``; a permanent delete's event has ``item`` None. Both are
        change_type "deleted": the notification shapes map soft deletes of users/groups to "updated" as Graph does.
        """
        with self.lock:
            last = snapshot if snapshot is not None else col.get(item_id)
            if last is None:
                prior = col.removed.get(item_id)
                last = prior[1] if prior else {"id": item_id}
            seq = self.next_seq()
            col.remove(item_id, reason, seq, last)
            item = last if reason == "changed" else None
            event = self.event_for(col, item_id, "deleted", item) if notify else None
        if event is not None:
            self.notify([event])
        return event

    def touch(self, col: Collection, item_id: str) -> None:
        """Log a change of *item_id* without changing its properties (e.g. a membership change)."""
        with self.lock:
            item = col.get(item_id)
            if item is None:
                return
            col.touch(item_id, item, self.next_seq())

    def event_for(self, col: Collection, item_id: str, change_type: str,
                  item: dict[str, Any] | None) -> ChangeEvent:
        """Build the ChangeEvent for a write in *col* (see docs/emulator-core.md)."""
        rtype = col.rtype
        parents = dict(col.parents)
        fmt = {**parents, "id": item_id}
        resource = rtype.notification_resource.format(**fmt)
        mailbox = parents.get("user")
        if rtype.event_collections is not None:
            collections = rtype.event_collections(self.tenants[col.tenant_id], col, item_id)
        else:
            collections = [col.key, *(fill_path(alias, parents) for alias in rtype.alias_collections)]
            if rtype.item_collection is not None:
                collections.append(fill_path(rtype.item_collection, fmt))
        if mailbox is not None:
            # subscriptions may name the mailbox by UPN as well as by id
            users = self.tenants[col.tenant_id].collections.get("users")
            user = users.get(mailbox) if users is not None else None
            upn = str(user.get("userPrincipalName", "")).lower() if user else ""
            if upn:
                collections.extend(c.replace(f"users/{mailbox.lower()}/", f"users/{upn}/", 1)
                                   for c in list(collections) if c.startswith(f"users/{mailbox.lower()}/"))
        resource_data: dict[str, Any] | None = None
        if rtype.notification_resource_data:
            resource_data = {"@odata.type": rtype.notification_type, "@odata.id": resource, "id": item_id}
            if rtype.etag and item is not None and "@odata.etag" in item:
                resource_data["@odata.etag"] = item["@odata.etag"]
        return ChangeEvent(
            tenant_id=col.tenant_id,
            resource_type=rtype.name,
            change_type=change_type,
            item_id=item_id,
            collections=tuple(dict.fromkeys(collections)),
            resource=resource,
            resource_data=resource_data,
            item=dict(item) if item is not None else None,
            mailbox=mailbox,
        )

    def add_block(self, col: Collection, *, count: int, make: Callable[[str, int], dict[str, Any]],
                  upn_prefix: str = "", upn_domain: str = "") -> SeedBlock:
        """Append a lazily generated block of *count* items to *col* (no notifications)."""
        with self.lock:
            block = SeedBlock(self.new_block_prefix(), count, self.next_seq(), make, upn_prefix, upn_domain)
            col.add_block(block)
            self.seed_blocks += 1
            return block

