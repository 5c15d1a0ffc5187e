"""The bookkeeping rows of each scope: its lease, its round state and the records of its passes.

``syncer_sync_state`` has one row per scope (a delta cursor): where the next round starts
(``delta_link``, or ``page_link`` of an interrupted round), whether it is dirty or due for a full
round, when it may run again, and who holds it. ``syncer_sync_runs`` has one row per pass. The pass
(:mod:`syncer.worker.sync`, :mod:`syncer.worker.rounds`, :mod:`syncer.worker.containers`), the fetches
(:mod:`syncer.worker.fetch`) and the worker (:mod:`syncer.worker.jobs`, which registers scopes, marks them
dirty and finds those due) all read and write these rows; their SQL lives here, once, because the rules
below depend on every writer following them.

**The lease** is ``leased_by``/``lease_until`` on the state row. It is taken unless another worker
holds an unexpired one (a lease under our own id is taken back at once: its holder was our killed
predecessor), renewed by every transaction that writes the scope's rows, and released when the
pass ends. Renewing fails with :class:`~syncer.errors.LeaseLost` if the lease was taken over, in
the same transaction as the rows, so a worker that stalled past its lease can never write over the
one that took over. Mirror rows are only written under a lease: one writer per scope across all
workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from syncer import mirror, schema
from syncer.errors import LeaseLost
from syncer.worker import passsql
from syncer.worker.scopes import Scope
from syncer.worker.writer import remove_rows

if TYPE_CHECKING:
    from syncer.spec import Mirror

__all__ = [
    "CLAIM_TTL", "LEASE_TTL", "RETIRED", "Clock", "ScopeStore", "claim_due", "drop_scope", "due_query", "due_scopes",
    "ensure_scope_rows", "is_due", "keys_under", "mark_dirty", "mark_stale", "oldest_scopes", "purge_runs", "request_resync", "scopes_named", "utcnow",
]

Clock = Callable[[], datetime]

LEASE_TTL = timedelta(minutes=5)
"""How long a scope stays leased without a page committed; a dead worker's scopes are free after it."""

RETIRED = "retired"
"""``_removed_reason`` of the rows of a scope its declaration no longer expands to (a user left the
fan-out group, a filter changed): Graph still has them, the spec no longer follows them."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class ScopeStore:
    """The SQL of one scope's bookkeeping rows: lease, round state, run records."""

    def __init__(self, engine: Engine, scope: Scope, *, worker: str, clock: Clock, lease_ttl: timedelta) -> None:
        self.engine = engine
        self.scope = scope
        self.worker = worker
        self.clock = clock
        self.lease_ttl = lease_ttl
        self.postgres = engine.dialect.name == "postgresql"
        self._k = {"k_tenant": scope.tenant_id, "k_scope": scope.key}

    def _key(self) -> list[Any]:
        s = schema.sync_state
        return [s.c.tenant_id == self.scope.tenant_id, s.c.scope_key == self.scope.key]

    def ensure(self, connection: Connection, *, dirty: bool = False) -> None:
        """Create the scope's state row if it is missing."""
        ensure_scope_rows(connection, [self.scope], dirty=dirty, now=self.clock())

    def take_lease(self, connection: Connection) -> bool:
        """Lease the scope to this worker unless another one holds it; whether we have it now."""
        return connection.execute(passsql.TAKE, self._take_params(None)).first() is not None

    def take(self, connection: Connection, *, async_commit: bool = False) -> Any | None:
        """Lease the scope to this worker and read its state row, in one statement (``UPDATE … RETURNING``,
        which PostgreSQL and SQLite 3.35+ both have); None when another worker holds it. The row also
        carries ``layout``, the columns ``db upgrade`` recorded for the scope's mirror table (None: none), and
        ``open_run``: whether a run of the scope is still ``running`` (its worker died; see :meth:`start_run`).
        The state row is created first if the scope has none. With *async_commit* (PostgreSQL), the
        transaction's commit does not wait for its WAL flush once the lease is taken (:data:`passsql.TAKE_ASYNC`)."""
        params = self._take_params(self.scope.mirror.table if self.scope.mirror is not None else None)
        statement = passsql.TAKE_ASYNC if async_commit and self.postgres else passsql.TAKE
        row = connection.execute(statement, params).first()
        if row is None:
            # A scope without a state row yet (a missing row and a lease held elsewhere look alike here;
            # creating it is a no-op for the latter).
            self.ensure(connection)
            row = connection.execute(statement, params).first()
        return row

    def _take_params(self, table: str | None) -> dict[str, Any]:
        now = self.clock()
        return {
            **self._k, "k_now": now, "k_worker": self.worker, "k_table": table,
            "leased_by": self.worker, "lease_until": now + self.lease_ttl, "updated_at": now,
        }

    def renew_lease(self, connection: Connection) -> None:
        """Extend our lease inside the page transaction; LeaseLost if another worker has it now."""
        now = self.clock()
        params = {**self._k, "k_worker": self.worker, "lease_until": now + self.lease_ttl, "updated_at": now}
        if connection.execute(passsql.MINE, params).rowcount != 1:
            raise LeaseLost(f"scope {self.scope.key!r}: the lease of worker {self.worker!r} was taken over")

    def release_lease(self, connection: Connection, **values: Any) -> None:
        """Give our lease back, writing *values* to the state row with it (nothing if it is no longer ours)."""
        params = {**self._k, "k_worker": self.worker, "leased_by": None, "lease_until": None, "updated_at": self.clock()}
        connection.execute(passsql.MINE, {**params, **values})

    def release_succeeded(self, connection: Connection, *, now: datetime, started: datetime, **values: Any) -> int:
        """Give our lease back after a pass that succeeded (started at *started*): recorded as the
        last success, failures forgotten, and the scope clean unless marked dirty since it started
        (a notification that came in while the pass ran keeps it dirty for another pass); *values* are
        written with it. How many rows changed (0: the lease is no longer ours)."""
        params = {
            **self._k, "k_worker": self.worker, "k_started": started, "leased_by": None, "lease_until": None,
            "updated_at": now, "last_success_at": now, "last_error": None, "failures": 0, "not_before": None,
        }
        return int(connection.execute(passsql.END_ROUND, {**params, **values}).rowcount)

    def end_round(self, connection: Connection, *, delta_link: str | None, now: datetime, started: datetime) -> None:
        """The last page of a pass that succeeded (started at *started*): store the round's *delta_link* and
        give the lease back (:meth:`release_succeeded`), in one statement of the page's transaction.
        LeaseLost (the caller rolls back the page) if another worker holds the lease now."""
        cursor = {"delta_link": delta_link, "page_link": None, "round_id": None, "round_full": False}
        if self.release_succeeded(connection, now=now, started=started, **cursor) != 1:
            raise LeaseLost(f"scope {self.scope.key!r}: the lease of worker {self.worker!r} was taken over")

    def state(self, connection: Connection) -> Any:
        s = schema.sync_state
        return connection.execute(sa.select(s).where(*self._key())).one()

    def owner_ids_under(self, connection: Connection) -> list[Any]:
        """The ``owner_ids`` of the scopes under the same parent (a mailbox's folders)."""
        s = schema.sync_state
        rows = connection.execute(
            sa.select(s.c.owner_ids).where(
                s.c.tenant_id == self.scope.tenant_id, s.c.parent_key == self.scope.parent_key, s.c.owner_ids.is_not(None)
            )
        )
        return [found for (found,) in rows]

    def update_state(self, connection: Connection, **values: Any) -> None:
        connection.execute(passsql.SCOPE, {**self._k, "updated_at": self.clock(), **values})

    def start_run(self, connection: Connection, *, full: bool, error: str | None = None, abandon: bool = True) -> int:
        """Record a pass that starts (we hold the lease); its id. *abandon*: whether a run of the scope may
        still be ``running`` (False when :meth:`take` said none is: one statement less)."""
        now = self.clock()
        if abandon:
            # We hold the lease: any run of this scope still "running" belongs to a worker that died.
            connection.execute(passsql.ABANDON_RUNS, {**self._k, "outcome": "abandoned", "finished_at": now})
        result = connection.execute(
            passsql.INSERT_RUN,
            {
                "tenant_id": self.scope.tenant_id, "scope_key": self.scope.key, "started_at": now, "full_round": full,
                "pages": 0, "upserted": 0, "deleted": 0, "outcome": "running", "error": error,
            },
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def update_run(self, connection: Connection, run_id: int, **values: Any) -> None:
        connection.execute(passsql.UPDATE_RUN, {"k_run": run_id, **values})

    def run_started_at(self, connection: Connection, run_id: int) -> datetime | None:
        r = schema.sync_runs
        value = connection.execute(sa.select(r.c.started_at).where(r.c.id == run_id)).scalar()
        return value


def _free_for(worker: str, now: datetime) -> sa.ColumnElement[bool]:
    """The scope's lease may be taken by *worker*: nobody holds it, it expired, or it is *worker*'s own
    (taken back at once: its holder was this worker id's killed predecessor)."""
    s = schema.sync_state
    return sa.or_(s.c.leased_by.is_(None), s.c.lease_until.is_(None), s.c.lease_until < now, s.c.leased_by == worker)


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


def mark_dirty(
    connection: Connection, tenant_id: str, parent_keys: Sequence[str], *, now: datetime, resync: bool = False,
    by_scope_key: bool = False,
) -> int:
    """Mark every scope under *parent_keys* dirty (and due for a full round when *resync*); how many
    rows changed.

    A scope that is already dirty and not leased is left as it is: no pass of it has started, and
    the pass that will start reads Graph after this notification's change, so the mark it has covers
    this one too. Rewriting it would cost a row version per notification in a burst. A leased scope
    gets ``dirty_since = now``: its running pass may have read past the change already, and a mark
    newer than the pass's start keeps the scope dirty for another pass when it ends. *by_scope_key*: the
    keys name scopes themselves (one To Do list of a container), not what they are under.
    """
    if not parent_keys:
        return 0
    s = schema.sync_state
    values: dict[str, Any] = {"dirty_since": now, "updated_at": now}
    column = s.c.scope_key if by_scope_key else s.c.parent_key
    where = [s.c.tenant_id == tenant_id, schema.one_of(column, parent_keys, dialect=connection.dialect.name)]
    if resync:
        values["resync_requested"] = True
    else:
        where.append(sa.or_(s.c.dirty_since.is_(None), s.c.leased_by.is_not(None)))
    stmt = sa.update(s).where(*where).values(**values)
    return max(connection.execute(stmt).rowcount, 0)


def wake_tenant(connection: Connection, tenant_id: str, *, now: datetime) -> int:
    """Every scope of *tenant_id* dirty and without back-off (its account signed in again: the passes
    recover what changed meanwhile by delta); how many rows changed."""
    s = schema.sync_state
    stmt = sa.update(s).where(s.c.tenant_id == tenant_id).values(
        dirty_since=sa.func.coalesce(s.c.dirty_since, sa.bindparam("now_", now, type_=schema.UtcDateTime)),
        not_before=None, failures=0, updated_at=now,
    )
    return max(connection.execute(stmt).rowcount, 0)


def is_due(state: Any) -> bool:
    """Whether a state row still asks for a pass (the row-level half of :func:`due_scopes`' filter): dirty,
    resync-requested or mid-round. A pass started for it that finds it not due lost a race with the pass that
    cleaned it (another worker's, or this worker's started from an older reading of :func:`due_scopes`)."""
    return state.dirty_since is not None or bool(state.resync_requested) or state.page_link is not None


def due_scopes(
    engine: Engine, *, worker: str, now: datetime, limit: int | None = None,
) -> Sequence[tuple[str, str, str | None]]:
    """``(tenant_id, scope_key, parent_key)`` of the scopes due for a pass, oldest mark first (the index's order; on
    PostgreSQL a scope without a mark, only resync-requested or mid-round, comes last), at most *limit*: dirty,
    resync-requested or mid-round, not postponed, not leased by another worker, and none of whose siblings another
    worker is passing (:func:`_sibling_passed_elsewhere`)."""
    with engine.connect() as connection:
        # SQLite runs one worker: no sibling is passed elsewhere (and the lookup per row would cost its one core).
        return connection.execute(due_query(worker, now, limit, siblings=connection.dialect.name != "sqlite")).all()


def claim_due(
    engine: Engine, *, worker: str, now: datetime, limit: int,
    pick: Callable[[Sequence[tuple[str, str, str | None]]], Sequence[tuple[str, str]]],
) -> Sequence[tuple[str, str, str | None]]:
    """PostgreSQL, several workers: :func:`due_scopes`, and the lease of the scopes *pick* chooses among them taken
    in the same transaction; the readings of all workers one at a time (a transaction-level advisory lock).

    A lease taken later, by the pass's thread, is invisible to another worker reading meanwhile: both would choose
    the same scope (one finding it ``busy``), or folders of one mailbox each (over Outlook's 4 requests per mailbox,
    a 429 that pauses the worker's tenant). One reading at a time sees every lease the previous one took. The pass
    then takes the lease as its own (:data:`syncer.worker.passsql.TAKE`), for :data:`LEASE_TTL`; the reading's lease
    lasts :data:`CLAIM_TTL`, so a scope whose pass never starts (withdrawn, the worker stopping) is free soon."""
    s = schema.sync_state
    with engine.begin() as connection:
        # Need not wait for its WAL flush: a claim a server crash loses costs nothing (the pass takes the lease itself).
        connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(DUE_LOCK)))
        rows = connection.execute(due_query(worker, now, limit)).all()
        chosen = pick(rows)
        if chosen:
            connection.execute(
                sa.update(s)
                .where(sa.tuple_(s.c.tenant_id, s.c.scope_key).in_(list(chosen)), _free_for(worker, now))
                .values(leased_by=worker, lease_until=now + CLAIM_TTL, updated_at=now)
            )
    return rows


DUE_LOCK = 0x5359_4E43_4455_45  # "SYNCDUE": the advisory lock of claim_due
CLAIM_TTL = timedelta(seconds=5)
"""How long :func:`claim_due` leases a scope for its pass to start (milliseconds, unless its threads are stuck)."""


def due_query(worker: str, now: datetime, limit: int | None = None, *, siblings: bool = True) -> sa.Select[Any]:
    """The statement of :func:`due_scopes` (read by the partial index of the due scopes, tests/test_steady_scale.py)."""
    s = schema.sync_state
    return (
        sa.select(s.c.tenant_id, s.c.scope_key, s.c.parent_key)
        .where(
            schema.sync_due(),  # the partial index's predicate: read from it, whatever the number of scopes
            sa.or_(s.c.not_before.is_(None), s.c.not_before <= now),
            # A lease under this worker's own id with no pass of it running here (the caller skips those) is stale:
            # left by its killed predecessor, or by a pass that could not release it because the database was down.
            # Waiting out its ttl would freeze the scope for minutes after an outage.
            _free_for(worker, now),
            ~_sibling_passed_elsewhere(s, worker=worker, now=now) if siblings else sa.true(),
        )
        .order_by(s.c.dirty_since)
        .limit(limit)
    )


SIBLING_FRESH = timedelta(seconds=60)
"""How recently another worker must have taken or renewed a sibling's lease (or written its row) for
:func:`due_scopes` to leave the scope to it: a worker that died holding one folder's lease holds back its siblings
about this long, not its lease's ttl."""


def _sibling_passed_elsewhere(s: sa.Table, *, worker: str, now: datetime) -> sa.ColumnElement[bool]:
    """Whether another worker is passing a scope of the same subscription-level scope (a folder of the same mailbox),
    by the ``(tenant_id, parent_key)`` index.

    Outlook allows 4 requests in flight per mailbox and app
    (https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits); each worker keeps its own
    passes under it, but two workers on folders of one mailbox may send 8, and every 429 pauses a worker's whole
    tenant (syncer.graph.budget). So a mailbox's folders go to the
    worker already on them; the others take other mailboxes. A pass renews its lease at each page, so a live lease
    written within :data:`SIBLING_FRESH` is a pass in progress (or about to start: :func:`claim_due`)."""
    o = s.alias("sibling")
    return sa.exists().where(
        o.c.tenant_id == s.c.tenant_id, o.c.parent_key == s.c.parent_key, o.c.leased_by != worker,
        o.c.lease_until >= now, o.c.updated_at >= now - SIBLING_FRESH,
    )


def scopes_named(engine: Engine, names: Sequence[str]) -> Sequence[tuple[str, str, str, str | None]]:
    """``(tenant_id, scope_key, name, parent_key)`` of every scope of the declarations *names*."""
    s = schema.sync_state
    with engine.connect() as connection:
        return connection.execute(
            sa.select(s.c.tenant_id, s.c.scope_key, s.c.name, s.c.parent_key).where(s.c.name.in_(list(names)))
        ).all()


def oldest_scopes(
    engine: Engine,
    name: str,
    column: str,
    *,
    before: datetime | None,
    limit: int,
    where: Sequence[sa.ColumnElement[bool]] = (),
) -> Sequence[Any]:
    """``(tenant_id, scope_key, parent_key, at)`` of up to *limit* scopes of declaration *name* whose time *column*
    (``last_success_at``, ``listed_at``) is at or before *before*, oldest first; with *before* None, those whose
    *column* is null (never succeeded, never listed).

    A range of the ``(name, column)`` index: what it reads grows with *limit*, never with the number of scopes.
    """
    s = schema.sync_state
    at = s.c[column]
    with engine.connect() as connection:
        return connection.execute(
            sa.select(s.c.tenant_id, s.c.scope_key, s.c.parent_key, at)
            .where(s.c.name == name, at.is_(None) if before is None else at <= before, *where)
            .order_by(at)
            .limit(limit)
        ).all()


def mark_stale(connection: Connection, keys: Sequence[tuple[str, str]], *, now: datetime) -> int:
    """Mark dirty the scopes *keys* ``(tenant_id, scope_key)`` that are not dirty yet; how many."""
    s = schema.sync_state
    by_tenant: dict[str, list[str]] = {}
    for tenant_id, key in keys:
        by_tenant.setdefault(tenant_id, []).append(key)
    marked = 0
    for tenant_id, scope_keys in by_tenant.items():  # one statement per tenant, not per scope
        marked += connection.execute(
            sa.update(s)
            .where(s.c.tenant_id == tenant_id, schema.one_of(s.c.scope_key, scope_keys, dialect=connection.dialect.name),
                   s.c.dirty_since.is_(None))
            .values(dirty_since=now, updated_at=now)
        ).rowcount
    return marked


def request_resync(connection: Connection, keys: Sequence[tuple[str, str]], *, now: datetime) -> None:
    """Make the next pass of each scope in *keys* ``(tenant_id, scope_key)`` a full round, and mark it dirty."""
    s = schema.sync_state
    by_tenant: dict[str, list[str]] = {}
    for tenant_id, key in keys:
        by_tenant.setdefault(tenant_id, []).append(key)
    for tenant_id, scope_keys in by_tenant.items():
        connection.execute(
            sa.update(s)
            .where(s.c.tenant_id == tenant_id, schema.one_of(s.c.scope_key, scope_keys, dialect=connection.dialect.name))
            .values(resync_requested=True, dirty_since=now, updated_at=now)
        )


def relist(connection: Connection, tenant_id: str, key: str, url: str, *, now: datetime) -> None:
    """Make the next pass of scope *key* an incremental round from *url* (its first page), and mark it dirty: it reads
    everything again, without a sweep, and ends with a fresh deltaLink. A round in progress is left to finish."""
    s = schema.sync_state
    connection.execute(
        sa.update(s)
        .where(s.c.tenant_id == tenant_id, s.c.scope_key == key, s.c.page_link.is_(None), s.c.delta_link.is_not(None))
        .values(delta_link=url, dirty_since=now, listed_at=now, updated_at=now)
    )


def keys_under(connection: Connection, tenant_id: str, parent_key: str) -> list[str]:
    """The scope keys registered under *parent_key* (a container and the child scopes it found)."""
    s = schema.sync_state
    return list(
        connection.execute(
            sa.select(s.c.scope_key).where(s.c.tenant_id == tenant_id, s.c.parent_key == parent_key)
        ).scalars()
    )


def drop_scope(
    connection: Connection,
    tenant_id: str,
    key: str,
    *,
    mirror_spec: Mirror | None,
    delete: str,
    reason: str,
    now: datetime,
    worker: str | None = None,
) -> int | None:
    """Forget a scope: its state row, and its rows in the mirror table; how many rows went.

    Rows go as the declaration says: deleted (``delete: hard``) or soft-deleted with *reason*. With
    *worker*, only when no other worker holds the scope's lease (``None``: nothing done, the caller
    tries again later), so that no pass is writing the rows being removed.
    """
    s = schema.sync_state
    where = [s.c.tenant_id == tenant_id, s.c.scope_key == key]
    if worker is not None:
        where.append(_free_for(worker, now))
    if connection.execute(sa.delete(s).where(*where)).rowcount != 1 and worker is not None:
        return None
    if mirror_spec is None:
        return 0
    t = mirror.build_table(mirror_spec)
    return remove_rows(connection, t, [t.c.tenant_id == tenant_id, t.c._scope == key], hard=delete == "hard", reason=reason, now=now)


def purge_runs(engine: Engine, *, started_before: datetime, batch: int = 5_000) -> int:
    """Delete the records of passes that started before *started_before* and have finished; how many.

    Oldest first by id (ids grow with time; the table has no index on time, and needs none for
    this): a batch at a time, stopping at the first run that is recent enough. A run that a round in
    progress still refers to (``round_id``: its start decides the round's sweep) is kept.
    """
    r, s = schema.sync_runs, schema.sync_state
    # Read once: a round that starts during the purge refers to a run too recent to be purged.
    with engine.connect() as connection:
        kept = set(connection.execute(sa.select(s.c.round_id).where(s.c.round_id.is_not(None))).scalars())
    total, after = 0, 0
    while True:
        with engine.begin() as connection:
            rows = connection.execute(
                sa.select(r.c.id, r.c.started_at, r.c.finished_at).where(r.c.id > after).order_by(r.c.id).limit(batch)
            ).all()
            if not rows:
                return total
            after = rows[-1].id
            old = [
                row.id for row in rows
                if row.started_at < started_before and row.finished_at is not None
                and row.id not in kept
            ]
            if old:
                total += connection.execute(
                    sa.delete(r).where(schema.one_of(r.c.id, old, dialect=connection.dialect.name))
                ).rowcount
        if rows[-1].started_at >= started_before:
            return total
