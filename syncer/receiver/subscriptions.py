"""Which subscription ids are ours: ``syncer_subscriptions`` read through a cache, for the receiver.

Split from :mod:`syncer.receiver.receive` (what a request does): every notification item names a
subscription id, and a forger may name any. The cache answers for the ids it knows; every other id
is read from the database before it is called unknown, in grouped reads (see :class:`SubscriptionCache`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer import schema
from syncer.errors import DatabaseError
from syncer.receiver.checks import SubscriptionInfo

_LOOKUP_CHUNK = 1000


class _Read:
    """One grouped read of subscription rows: the ids of every caller that joined it, and its outcome."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.rows: dict[str, SubscriptionInfo] = {}
        self.error: DatabaseError | None = None
        self.done = False


class SubscriptionCache:
    """Subscription lookups from ``syncer_subscriptions``, cached briefly, negative answers too.

    Every id is read from the database before it is called unknown: refusing an id unread would
    refuse a real notification whenever other traffic (a flood of forged ids) used up a budget.
    The cost of such a flood is bounded instead by grouping: one read is in flight at a time, and
    the ids of every request that arrives meanwhile are read together in the next one (as the group
    committer does for writes), so a flood costs at most one indexed ``IN (...)`` query per query
    time, one connection, whatever its rate. A lookup that cannot finish raises
    :class:`DatabaseError`: the receiver answers 503 and Graph retries.

    Entries are evicted one at a time, least recently used first, and unknown ids have their own
    bounded space: forged ids can never push out a subscription of ours. Thread-safe (and
    gevent-safe once patched); rows are written by reconcile (another process).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        table: sa.Table = schema.subscriptions,
        ttl: float = 30.0,
        unknown_ttl: float = 1.0,
        max_entries: int = 100_000,
        timeout: float = 1.0,
    ) -> None:
        self.engine = engine
        self.table = table
        self.ttl = ttl
        self.unknown_ttl = unknown_ttl
        self.max_entries = max_entries
        self.timeout = timeout
        self._known: OrderedDict[str, tuple[float, SubscriptionInfo]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._read_done = threading.Condition(self._lock)
        self._reading = False  # a read is in flight
        self._next: _Read | None = None  # the read the next leader will run; callers join it
        self.queries = 0

    def __call__(self, ids: Collection[str]) -> Mapping[str, SubscriptionInfo]:
        now = time.monotonic()
        found: dict[str, SubscriptionInfo] = {}
        missing: list[str] = []
        with self._lock:
            for sid in ids:
                entry = self._known.get(sid)
                if entry is not None and entry[0] > now:
                    self._known.move_to_end(sid)
                    found[sid] = entry[1]
                    continue
                expires = self._unknown.get(sid)
                if expires is not None and expires > now:
                    self._unknown.move_to_end(sid)
                    continue
                missing.append(sid)
        if missing:
            loaded = self._read(missing)
            found.update((sid, loaded[sid]) for sid in missing if sid in loaded)
        return found

    def _read(self, ids: list[str]) -> Mapping[str, SubscriptionInfo]:
        """Read *ids*, joining the next grouped read; the leader of a read queries for all who joined."""
        deadline = time.monotonic() + self.timeout
        with self._lock:
            read = self._next
            if read is None:
                read = self._next = _Read()
            read.ids.update(ids)
            while not read.done and self._reading:
                if not self._read_done.wait(deadline - time.monotonic()) and not read.done:
                    raise DatabaseError(f"subscription lookup not answered within {self.timeout:g} s")
            if read.done:
                if read.error is not None:
                    raise read.error
                return read.rows
            # No read in flight and ours not done: lead it.
            self._reading = True
            self._next = None
        try:
            read.rows = self._query(read.ids)
        except BaseException as exc:
            # Whatever stopped the leader (a gevent timeout too), its followers must neither wait
            # forever nor take the empty result for "unknown".
            read.error = exc if isinstance(exc, DatabaseError) else DatabaseError(f"cannot read subscriptions: {type(exc).__name__}")
            raise
        finally:
            with self._lock:
                if read.error is None:
                    self._remember(read.ids, read.rows, time.monotonic())
                read.done = True
                self._reading = False
                self._read_done.notify_all()
        return read.rows

    def _query(self, ids: Collection[str]) -> dict[str, SubscriptionInfo]:
        t = self.table
        columns = (t.c.subscription_id, t.c.tenant_id, t.c.client_state, t.c.scope_key, t.c.include_resource_data)
        ordered = sorted(ids)
        rows: list[Any] = []
        self.queries += 1
        try:
            with self.engine.connect() as conn:
                # A group under a flood can hold many ids: chunks keep each statement's parameters few.
                for i in range(0, len(ordered), _LOOKUP_CHUNK):
                    chunk = ordered[i : i + _LOOKUP_CHUNK]
                    rows.extend(conn.execute(sa.select(*columns).where(t.c.subscription_id.in_(chunk))).all())
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read subscriptions: {type(exc).__name__}") from exc
        return {
            r.subscription_id: SubscriptionInfo(
                subscription_id=r.subscription_id,
                tenant_id=r.tenant_id,
                client_state=r.client_state,
                scope_key=r.scope_key,
                include_resource_data=bool(r.include_resource_data),
            )
            for r in rows
        }

    def _remember(self, ids: Collection[str], rows: Mapping[str, SubscriptionInfo], now: float) -> None:
        # Caller holds the lock.
        for sid in ids:
            info = rows.get(sid)
            if info is not None:
                self._unknown.pop(sid, None)
                self._known[sid] = (now + self.ttl, info)
                self._known.move_to_end(sid)
            else:
                self._known.pop(sid, None)
                self._unknown[sid] = now + self.unknown_ttl
                self._unknown.move_to_end(sid)
        for cache in (self._known, self._unknown):
            while len(cache) > self.max_entries:
                cache.popitem(last=False)

    def forget(self) -> None:
        with self._lock:
            self._known.clear()
            self._unknown.clear()
