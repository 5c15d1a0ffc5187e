"""The durable notification queue on ``syncer_inbox``: the receiver puts, the worker claims and acks.

Why a table and not a broker: the inbox must be as durable as the mirror it feeds, and the same
database already is. A notification is acknowledged to Graph (2xx) only after its row is committed.

Duplicates: Graph delivers some notifications more than once (https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks). ``dedupe_key`` is unique,
and ``put`` inserts with ON CONFLICT DO NOTHING, so a redelivery that arrives while the first copy
is still waiting is absorbed. When the worker *claims* a row the key is rewritten to a per-row value:
from then on a new notification with the same key is stored again. That is deliberate: many items
(directory users, lifecycle events) carry no etag, so "same key" can mean "the same thing changed
again", and a change that arrives while a sync pass is already running must trigger another pass.
The worker's processing (a delta sync) is idempotent, so the extra row costs one cheap pass.

Group commit (one transaction for the rows of many concurrent requests) is :mod:`syncer.receiver.groupcommit`;
it writes through :meth:`Inbox.put_rows`.

Claiming: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so that several workers on several hosts share the
queue without blocking each other; on SQLite (one writer at a time anyway) the same UPDATE without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncer import schema
from syncer.errors import DatabaseError
from syncer.storable import has_nul, storable, storable_json

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class Row(NamedTuple):
    """An encoded inbox row, ready for :meth:`Inbox.put_rows` (a tuple: cheap on the hot path)."""

    tenant_id: str
    subscription_id: str
    kind: str
    event: str
    resource: str | None
    resource_id: str | None
    dedupe_key: str
    payload: str  # JSON text


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)  # not frozen: cheaper to build, one per stored notification; treat as immutable
class NewItem:
    """A row to put in the inbox (built by the receiver from an accepted notification)."""

    tenant_id: str
    subscription_id: str
    kind: str  # "change" | "lifecycle"
    event: str  # changeType or lifecycleEvent
    resource: str | None
    resource_id: str | None
    dedupe_key: str
    payload: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class InboxItem:
    """A claimed row, as the worker sees it."""

    id: int
    tenant_id: str
    subscription_id: str
    kind: str
    event: str
    resource: str | None
    resource_id: str | None
    payload: Mapping[str, Any]
    received_at: datetime
    attempts: int
    last_error: str | None


class Inbox:
    """Operations on the inbox table; thread-safe (each call uses its own pooled connection)."""

    def __init__(self, engine: Engine, *, table: sa.Table = schema.inbox, clock: Clock = utcnow) -> None:
        self.engine = engine
        self.table = table
        self.clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        self._sqlite = engine.dialect.name == "sqlite"
        name = engine.dialect.identifier_preparer.format_table(table)
        cols = "tenant_id, subscription_id, kind, event, resource, resource_id, dedupe_key, payload, received_at, attempts"
        # json_to_recordset parses the batch once; ``r->>0 ... r->7`` over json_array_elements re-parsed
        # each row's text once per column (measured: half the server time per row, with the indexes).
        self._pg_insert_sql = (
            f"INSERT INTO {name} ({cols}) SELECT r.t, r.s, r.k, r.e, r.r, r.i, r.d, r.p, %s, 0 "
            "FROM json_to_recordset(%s::json) AS r(t text, s text, k text, e text, r text, i text, d text, p json) "
            "ON CONFLICT (dedupe_key) DO NOTHING RETURNING dedupe_key"
        )
        self._sqlite_insert_sql = (
            f"INSERT INTO {name} ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT (dedupe_key) DO NOTHING"
        )

    # --- writing (receiver) ---

    def encode(self, items: Sequence[NewItem]) -> list[Row]:
        """Rows ready for :meth:`put_rows` (payload serialised, duplicates within *items* dropped).

        Done by the caller's thread, not the committer's: a payload that cannot be serialised fails
        only its own request, and the committer holds the connection for less time. A U+0000 in
        Graph's data becomes U+FFFD (:mod:`syncer.storable`): PostgreSQL could not store it."""
        rows: dict[str, Row] = {}
        for item in items:
            if item.dedupe_key not in rows:
                payload = orjson.dumps(item.payload)
                row = Row(
                    item.tenant_id, item.subscription_id, item.kind, item.event, item.resource,
                    item.resource_id, item.dedupe_key, payload.decode(),
                )
                if has_nul(payload):
                    # Graph data with U+0000, which PostgreSQL cannot store: syncer.storable's rule,
                    # on every field (the receiver's text fields are copies of payload values).
                    row = Row(*storable(row[:7]), storable_json(item.payload).decode())
                rows[item.dedupe_key] = row
        return list(rows.values())

    def put_rows(self, connection: Connection, rows: Sequence[Row]) -> set[str]:
        """Insert encoded *rows* inside the caller's transaction; the dedupe keys that were new.

        Raw driver SQL on purpose: this is the receiver's hot path, and SQLAlchemy's insertmanyvalues
        renders a new multi-VALUES statement for every batch size, which psycopg then re-parses
        (~90 us per row here). PostgreSQL gets one constant, prepared ``INSERT ... SELECT ... FROM
        json_to_recordset(%s)`` per batch (half the client CPU of ``unnest`` over eight arrays, and
        a fifth of the text-array form, measured); SQLite (in-process, no round trips) one
        ``INSERT`` per row.
        """
        if not rows:
            return set()
        unique = list({r.dedupe_key: r for r in rows}.values())
        now = self.clock()
        dbapi: Any = connection.connection.dbapi_connection
        driver_error = self.engine.dialect.loaded_dbapi.Error
        cursor = dbapi.cursor()
        try:
            if self._postgres:
                # The whole batch travels as ONE JSON array (payloads embedded as they are, not
                # re-encoded): one text parameter costs psycopg far less than a parameter per value.
                # One-letter keys: the columns of the recordset in _pg_insert_sql.
                batch = orjson.dumps([
                    {"t": r.tenant_id, "s": r.subscription_id, "k": r.kind, "e": r.event, "r": r.resource,
                     "i": r.resource_id, "d": r.dedupe_key, "p": orjson.Fragment(r.payload)}
                    for r in unique
                ]).decode()
                cursor.execute(self._pg_insert_sql, (now, batch))
                return {r[0] for r in cursor.fetchall()}
            if self._sqlite:
                # SQLAlchemy's SQLite DateTime storage format (naive UTC), so that reads parse it.
                stamp = now.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
                new: set[str] = set()
                for row in unique:
                    cursor.execute(self._sqlite_insert_sql, (*row, stamp))
                    if cursor.rowcount == 1:
                        new.add(row.dedupe_key)
                return new
        except driver_error as exc:
            # Raw driver errors become SQLAlchemy's, so that callers tell a bad row (DataError,
            # IntegrityError) from a lost connection the same way as everywhere else.
            raise sa.exc.DBAPIError.instance(
                "INSERT INTO inbox", None, exc, driver_error,
                connection_invalidated=self.engine.dialect.is_disconnect(exc, dbapi, cursor),
                dialect=self.engine.dialect,
            ) from exc
        finally:
            cursor.close()
        raise DatabaseError(f"the inbox supports PostgreSQL and SQLite, not {self.engine.dialect.name}")

    def put_in(self, connection: Connection, items: Sequence[NewItem]) -> set[str]:
        """Insert *items* inside the caller's transaction; the dedupe keys that were new."""
        return self.put_rows(connection, self.encode(items))

    def put(self, items: Sequence[NewItem]) -> int:
        """Store *items* in one transaction (duplicates of waiting rows absorbed); how many were new."""
        try:
            with self.engine.begin() as conn:
                return len(self.put_in(conn, items))
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"could not store notifications: {type(exc).__name__}") from exc

    # --- reading (worker) ---

    def claim(self, worker: str, *, limit: int = 100, lease: timedelta = timedelta(minutes=5)) -> list[InboxItem]:
        """Take up to *limit* waiting rows for *worker* until ``now + lease`` (oldest first).

        A row whose lease ran out (its worker died) is waiting again. Claiming rewrites the row's
        dedupe key so that a notification arriving from now on is stored anew (module docstring).
        """
        t = self.table
        now = self.clock()
        waiting = sa.select(t.c.id).where(
            t.c.processed_at.is_(None),
            sa.or_(t.c.claimed_until.is_(None), t.c.claimed_until <= now),
        )
        # (processed_at, id) is the index's own order: with processed_at IS NULL it is id order.
        waiting = waiting.order_by(t.c.processed_at, t.c.id).limit(limit)
        if self._postgres:
            # A locking CTE is evaluated once; ``id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)``
            # may be re-run by the planner as a semi-join and then claims more than *limit* rows.
            chosen = waiting.with_for_update(skip_locked=True).cte("chosen")
            picked: Any = t.c.id == chosen.c.id
        else:
            picked = t.c.id.in_(waiting.scalar_subquery())
        stmt = (
            sa.update(t)
            .where(picked)
            # Re-checked by the UPDATE itself: on SQLite this is what makes two claimers disjoint.
            .where(t.c.processed_at.is_(None), sa.or_(t.c.claimed_until.is_(None), t.c.claimed_until <= now))
            .values(
                claimed_by=worker,
                claimed_until=now + lease,
                attempts=t.c.attempts + 1,
                dedupe_key=sa.literal("claimed:") + sa.cast(t.c.id, sa.String),
            )
            .returning(
                t.c.id, t.c.tenant_id, t.c.subscription_id, t.c.kind, t.c.event, t.c.resource,
                t.c.resource_id, t.c.payload, t.c.received_at, t.c.attempts, t.c.last_error,
            )
        )
        try:
            with self.engine.begin() as conn:
                if self._postgres:
                    # The inbox is a queue: a burst makes the planner's statistics wrong for minutes
                    # (it still thinks few rows wait) and it then sorts *every* waiting row to pick
                    # the oldest few, per claim: 90 ms a batch with 100k waiting, growing with the
                    # backlog. Without sorting, the only plan left walks the (processed_at, id)
                    # index and stops after *limit* rows: ~7 ms whatever the backlog.
                    conn.exec_driver_sql("SET LOCAL enable_sort = off")
                rows = conn.execute(stmt).all()
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"could not claim inbox rows: {type(exc).__name__}") from exc
        items = [
            InboxItem(
                id=r.id, tenant_id=r.tenant_id, subscription_id=r.subscription_id, kind=r.kind, event=r.event,
                resource=r.resource, resource_id=r.resource_id, payload=r.payload,
                received_at=r.received_at, attempts=r.attempts, last_error=r.last_error,
            )
            for r in rows
        ]
        items.sort(key=lambda i: i.id)
        return items

    def _one_of(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        return schema.one_of(column, values, dialect=self.engine.dialect.name)

    def ack(self, ids: Iterable[int], *, worker: str, forget: Mapping[int, Mapping[str, Any]] | None = None) -> int:
        """Mark claimed rows done; only rows still claimed by *worker* (a lapsed lease is not ours).

        *forget*: rows among *ids* whose payload holds a rich notification's decrypted resource (personal
        data) -> that payload: stored again without ``decryptedContent`` in the same transaction, so the
        resource lives in the inbox only until its row is written (a replay then reads it from Graph)."""
        t = self.table
        ids = list(ids)
        if not ids:
            return 0
        stmt = (
            sa.update(t)
            .where(self._one_of(t.c.id, ids), t.c.claimed_by == worker, t.c.processed_at.is_(None))
            .values(processed_at=self.clock(), claimed_until=None, last_error=None)
        )
        kept = set(ids)
        scrubbed = [
            {"b_id": row_id, "b_payload": {k: v for k, v in payload.items() if k != "decryptedContent"}}
            for row_id, payload in (forget or {}).items() if row_id in kept
        ]
        with self.engine.begin() as conn:
            done = conn.execute(stmt).rowcount
            if scrubbed:
                conn.execute(
                    sa.update(t).where(t.c.id == sa.bindparam("b_id"), t.c.claimed_by == worker)
                    .values(payload=sa.bindparam("b_payload", type_=t.c.payload.type)),
                    scrubbed,
                )
            return done

    def take_back(self, worker: str) -> int:
        """Make claimable at once the rows *worker* claimed and has not acknowledged; how many.

        For a worker that starts, or whose last drain died between claiming and acknowledging: rows
        still claimed under its id would otherwise wait out their claim lease (5 minutes).
        """
        t = self.table
        stmt = (
            sa.update(t)
            .where(t.c.claimed_by == worker, t.c.processed_at.is_(None))
            .values(claimed_until=None)
        )
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).rowcount)

    def release(
        self, ids: Iterable[int], *, worker: str, error: str | None = None, retry_in: timedelta | None = None
    ) -> int:
        """Give claimed rows back (processing failed): waiting again now, or after *retry_in*."""
        t = self.table
        ids = list(ids)
        if not ids:
            return 0
        until = self.clock() + retry_in if retry_in else None
        stmt = (
            sa.update(t)
            .where(self._one_of(t.c.id, ids), t.c.claimed_by == worker, t.c.processed_at.is_(None))
            .values(claimed_by=None, claimed_until=until, last_error=error[:2000] if error else None)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    def replay(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        subscription_id: str | None = None,
        tenant_id: str | None = None,
    ) -> int:
        """Put processed rows received in ``[since, until)`` (optionally of one subscription/tenant) back in the queue."""
        t = self.table
        conditions: list[Any] = [t.c.processed_at.is_not(None)]
        if since is not None:
            conditions.append(t.c.received_at >= since)
        if until is not None:
            conditions.append(t.c.received_at < until)
        if subscription_id is not None:
            conditions.append(t.c.subscription_id == subscription_id)
        if tenant_id is not None:
            conditions.append(t.c.tenant_id == tenant_id)
        stmt = (
            sa.update(t)
            .where(*conditions)
            .values(processed_at=None, claimed_by=None, claimed_until=None, attempts=0, last_error=None)
        )
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount

    def depth(self) -> int:
        """How many rows are not processed yet (waiting or claimed)."""
        t = self.table
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(sa.select(sa.func.count()).where(t.c.processed_at.is_(None))).scalar_one())
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"could not count the inbox: {type(exc).__name__}") from exc

    def purge(self, *, processed_before: datetime, batch: int = 10_000) -> int:
        """Delete processed rows older than *processed_before* (the inbox is a queue, not an archive).

        In transactions of *batch* rows, oldest first through the ``(processed_at, id)`` index: an
        hour of a busy tenant is millions of rows, and one huge DELETE would hold its locks (and, on
        SQLite, the database's only write lock) for as long as it takes.
        """
        t = self.table
        total = 0
        while True:
            oldest = sa.select(t.c.id).where(t.c.processed_at < processed_before).order_by(t.c.processed_at).limit(batch)
            with self.engine.begin() as conn:
                deleted = conn.execute(sa.delete(t).where(t.c.id.in_(oldest.scalar_subquery()))).rowcount
            total += deleted
            if deleted < batch:
                return total
