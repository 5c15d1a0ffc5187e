"""One sync pass for one scope: Graph pages in, mirror rows and the cursor out, crash-safe.

"Push as trigger, pull as truth": a notification only marks a scope dirty; this module pulls the
truth with a delta query (or a list and GETs where Graph has no delta) and writes it.

A pass, and why each step is where it is:

1. **Lease** (one transaction): take the scope's row in ``syncer_sync_state`` for ``lease_ttl`` unless
   another worker holds an unexpired lease, record the pass in ``syncer_sync_runs``, and decide where
   the round starts: the nextLink of an interrupted round (resume), the stored deltaLink
   (incremental), or the initial URL (a *full* round: first pass, ``--full``, a requested resync).
2. **Pages**: a prefetch thread fetches page N+1 while page N is written. Each page is applied in one
   transaction together with the round's progress: the page's nextLink (where to resume), or on the
   last page the new deltaLink. So rows and cursor always move together; a crash anywhere loses at
   most the page in flight, which the next pass fetches again (upserts are idempotent, and a removal
   keeps its first ``_deleted_at``). The same transaction renews the lease and fails if the lease was
   lost, so a worker that stalled past its lease can never write over the one that took over.
3. **Full rounds mark and sweep**: rows written in a full round carry the round's id in
   ``_sync_run_id``; the last page's transaction deletes (or soft-deletes) the scope's rows the round
   did not see, atomically with the new deltaLink. A 410 (token expired, sync state reset) turns the
   pass into a full round.
4. **Finish**: record the outcome. Throttling postpones the scope (``not_before``), it does not fail
   it, and it never holds a lock or a thread that other scopes need.

Removals only touch rows whose ``_scope`` is this scope: a message moved to another folder may be
upserted by that folder's pass before this folder reports it gone.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from syncer import mirror, schema
from syncer.errors import (
    GraphError,
    NotFoundError,
    ResyncRequired,
    RetryBudgetExhausted,
    ServerError,
    SyncerError,
    ThrottledError,
)
from syncer.scopes import CONTAINERS, FETCH, Scope, child_scope, folder_of

log = logging.getLogger("syncer.sync")

Clock = Callable[[], datetime]

LEASE_TTL = timedelta(minutes=5)
"""How long a scope stays leased without a page committed; a dead worker's scopes are free after it."""
THROTTLE_DEFAULT = timedelta(seconds=60)
"""Postponement after a 429 that named no Retry-After."""
ERROR_BACKOFF_MAX = timedelta(minutes=30)
MAX_RESTARTS = 2
"""410s handled in one pass before it gives up (each restarts the round)."""
SWEPT = "swept"
"""``_removed_reason`` of a row a full round did not see (Graph never reported it removed)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes for timezone=True columns; everything we write is UTC.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class PageSource(Protocol):
    """What a pass needs from the Graph client (GraphClient satisfies it)."""

    def iter_pages(self, url_or_path: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Any]: ...

    def get_json(self, url_or_path: str) -> Any: ...


class LeaseLost(SyncerError):
    """Another worker took the scope's lease (ours expired): this pass stops without writing."""


@dataclass
class Progress:
    """Counters of a pass, handed to the progress callback after every committed page."""

    scope: str
    pages: int = 0
    items: int = 0
    upserted: int = 0
    deleted: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        """Items per second so far."""
        elapsed = time.monotonic() - self.started
        return self.items / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class PassResult:
    """What one pass did."""

    scope: str
    outcome: str  # ok | throttled | error | busy (leased elsewhere) | postponed (not_before) | lost (lease taken over)
    run_id: int | None = None
    full: bool = False
    pages: int = 0
    items: int = 0
    upserted: int = 0
    deleted: int = 0
    error: str | None = None
    not_before: datetime | None = None


Fault = Callable[[str], None]
"""Test hook: called at each named step of a pass; raising there simulates a crash at that instant."""


def _no_fault(_step: str) -> None:
    return None


# --- writing rows -------------------------------------------------------------------------------


class RowWriter:
    """Writes a page of items into one mirror table as fast as the database allows.

    SQLite: one prepared ``INSERT … ON CONFLICT DO UPDATE`` run with ``executemany`` on plain tuples
    (no per-row SQLAlchemy work). PostgreSQL: ``COPY`` into a temporary staging table, then one
    ``INSERT … SELECT … ON CONFLICT DO UPDATE``. Values are converted once, here, with the same
    processors SQLAlchemy would use, so rows read back through SQLAlchemy as usual; JSON is
    serialised with orjson.
    """

    def __init__(self, engine: Engine, scope: Scope) -> None:
        if scope.mirror is None:
            raise ValueError(f"scope {scope.key!r} has no mirror table")
        self.scope = scope
        self.dialect = engine.dialect
        self.postgres = self.dialect.name == "postgresql"
        md = sa.MetaData()
        self.table = mirror.build_table(scope.mirror, md)
        self.members = mirror.build_members_table(scope.mirror, md) if scope.strategy.members else None
        self.columns = [c.name for c in self.table.columns]
        self.declared = [(c.name, c.field, c.type) for c in scope.mirror.columns]
        self._dt = sa.DateTime(timezone=True).dialect_impl(self.dialect).bind_processor(self.dialect)
        self._row = self._compile_row()
        q = self.dialect.identifier_preparer.quote
        self.qtable = self.dialect.identifier_preparer.format_table(self.table)
        cols = ", ".join(q(c) for c in self.columns)
        updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in self.columns if c not in ("tenant_id", "id"))
        if self.postgres:
            self.stage = q(f"_syncer_stage_{scope.mirror.table}"[:63])
            self._stage_sql = (
                f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} "
                f"(LIKE {self.qtable} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            self._copy_sql = f"COPY {self.stage} ({cols}) FROM STDIN"
            self._upsert_sql = (
                f"INSERT INTO {self.qtable} ({cols}) SELECT {cols} FROM {self.stage} "
                f"ON CONFLICT (tenant_id, id) DO UPDATE SET {updates}"
            )
        else:
            marks = ", ".join("?" for _ in self.columns)
            self._upsert_sql = (
                f"INSERT INTO {self.qtable} ({cols}) VALUES ({marks}) "
                f"ON CONFLICT (tenant_id, id) DO UPDATE SET {updates}"
            )

    def _db_value(self, value: Any, type_name: str) -> Any:
        if value is None:
            return None
        if type_name == "json":
            return orjson.dumps(value).decode()
        if type_name == "datetime":
            return self._dt(value) if self._dt else value
        return value

    def _datetime_value(self, value: Any) -> Any:
        if value.__class__ is str:
            match = _ISO_UTC.match(value)
            if match is not None:
                # Graph's usual "2026-01-02T03:04:05(.fffffff)Z": reformatted without a datetime object.
                day, clock, fraction = match.groups()
                # Graph sends up to 7 fractional digits; like mirror.convert, keep 6 (truncated, not rounded).
                text = f"{day} {clock}.{(fraction or '')[:6].ljust(6, '0')}"
                return f"{text}+00" if self.postgres else text
        return self._db_value(mirror.convert(value, "datetime"), "datetime")

    def _compile_row(self) -> Callable[..., tuple[Any, ...]]:
        # The hot loop of an initial mirror (one call per item, ~20 columns): generated once per
        # table so that common column types convert inline, without a dispatch per value.
        env: dict[str, Any] = {"_dumps": orjson.dumps, "_extract": mirror.extract, "_text": _text_value}
        parts = []
        for i, (_name, field_path, type_name) in enumerate(self.declared):
            get = f"g({field_path!r})" if "." not in field_path else f"_extract(item, {field_path!r})"
            if type_name == "text":
                parts.append(f"(v if (v := {get}).__class__ is str else _text(v))")
            elif type_name == "boolean":
                parts.append(f"(v if (v := {get}).__class__ is bool else None)")
            elif type_name == "json":
                parts.append(f"(None if (v := {get}) is None else _dumps(v).decode())")
            elif type_name == "datetime":
                env[f"_c{i}"] = self._datetime_value
                parts.append(f"_c{i}({get})")
            else:
                env[f"_c{i}"] = lambda v, t=type_name: self._db_value(mirror.convert(v, t), t)
                parts.append(f"_c{i}({get})")
        source = (
            "def row(item, tenant, scope, synced, run):\n"
            "    g = item.get\n"
            "    return (tenant, str(item['id']), "
            + "".join(f"{p}, " for p in parts)
            + "_dumps(item).decode(), scope, None, None, synced, run)\n"
        )
        exec(compile(source, f"<row builder for {self.scope.table}>", "exec"), env)
        return env["row"]

    def row(self, item: Mapping[str, Any], *, synced_at: Any, run_id: int | None) -> tuple[Any, ...]:
        """The table row of one Graph item, ready for the driver."""
        return self._row(item, self.scope.tenant_id, self.scope.key, synced_at, run_id)

    def synced_at(self, now: datetime) -> Any:
        """*now* as the driver wants it for the ``_synced_at`` column."""
        return self._dt(now) if self._dt else now

    def upsert(self, connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert or replace *rows* (keys unique within the batch)."""
        if not rows:
            return
        if not self.postgres:
            connection.exec_driver_sql(self._upsert_sql, list(rows))
            return
        dbapi = connection.connection.driver_connection
        assert dbapi is not None
        staged: set[str] = connection.connection.info.setdefault("syncer_stage_tables", set())
        with dbapi.cursor() as cursor:
            if self.stage not in staged:
                # A temporary table lives as long as the database connection; ON COMMIT DELETE ROWS
                # empties it at every commit, so it is created once per pooled connection.
                cursor.execute(self._stage_sql)
                staged.add(self.stage)
            with cursor.copy(self._copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(self._upsert_sql)
            # Emptied now too, in case a caller upserts twice in one transaction.
            cursor.execute(f"DELETE FROM {self.stage}")

    def remove(self, connection: Connection, removals: Sequence[tuple[str, str]], *, now: datetime, run_id: int | None) -> int:
        """Apply Graph's removals ``(id, reason)`` to rows of this scope; how many rows changed."""
        if not removals:
            return 0
        t = self.table
        where = [t.c.tenant_id == self.scope.tenant_id, t.c.id == sa.bindparam("b_id"), t.c._scope == self.scope.key]
        if self.scope.delete == "hard":
            stmt: Any = sa.delete(t).where(*where)
            params: list[dict[str, Any]] = [{"b_id": i} for i, _reason in removals]
        else:
            stmt = (
                sa.update(t)
                .where(*where)
                .values(
                    # The first removal time is kept: a replayed @removed must not look like a new one.
                    _deleted_at=sa.func.coalesce(t.c._deleted_at, sa.bindparam("b_now", type_=schema.UtcDateTime)),
                    _removed_reason=sa.bindparam("b_reason"),
                    _synced_at=sa.bindparam("b_now", type_=schema.UtcDateTime),
                    _sync_run_id=run_id,
                )
            )
            params = [{"b_id": i, "b_reason": reason, "b_now": now} for i, reason in removals]
        changed = connection.execute(stmt, params).rowcount
        if self.members is not None:
            m = self.members
            connection.execute(
                sa.delete(m).where(m.c.tenant_id == self.scope.tenant_id, m.c.group_id == sa.bindparam("b_id")),
                [{"b_id": i} for i, _r in removals],
            )
        return max(changed, 0)

    def sweep(self, connection: Connection, *, round_id: int, now: datetime, round_started: datetime | None) -> int:
        """After a full round: remove this scope's rows the round did not see."""
        t = self.table
        unseen = [
            t.c.tenant_id == self.scope.tenant_id,
            t.c._scope == self.scope.key,
            sa.or_(t.c._sync_run_id.is_(None), t.c._sync_run_id != round_id),
        ]
        if self.members is not None and round_started is not None:
            m = self.members
            groups = sa.select(t.c.id).where(t.c.tenant_id == self.scope.tenant_id, t.c._scope == self.scope.key)
            connection.execute(
                sa.delete(m).where(
                    m.c.tenant_id == self.scope.tenant_id, m.c.group_id.in_(groups), m.c._synced_at < round_started
                )
            )
        if self.scope.delete == "hard":
            return max(connection.execute(sa.delete(t).where(*unseen)).rowcount, 0)
        stmt = sa.update(t).where(*unseen, t.c._deleted_at.is_(None)).values(
            _deleted_at=now, _removed_reason=SWEPT, _synced_at=now
        )
        return max(connection.execute(stmt).rowcount, 0)

    def members_delta(self, connection: Connection, changes: Sequence[tuple[str, Mapping[str, Any]]], *, now: datetime) -> None:
        """Apply ``members@delta`` entries ``(group id, member)`` to ``<table>_members``."""
        if self.members is None or not changes:
            return
        m = self.members
        added: dict[tuple[str, str], dict[str, Any]] = {}
        removed: dict[tuple[str, str], dict[str, Any]] = {}
        for group_id, member in changes:
            key = (group_id, str(member.get("id")))
            if "@removed" in member:
                added.pop(key, None)
                removed[key] = {"b_g": key[0], "b_m": key[1]}
            else:
                removed.pop(key, None)
                added[key] = {
                    "tenant_id": self.scope.tenant_id,
                    "group_id": key[0],
                    "member_id": key[1],
                    "member_type": member.get("@odata.type"),
                    "_synced_at": now,
                }
        if removed:
            connection.execute(
                sa.delete(m).where(
                    m.c.tenant_id == self.scope.tenant_id,
                    m.c.group_id == sa.bindparam("b_g"),
                    m.c.member_id == sa.bindparam("b_m"),
                ),
                list(removed.values()),
            )
        if added:
            insert = (postgresql.insert(m) if self.postgres else sqlite.insert(m))
            stmt = insert.on_conflict_do_update(
                index_elements=[m.c.tenant_id, m.c.group_id, m.c.member_id],
                set_={"member_type": insert.excluded.member_type, "_synced_at": insert.excluded._synced_at},
            )
            connection.execute(stmt, list(added.values()))


_ISO_UTC = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d{1,7}))?Z$")


def _text_value(value: Any) -> str | None:
    return None if value is None else mirror.convert(value, "text")


def removal_of(item: Mapping[str, Any], *, deleted_facet: bool) -> str | None:
    """Graph's removal reason for *item*, or None when it is a live item."""
    removed = item.get("@removed")
    if removed is not None:
        reason = removed.get("reason") if isinstance(removed, dict) else None
        return str(reason or "deleted")
    if deleted_facet and item.get("deleted") is not None:
        return "deleted"
    return None


_ANNOTATION_ONLY = frozenset({"id", "members@delta", "@odata.type", "@odata.id", "@odata.etag"})


@dataclass
class PageOutcome:
    upserted: int = 0
    deleted: int = 0


def apply_items(
    connection: Connection,
    writer: RowWriter,
    items: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    run_id: int | None,
) -> PageOutcome:
    """Write one page: the last state of each item wins (an item may repeat within a page)."""
    strategy = writer.scope.strategy
    synced_at = writer.synced_at(now)
    last: dict[str, Mapping[str, Any]] = {}
    members: list[tuple[str, Mapping[str, Any]]] = []
    for item in items:
        item_id = item.get("id")
        if item_id is None:
            continue
        key = str(item_id)
        if strategy.members:
            members += [(key, member) for member in item.get("members@delta") or ()]
            # A large group is split across pages: a repeat carrying only members is not a new state.
            if "members@delta" in item and set(item) <= _ANNOTATION_ONLY:
                continue
        last.pop(key, None)
        last[key] = item
    rows = []
    removals = []
    for key, item in last.items():
        reason = removal_of(item, deleted_facet=strategy.deleted_facet)
        if reason is None:
            rows.append(writer.row(item, synced_at=synced_at, run_id=run_id))
        else:
            removals.append((key, reason))
    writer.upsert(connection, rows)
    deleted = writer.remove(connection, removals, now=now, run_id=run_id)
    writer.members_delta(connection, members, now=now)
    return PageOutcome(upserted=len(rows), deleted=deleted)


# --- prefetch ------------------------------------------------------------------------------------


_END = object()


class Prefetcher:
    """Fetch pages on a thread while the caller writes the previous one (at most *depth* ahead)."""

    def __init__(self, source: PageSource, url: str, *, depth: int = 2, headers: Mapping[str, str] | None = None) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._headers = headers
        self._thread = threading.Thread(target=self._run, args=(source, url), name="syncer-prefetch", daemon=True)
        self._thread.start()

    def _put(self, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: PageSource, url: str) -> None:
        try:
            for page in source.iter_pages(url, headers=self._headers):
                if not self._put(page):
                    return
        except BaseException as error:
            self._put(error)
            return
        self._put(_END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            value = self._queue.get()
            if value is _END:
                return
            if isinstance(value, BaseException):
                raise value
            yield value

    def close(self) -> None:
        """Stop fetching (the thread ends after its current request)."""
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass


# --- the pass -------------------------------------------------------------------------------------


@dataclass
class _Round:
    url: str
    round_id: int
    full: bool
    resumed: bool
    from_delta: str | None  # the deltaLink this incremental round started from
    started: datetime | None = None

    def become(self, other: _Round) -> None:
        """Switch to *other* in place (the pass's caller keeps a reference for its result)."""
        self.__dict__.update(other.__dict__)


class ScopeStore:
    """The SQL of one scope's bookkeeping rows: lease, round state, run records."""

    def __init__(self, engine: Engine, scope: Scope, *, worker: str, clock: Clock, lease_ttl: timedelta) -> None:
        self.engine = engine
        self.scope = scope
        self.worker = worker
        self.clock = clock
        self.lease_ttl = lease_ttl
        self.postgres = engine.dialect.name == "postgresql"

    def _key(self) -> list[Any]:
        s = schema.sync_state
        return [s.c.tenant_id == self.scope.tenant_id, s.c.scope_key == self.scope.key]

    def ensure(self, connection: Connection, *, dirty: bool = False) -> None:
        """Create the scope's state row if it is missing."""
        ensure_scope_rows(connection, [self.scope], dirty=dirty, now=self.clock())

    def take_lease(self, connection: Connection) -> bool:
        s = schema.sync_state
        now = self.clock()
        stmt = (
            sa.update(s)
            .where(
                *self._key(),
                sa.or_(s.c.leased_by.is_(None), s.c.lease_until.is_(None), s.c.lease_until < now, s.c.leased_by == self.worker),
            )
            .values(leased_by=self.worker, lease_until=now + self.lease_ttl, updated_at=now)
        )
        return bool(connection.execute(stmt).rowcount == 1)

    def renew_lease(self, connection: Connection) -> None:
        """Extend our lease inside the page transaction; LeaseLost if another worker has it now."""
        s = schema.sync_state
        now = self.clock()
        stmt = (
            sa.update(s)
            .where(*self._key(), s.c.leased_by == self.worker)
            .values(lease_until=now + self.lease_ttl, updated_at=now)
        )
        if connection.execute(stmt).rowcount != 1:
            raise LeaseLost(f"scope {self.scope.key!r}: the lease of worker {self.worker!r} was taken over")

    def state(self, connection: Connection) -> Any:
        s = schema.sync_state
        return connection.execute(sa.select(s).where(*self._key())).one()

    def update_state(self, connection: Connection, **values: Any) -> None:
        s = schema.sync_state
        connection.execute(sa.update(s).where(*self._key()).values(updated_at=self.clock(), **values))

    def start_run(self, connection: Connection, *, full: bool) -> int:
        r = schema.sync_runs
        now = self.clock()
        # We hold the lease: any run of this scope still "running" belongs to a worker that died.
        connection.execute(
            sa.update(r)
            .where(r.c.tenant_id == self.scope.tenant_id, r.c.scope_key == self.scope.key, r.c.outcome == "running")
            .values(outcome="abandoned", finished_at=now)
        )
        result = connection.execute(
            sa.insert(r).values(
                tenant_id=self.scope.tenant_id,
                scope_key=self.scope.key,
                started_at=now,
                full=full,
                pages=0,
                upserted=0,
                deleted=0,
                outcome="running",
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def update_run(self, connection: Connection, run_id: int, **values: Any) -> None:
        r = schema.sync_runs
        connection.execute(sa.update(r).where(r.c.id == run_id).values(**values))

    def run_started_at(self, connection: Connection, run_id: int) -> datetime | None:
        r = schema.sync_runs
        value = connection.execute(sa.select(r.c.started_at).where(r.c.id == run_id)).scalar()
        return _aware(value)


def ensure_scope_rows(connection: Connection, scopes: Sequence[Scope], *, dirty: bool = False, now: datetime | None = None) -> None:
    """Create missing ``syncer_sync_state`` rows for *scopes* (existing rows keep their state)."""
    if not scopes:
        return
    now = now or utcnow()
    s = schema.sync_state
    insert = postgresql.insert(s) if connection.dialect.name == "postgresql" else sqlite.insert(s)
    rows = [
        {
            "tenant_id": sc.tenant_id,
            "scope_key": sc.key,
            "name": sc.name,
            "table_name": sc.table,
            "parent_key": sc.parent_key,
            "resync_requested": False,
            "round_full": False,
            "failures": 0,
            "dirty_since": now if dirty else None,
            "updated_at": now,
        }
        for sc in scopes
    ]
    connection.execute(insert.on_conflict_do_nothing(index_elements=[s.c.tenant_id, s.c.scope_key]), rows)


def _throttle_of(error: BaseException) -> GraphError | None:
    if isinstance(error, ThrottledError):
        return error
    if isinstance(error, RetryBudgetExhausted) and isinstance(error.last_error, ThrottledError | ServerError):
        return error.last_error
    if isinstance(error, ServerError) and error.status == 503 and error.retry_after is not None:
        return error
    return None


def sync_scope(
    engine: Engine,
    source: PageSource,
    scope: Scope,
    *,
    worker: str,
    full: bool = False,
    progress: Callable[[Progress], None] | None = None,
    clock: Clock = utcnow,
    lease_ttl: timedelta = LEASE_TTL,
    prefetch: int = 2,
    page_size: int | None = None,
    fault: Fault | None = None,
) -> PassResult:
    """Run one pass of *scope*: from its cursor to a new deltaLink (or as far as Graph lets us).

    Never raises for Graph or database trouble during the pass: the outcome says what happened and
    ``syncer_sync_runs``/``syncer_sync_state`` record it. Returns ``busy`` at once when another
    worker holds the scope's lease. *page_size* asks Graph for pages of that size
    (``Prefer: odata.maxpagesize``; Graph may ignore it).
    """
    step = fault or _no_fault
    store = ScopeStore(engine, scope, worker=worker, clock=clock, lease_ttl=lease_ttl)
    started = clock()
    with engine.begin() as connection:
        store.ensure(connection)
        if not store.take_lease(connection):
            return PassResult(scope.key, "busy")
        state = store.state(connection)
        if state.not_before is not None and _aware(state.not_before) > started and not full:  # type: ignore[operator]
            store.update_state(connection, leased_by=None, lease_until=None)
            return PassResult(scope.key, "postponed", not_before=_aware(state.not_before))
        run_id = store.start_run(connection, full=False)
        rnd = _start_round(store, connection, state, run_id, force_full=full)
        store.update_run(connection, run_id, full=rnd.full)
    step("leased")
    counters = Progress(scope.key)
    try:
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else None
        outcome = _run_pages(
            engine, source, store, rnd, run_id, counters, progress=progress, prefetch=prefetch, step=step, headers=headers
        )
    except LeaseLost as error:
        _finish(store, run_id, "lost", counters, error=str(error), started=started, release=False)
        return _result(scope, run_id, rnd, counters, "lost", error=str(error))
    except Exception as error:
        throttle = _throttle_of(error)
        if throttle is not None:
            wait = timedelta(seconds=throttle.retry_after) if throttle.retry_after else THROTTLE_DEFAULT
            until = clock() + wait
            _finish(store, run_id, "throttled", counters, error=str(error), started=started, not_before=until)
            log.info("scope %s throttled, postponed until %s", scope.key, until.isoformat())
            return _result(scope, run_id, rnd, counters, "throttled", error=str(error), not_before=until)
        log.warning("scope %s: pass failed: %s", scope.key, error, exc_info=not isinstance(error, SyncerError))
        retry_at = _finish(store, run_id, "error", counters, error=_describe(error), started=started)
        return _result(scope, run_id, rnd, counters, "error", error=_describe(error), not_before=retry_at)
    step("pages-done")
    _finish(store, run_id, outcome, counters, started=started)
    step("finished")
    return _result(scope, run_id, rnd, counters, outcome)


def _describe(error: BaseException) -> str:
    if isinstance(error, SyncerError):
        return str(error)
    if isinstance(error, sa.exc.SQLAlchemyError):
        return f"database error: {type(error).__name__}: {str(getattr(error, 'orig', error))[:300]}"
    return f"{type(error).__name__}: {str(error)[:300]}"


def _result(scope: Scope, run_id: int, rnd: _Round, c: Progress, outcome: str, **kw: Any) -> PassResult:
    return PassResult(
        scope.key, outcome, run_id=run_id, full=rnd.full, pages=c.pages, items=c.items, upserted=c.upserted,
        deleted=c.deleted, **kw,
    )


def _start_round(store: ScopeStore, connection: Connection, state: Any, run_id: int, *, force_full: bool) -> _Round:
    scope = store.scope
    if force_full or state.resync_requested or (state.page_link is None and state.delta_link is None):
        return _new_full_round(store, connection, run_id, scope.initial_url)
    if state.page_link is not None and state.round_id is not None:
        started = store.run_started_at(connection, int(state.round_id)) if state.round_full else None
        return _Round(state.page_link, int(state.round_id), bool(state.round_full), True, state.delta_link, started)
    store.update_state(connection, round_id=run_id, round_full=False, page_link=None)
    return _Round(state.delta_link, run_id, False, False, state.delta_link)


def _new_full_round(store: ScopeStore, connection: Connection, run_id: int, url: str) -> _Round:
    # Forgetting the deltaLink here, in the same transaction as the round's start, is what makes a
    # crash mid-round resume as a full round (and end with its sweep) rather than as an incremental one.
    store.update_state(
        connection, delta_link=None, page_link=None, round_id=run_id, round_full=True, resync_requested=False
    )
    return _Round(url, run_id, True, False, None, store.clock())


def _run_pages(
    engine: Engine,
    source: PageSource,
    store: ScopeStore,
    rnd: _Round,
    run_id: int,
    counters: Progress,
    *,
    progress: Callable[[Progress], None] | None,
    prefetch: int,
    step: Fault,
    headers: Mapping[str, str] | None,
) -> str:
    scope = store.scope
    writer = None if scope.container else RowWriter(engine, scope)
    restarts = 0
    seen_children: set[str] | None = set() if scope.container and rnd.full and not rnd.resumed else None
    while True:
        pages = Prefetcher(source, rnd.url, depth=prefetch, headers=headers) if prefetch > 0 else None
        iterator = iter(pages) if pages is not None else source.iter_pages(rnd.url, headers=headers)
        try:
            for page in iterator:
                step("page-fetched")
                now = store.clock()
                last = page.next_link is None
                with engine.begin() as connection:
                    if store.postgres:
                        # A page commit need not wait for its WAL flush: rows and cursor are in one
                        # transaction, so a server crash loses both together and the next pass fetches
                        # them again; the pass's final (synchronous) commit flushes everything before it.
                        connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    store.renew_lease(connection)
                    if writer is not None:
                        done = apply_items(connection, writer, page.items, now=now, run_id=rnd.round_id)
                    else:
                        done = _apply_containers(connection, store, page.items, seen_children, now=now)
                    counters.pages += 1
                    counters.items += len(page.items)
                    counters.upserted += done.upserted
                    counters.deleted += done.deleted
                    step("page-applied")
                    if not last:
                        store.update_state(connection, page_link=page.next_link)
                    else:
                        if rnd.full:
                            if writer is not None:
                                counters.deleted += writer.sweep(
                                    connection, round_id=rnd.round_id, now=now, round_started=rnd.started
                                )
                            elif seen_children is not None:
                                counters.deleted += _sweep_children(connection, store, seen_children)
                            step("swept")
                        if page.delta_link is None and scope.strategy.method not in (FETCH,):
                            raise GraphError(f"delta round of {scope.key} ended without an @odata.deltaLink")
                        store.update_state(
                            connection, delta_link=page.delta_link, page_link=None, round_id=None, round_full=False
                        )
                    store.update_run(
                        connection, run_id, pages=counters.pages, upserted=counters.upserted, deleted=counters.deleted
                    )
                    step("page-written")
                step("page-committed")
                if progress is not None:
                    progress(counters)
            return "ok"
        except ResyncRequired as error:
            restarts += 1
            if restarts > MAX_RESTARTS:
                raise
            with engine.begin() as connection:
                store.renew_lease(connection)
                if rnd.resumed and not rnd.full and rnd.from_delta:
                    # An expired nextLink of an incremental round: start that round again from its deltaLink.
                    store.update_state(connection, page_link=None, round_id=run_id, round_full=False)
                    rnd.become(_Round(rnd.from_delta, run_id, False, False, rnd.from_delta))
                else:
                    log.info("scope %s: %s; enumerating it again", scope.key, error)
                    # Our own initial URL rather than Graph's Location: it carries the declared $select
                    # (a Location rebuilt from a deltaLink with an empty token may not), and either
                    # way the round enumerates everything.
                    rnd.become(_new_full_round(store, connection, run_id, scope.initial_url))
                    store.update_run(connection, run_id, full=True)
                    if scope.container:
                        seen_children = set()
                step("restarted")
        finally:
            if pages is not None:
                pages.close()


def _finish(
    store: ScopeStore,
    run_id: int,
    outcome: str,
    counters: Progress,
    *,
    started: datetime,
    error: str | None = None,
    not_before: datetime | None = None,
    release: bool = True,
) -> datetime | None:
    s = schema.sync_state
    now = store.clock()
    with store.engine.begin() as connection:
        store.update_run(
            connection, run_id, outcome=outcome, finished_at=now, error=error, pages=counters.pages,
            upserted=counters.upserted, deleted=counters.deleted,
        )
        if not release:
            return None
        values: dict[str, Any] = {"leased_by": None, "lease_until": None}
        if outcome == "ok":
            values.update(last_success_at=now, last_error=None, failures=0, not_before=None)
            # A notification that came in while we ran keeps the scope dirty for another pass.
            values["dirty_since"] = sa.case((s.c.dirty_since <= started, None), else_=s.c.dirty_since)
        elif outcome == "throttled":
            values.update(last_error=error, not_before=not_before)
        else:
            failures = int(store.state(connection).failures or 0) + 1
            backoff = min(timedelta(seconds=30 * 2 ** min(failures - 1, 10)), ERROR_BACKOFF_MAX)
            not_before = now + backoff
            values.update(last_error=error, failures=failures, not_before=not_before)
        connection.execute(
            sa.update(s).where(*store._key(), s.c.leased_by == store.worker).values(updated_at=now, **values)
        )
    return not_before


# --- containers (mail folders) -----------------------------------------------------------------------


def _apply_containers(
    connection: Connection, store: ScopeStore, items: Sequence[Mapping[str, Any]], seen: set[str] | None, *, now: datetime
) -> PageOutcome:
    container = store.scope
    added: list[Scope] = []
    removed: list[Scope] = []
    for item in items:
        folder = item.get("id")
        if folder is None:
            continue
        child = child_scope(container, str(folder))
        if removal_of(item, deleted_facet=False) is not None:
            removed.append(child)
            if seen is not None:
                seen.discard(child.key)
        else:
            added.append(child)
            if seen is not None:
                seen.add(child.key)
    # New folders are dirty at once: their first pass enumerates them.
    ensure_scope_rows(connection, added, dirty=True, now=now)
    deleted = sum(_drop_child(connection, store, child, now=now) for child in removed)
    return PageOutcome(upserted=len(added), deleted=deleted)


def _drop_child(connection: Connection, store: ScopeStore, child: Scope, *, now: datetime) -> int:
    s = schema.sync_state
    connection.execute(sa.delete(s).where(s.c.tenant_id == child.tenant_id, s.c.scope_key == child.key))
    if child.mirror is None:
        return 0
    t = mirror.build_table(child.mirror)
    where = [t.c.tenant_id == child.tenant_id, t.c._scope == child.key]
    if child.delete == "hard":
        return max(connection.execute(sa.delete(t).where(*where)).rowcount, 0)
    stmt = sa.update(t).where(*where, t.c._deleted_at.is_(None)).values(
        _deleted_at=now, _removed_reason="deleted", _synced_at=now
    )
    return max(connection.execute(stmt).rowcount, 0)


def _sweep_children(connection: Connection, store: ScopeStore, seen: set[str]) -> int:
    s = schema.sync_state
    container = store.scope
    rows = connection.execute(
        sa.select(s.c.scope_key).where(s.c.tenant_id == container.tenant_id, s.c.parent_key == container.parent_key)
    ).scalars()
    gone = [
        key for key in rows if key != container.key and folder_of(key, container) is not None and key not in seen
    ]
    now = store.clock()
    total = 0
    for key in gone:
        folder = folder_of(key, container)
        assert folder is not None
        total += _drop_child(connection, store, child_scope(container, folder), now=now)
    return total


def children_of(engine: Engine, container: Scope) -> list[Scope]:
    """The folder scopes a container scope has found so far."""
    s = schema.sync_state
    with engine.connect() as connection:
        keys = connection.execute(
            sa.select(s.c.scope_key).where(s.c.tenant_id == container.tenant_id, s.c.parent_key == container.parent_key)
        ).scalars().all()
    found = []
    for key in keys:
        folder = folder_of(key, container)
        if folder is not None and key != container.key:
            found.append(child_scope(container, folder))
    return found


# --- fetch by id (resources without delta) --------------------------------------------------------


def fetch_items(
    engine: Engine,
    source: PageSource,
    scope: Scope,
    resources: Sequence[str],
    *,
    worker: str,
    clock: Clock = utcnow,
) -> PassResult:
    """GET each notified *resource* of a no-delta scope and write what Graph returns (404 = removed)."""
    store = ScopeStore(engine, scope, worker=worker, clock=clock, lease_ttl=LEASE_TTL)
    writer = RowWriter(engine, scope)
    items: list[Mapping[str, Any]] = []
    for resource in dict.fromkeys(resources):
        resource = _normalise_resource(resource)
        path = scope.strategy.item_path.format(resource=resource) if scope.strategy.item_path else resource
        try:
            body = source.get_json(path)
        except NotFoundError:
            item_id = resource.rstrip("/").rsplit("/", 1)[-1]
            items.append({"id": item_id, "@removed": {"reason": "deleted"}})
            continue
        if isinstance(body, dict) and "id" in body:
            items.append(body)
    started = clock()
    with engine.begin() as connection:
        store.ensure(connection)
        run_id = store.start_run(connection, full=False)
        done = apply_items(connection, writer, items, now=started, run_id=run_id)
        store.update_run(
            connection, run_id, outcome="ok", finished_at=clock(), pages=1, upserted=done.upserted, deleted=done.deleted
        )
    return PassResult(scope.key, "ok", run_id=run_id, pages=1, items=len(items), upserted=done.upserted, deleted=done.deleted)


def _normalise_resource(resource: str) -> str:
    # Notifications spell the collection "Users/{id}" or "Users('{id}')"; Graph's paths are
    # case-blind but a strict server (or proxy) may not be, so collection names go lower-case.
    path, _, query = resource.strip().lstrip("/").partition("?")
    path = re.sub(r"\('([^']*)'\)", r"/\1", path)
    parts = path.split("/")
    parts = [p.lower() if i % 2 == 0 else p for i, p in enumerate(parts)]
    return "/".join(parts) + (f"?{query}" if query else "")


def mark_dirty(connection: Connection, tenant_id: str, parent_keys: Sequence[str], *, now: datetime, resync: bool = False) -> int:
    """Mark every scope under *parent_keys* dirty (and due for a full round when *resync*)."""
    if not parent_keys:
        return 0
    s = schema.sync_state
    values: dict[str, Any] = {"dirty_since": now, "updated_at": now}
    if resync:
        values["resync_requested"] = True
    stmt = sa.update(s).where(s.c.tenant_id == tenant_id, s.c.parent_key.in_(list(parent_keys))).values(**values)
    return max(connection.execute(stmt).rowcount, 0)


def is_container(scope: Scope) -> bool:
    """Whether *scope* follows folders rather than items."""
    return scope.container or scope.strategy.method == CONTAINERS


def progress_line(p: Progress) -> str:
    """One line describing a running pass, for a progress display."""
    return f"{p.scope}: {p.items:,} items, {p.pages:,} pages, {p.rate:,.0f} items/s"
