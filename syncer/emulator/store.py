"""In-memory data of the emulated tenants, with a change log per collection for delta.

Design, driven by the speed targets (1M users seeded in seconds, a 999-item delta page in a few ms):

* A **collection** (e.g. ``users`` or ``users/{uid}/mailfolders/{fid}/messages``) keeps its items in a
  dict and an append-only **log** of ``(seq, ref)`` where ``ref`` is an item id or a :class:`SeedBlock`.
  ``seq`` is one monotonic counter per store. ``last_seq[id]`` is the seq of an item's latest change.
* A delta round is a walk of that log from the token's ``since`` to the round's high-water mark ``hwm``;
  an entry is emitted only if it is the item's latest change, so every item appears once with its
  current state. Items changed after ``hwm`` are left for the next round (they are newer than the delta
  link's ``since``), which is exactly Graph's contract: converge, replays allowed.
* **Seed blocks** make bulk seeding O(1): a block of N users is one log entry; its items are generated on
  read from their index (ids embed the index), and materialised into ``items`` only when written.

Every committed write calls the listeners with a :class:`ChangeEvent` (after the lock is released), which
is how the subscription dispatcher learns about changes. Bulk seeding does not notify: it builds a tenant, it is
not a change in one.
"""

from __future__ import annotations

import base64
import bisect
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
class SeedBlock:
    """`count` generated items sharing an id prefix; item i is ``make(id, i)``."""

    prefix: str
    count: int
    seq: int
    make: Callable[[str, int], dict[str, Any]]
    #: For users: UPN of item i is f"{upn_prefix}{i}@{domain}".
    upn_prefix: str = ""
    upn_domain: str = ""

    def item_id(self, index: int) -> str:
        """The id of item *index*."""
        return f"{self.prefix}{index:012x}"

    def index_of(self, item_id: str) -> int | None:
        """The index encoded in *item_id*, or None if it is not one of this block's ids."""
        if not item_id.startswith(self.prefix) or len(item_id) != len(self.prefix) + 12:
            return None
        try:
            index = int(item_id[len(self.prefix):], 16)
        except ValueError:
            return None
        return index if index < self.count else None


@dataclass(slots=True)
class Emitted:
    """One item a collection walk yields."""

    item_id: str
    item: dict[str, Any] | None  # current state, or the last state when removed
    removed: str | None  # None, "changed" or "deleted"
    seq: int


class Collection:
    """One addressable collection and its change log."""

    def __init__(self, key: str, rtype: ResourceType, tenant_id: str, parents: dict[str, str]) -> None:
        self.key = key
        self.rtype = rtype
        self.tenant_id = tenant_id
        self.parents = parents
        self.items: dict[str, dict[str, Any]] = {}
        self.last_seq: dict[str, int] = {}
        self.removed: dict[str, tuple[str, dict[str, Any]]] = {}
        self.log_seq: list[int] = []
        self.log_ref: list[str | SeedBlock] = []
        self.blocks: list[SeedBlock] = []
        #: seeded ids that have their own log entries now (materialised or removed)
        self.overrides: set[str] = set()
        #: Delta tokens issued before this epoch time are treated as expired (admin "evict").
        self.tokens_valid_after: float = 0.0
        #: serials of the deltaLinks handed out, oldest first, and the newest evicted one (Outlook cache)
        self.issued_links: list[int] = []
        self.link_serial = 0
        self.evicted_serial = 0
        # group membership: group id -> {member id: seq}, and per-group link log (seq, member, removed)
        self.members: dict[str, dict[str, int]] = {}
        #: item id -> [(seq, properties changed by that write)] since its creation (Prefer: return=minimal)
        self.changes: dict[str, list[tuple[int, frozenset[str]]]] = {}
        self.created_seq: dict[str, int] = {}
        self.member_log: dict[str, list[tuple[int, str, bool]]] = {}

    # --- reads ---------------------------------------------------------------------------------

    def _block_for(self, item_id: str) -> tuple[SeedBlock, int] | None:
        for block in self.blocks:
            index = block.index_of(item_id)
            if index is not None:
                return block, index
        return None

    def get(self, item_id: str) -> dict[str, Any] | None:
        """Current state of *item_id*, or None."""
        item = self.items.get(item_id)
        if item is not None:
            return item
        if item_id in self.last_seq or not self.blocks:
            return None  # removed, or materialised then removed
        found = self._block_for(item_id)
        if found is None:
            return None
        block, index = found
        return block.make(item_id, index)

    def live_count(self) -> int:
        """How many items exist now."""
        return len(self.items) + sum(b.count for b in self.blocks) - len(self.overrides)

    def _note_override(self, item_id: str) -> None:
        if self.blocks and item_id not in self.overrides and self._block_for(item_id) is not None:
            self.overrides.add(item_id)

    def walk(
        self,
        *,
        since: int,
        hwm: int,
        pos: int | None,
        sub: int,
        limit: int,
        include_removed: bool,
    ) -> tuple[list[Emitted], int, int, bool]:
        """Up to *limit* items changed in (since, hwm], resuming at log position (pos, sub).

        Returns (items, next_pos, next_sub, done). ``pos`` None means "start of the round".
        """
        out: list[Emitted] = []
        log_seq, log_ref, last_seq = self.log_seq, self.log_ref, self.last_seq
        i = bisect.bisect_right(log_seq, since) if pos is None else pos
        end = bisect.bisect_right(log_seq, hwm)
        items, removed = self.items, self.removed
        while i < end and len(out) < limit:
            ref = log_ref[i]
            seq = log_seq[i]
            if isinstance(ref, SeedBlock):
                block = ref
                j = sub
                count = block.count
                make, prefix = block.make, block.prefix
                while j < count and len(out) < limit:
                    item_id = f"{prefix}{j:012x}"
                    j += 1
                    if item_id in last_seq:
                        continue  # changed later: its own log entry reports it
                    out.append(Emitted(item_id, make(item_id, j - 1), None, seq))
                if j < count:
                    return out, i, j, False
                i += 1
                sub = 0
                continue
            i += 1
            item_id = ref
            if last_seq.get(item_id) != seq:
                continue
            item = items.get(item_id)
            if item is not None:
                out.append(Emitted(item_id, item, None, seq))
            elif include_removed and item_id in removed:
                reason, last = removed[item_id]
                out.append(Emitted(item_id, last, reason, seq))
        return out, i, 0, i >= end

    def iter_live(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every current item, oldest change first (used for small collections)."""
        emitted, _, _, _ = self.walk(since=0, hwm=1 << 62, pos=None, sub=0, limit=1 << 62, include_removed=False)
        for e in emitted:
            assert e.item is not None
            yield e.item_id, e.item

    # --- writes (caller holds the store lock and passes a fresh seq) ----------------------------

    def _append(self, seq: int, ref: str | SeedBlock) -> None:
        self.log_seq.append(seq)
        self.log_ref.append(ref)

    def put(self, item_id: str, item: dict[str, Any], seq: int) -> None:
        """Create or replace *item_id* (remembering which properties changed, for return=minimal)."""
        self._note_override(item_id)
        before = self.get(item_id)
        if before is not None:
            changed = frozenset(k for k in set(before) | set(item) if before.get(k) != item.get(k))
            self.changes.setdefault(item_id, []).append((seq, changed))
        else:
            self.changes.pop(item_id, None)  # created (or restored): everything is new
            self.created_seq[item_id] = seq
        self.items[item_id] = item
        self.removed.pop(item_id, None)
        self.last_seq[item_id] = seq
        self._append(seq, item_id)

    def remove(self, item_id: str, reason: str, seq: int, last_state: dict[str, Any]) -> None:
        """Record *item_id* as removed with *reason* ("changed" = soft, "deleted" = permanent)."""
        self._note_override(item_id)
        self.items.pop(item_id, None)
        self.removed[item_id] = (reason, last_state)
        self.last_seq[item_id] = seq
        self._append(seq, item_id)

    def changed_since(self, item_id: str, since: int) -> frozenset[str] | None:
        """Properties changed after *since*, or None if the item is new since then (everything is new)."""
        if since <= 0 or self.created_seq.get(item_id, 0) > since:
            return None
        names: set[str] = set()
        for seq, changed in self.changes.get(item_id, ()):
            if seq > since:
                names |= changed
        return frozenset(names)

    def add_block(self, block: SeedBlock) -> None:
        """Append a seed block (one log entry for all its items)."""
        self.blocks.append(block)
        self._append(block.seq, block)


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
        key = collection_key(rtype, parents)
        col = self.collections.get(key)
        if col is None:
            # setdefault is atomic: two requests creating the same collection must share one object
            col = self.collections.setdefault(key, Collection(key, rtype, self.tenant_id, dict(parents)))
        return col


def collection_key(rtype: ResourceType, parents: dict[str, str]) -> str:
    """Normalised collection path: placeholders filled, lower-case, no leading slash."""
    parts = []
    for seg in rtype.collection.split("/"):
        if seg.startswith("{"):
            parts.append(parents[seg[1:-1]])
        else:
            parts.append(seg)
    return "/".join(parts).lower()


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
            seq = self.next_seq()
            if item_id not in col.items:
                col._note_override(item_id)
                col.items[item_id] = item  # materialise a seeded item
            col.last_seq[item_id] = seq
            col._append(seq, item_id)

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
            collections = [col.key, *(_fill(alias, parents) for alias in rtype.alias_collections)]
            if rtype.item_collection is not None:
                collections.append(_fill(rtype.item_collection, fmt))
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


def _fill(pattern: str, parents: dict[str, str]) -> str:
    parts = []
    for seg in pattern.split("/"):
        parts.append(parents[seg[1:-1]] if seg.startswith("{") else seg)
    return "/".join(parts).lower()
