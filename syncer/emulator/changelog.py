"""One collection's items and its append-only change log: what every delta round walks.

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

Writes come through :class:`syncer.emulator.store.Store`, which hands out the seqs and holds the lock.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from syncer.emulator.resources import ResourceType


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

    def touch(self, item_id: str, item: dict[str, Any], seq: int) -> None:
        """Log a change of *item_id* (its current state *item*) without changing its properties."""
        if item_id not in self.items:
            self._note_override(item_id)
            self.items[item_id] = item  # materialise a seeded item
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
