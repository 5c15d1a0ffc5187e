"""syncer's own tables (SQLAlchemy Core); connecting to the database is :mod:`syncer.database`.

These are the tables alembic manages (``migrations/`` is wired to :data:`metadata`). The mirror
tables, whose shape comes from subscriptions.yaml, live in :mod:`syncer.mirror` on a separate
MetaData so that alembic's drift check never sees them.

Every row that belongs to a tenant carries ``tenant_id`` from day one: one database may mirror
several tenants.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)



class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware, on every backend.

    PostgreSQL's ``timestamptz`` does this by itself. SQLite has no time zone type: SQLAlchemy stores
    the wall-clock digits without the offset and hands back naive datetimes. So the value is turned
    into UTC before it is stored and marked UTC when it is read, here, once, instead of in every reader.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


subscriptions = sa.Table(
    "syncer_subscriptions",
    metadata,
    # One row per live Graph subscription syncer created or adopted.
    sa.Column("subscription_id", sa.String(64), primary_key=True, comment="Graph's subscription id"),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, comment="declaration name in subscriptions.yaml"),
    sa.Column(
        "scope_key",
        sa.String(500),
        nullable=False,
        comment="the expanded scope, e.g. users or users/{id}/messages",
    ),
    sa.Column("resource", sa.String(1000), nullable=False),
    sa.Column("change_type", sa.String(100), nullable=False),
    sa.Column("notification_url", sa.String(2000), nullable=False),
    sa.Column("lifecycle_url", sa.String(2000), nullable=True),
    sa.Column("client_state", sa.String(128), nullable=False, comment="secret: never printed or logged"),
    sa.Column("include_resource_data", sa.Boolean, nullable=False, default=False),
    sa.Column("encryption_certificate_id", sa.String(128), nullable=True),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column(
        "status", sa.String(32), nullable=False, default="active", comment="active | removed | reauthorize"
    ),
    sa.Index(None, "tenant_id", "name"),
    sa.Index(None, "expires_at"),
)

inbox = sa.Table(
    "syncer_inbox",
    metadata,
    # The durable notification queue: the receiver writes, the worker claims.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("subscription_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False, comment="change | lifecycle"),
    sa.Column("event", sa.String(64), nullable=False, comment="changeType or lifecycleEvent"),
    sa.Column("resource", sa.String(2000), nullable=True),
    sa.Column("resource_id", sa.String(500), nullable=True),
    sa.Column(
        "dedupe_key", sa.String(64), nullable=False, comment="hash that makes Graph's duplicates idempotent"
    ),
    sa.Column(
        "payload", sa.JSON, nullable=False, comment="the notification item (decrypted resource data included)"
    ),
    sa.Column("received_at", UtcDateTime, nullable=False),
    sa.Column("claimed_by", sa.String(200), nullable=True),
    sa.Column("claimed_until", UtcDateTime, nullable=True),
    sa.Column("processed_at", UtcDateTime, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.UniqueConstraint("dedupe_key"),
    sa.Index(None, "processed_at", "id"),
    # No index on subscription_id: every stored notification would pay for it, and only the rare
    # replay by subscription would use it (migration 0003).
)

sync_state = sa.Table(
    "syncer_sync_state",
    metadata,
    # One row per scope (a delta collection): its cursor, its lease and whether it is dirty.
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("scope_key", sa.String(500), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, comment="declaration name in subscriptions.yaml"),
    sa.Column("table_name", sa.String(200), nullable=False),
    sa.Column("delta_link", sa.Text, nullable=True, comment="where the next pass starts; null = enumerate"),
    sa.Column("resync_requested", sa.Boolean, nullable=False, default=False),
    sa.Column(
        "dirty_since", UtcDateTime, nullable=True, comment="a notification arrived since the last pass"
    ),
    sa.Column("not_before", UtcDateTime, nullable=True, comment="throttled: do not run again before"),
    sa.Column("leased_by", sa.String(200), nullable=True),
    sa.Column("lease_until", UtcDateTime, nullable=True),
    sa.Column("last_success_at", UtcDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    # Added in 0002 (sync engine): where a scope comes from and the state of a round in progress.
    sa.Column(
        "parent_key",
        sa.String(500),
        nullable=True,
        comment="the subscription-level scope this one was expanded from (a mailbox for its folders)",
    ),
    sa.Column("page_link", sa.Text, nullable=True, comment="nextLink of an unfinished round: resume here"),
    sa.Column("round_id", sa.BigInteger, nullable=True, comment="sync run that started the round in progress"),
    sa.Column(
        "round_full",
        sa.Boolean,
        nullable=False,
        default=False,
        server_default=sa.false(),
        comment="the round in progress enumerates everything: sweep unseen rows at its end",
    ),
    sa.Column(
        "failures", sa.Integer, nullable=False, default=0, server_default="0", comment="consecutive failed passes"
    ),
    # Added in 0005 (owner columns): ids of the scope's owners looked up in Graph (syncer.owners).
    sa.Column(
        "owner_ids",
        sa.JSON,
        nullable=True,
        comment="owner column -> id looked up once (a user named by UPN, a folder by a well-known name)",
    ),
    # Added in 0009 (steady state at scale): what the safety net finds by an index range, never a scan of every scope.
    sa.Column(
        "listed_at",
        UtcDateTime,
        nullable=True,
        comment="when the scope was last read from its first page: a full round started, or a relist",
    ),
    sa.Index(None, "tenant_id", "parent_key"),
    # The safety net's oldest listings of one declaration (syncer.worker.scopestate); its oldest successes below.
    sa.Index(None, "name", "listed_at"),
)


def sync_due() -> sa.ColumnElement[bool]:
    """A scope has work waiting: dirty, resync requested, or a round in progress.

    The predicate of the partial index the worker's due query reads; the query must repeat it as it is here (SQLite
    uses a partial index only for a query whose WHERE holds the index's own terms,
    https://www.sqlite.org/partialindex.html), so both are built by this function.
    """
    s = sync_state.c
    return sa.or_(s.dirty_since.is_not(None), s.resync_requested.is_(True), s.page_link.is_not(None))


# Few rows (the scopes with work waiting) whatever the number of scopes: a drain reads the due scopes from it.
sa.Index("ix_syncer_sync_state_due", sync_state.c.dirty_since, postgresql_where=sync_due(), sqlite_where=sync_due())
# The safety net's oldest successes among the clean scopes: a scope it marked leaves the index, so that a backlog
# marked over several ticks is not read again by each of them.
sa.Index("ix_syncer_sync_state_name_last_success_at", sync_state.c.name, sync_state.c.last_success_at,
         postgresql_where=sync_state.c.dirty_since.is_(None), sqlite_where=sync_state.c.dirty_since.is_(None))

sync_runs = sa.Table(
    "syncer_sync_runs",
    metadata,
    # One row per sync pass, for `syncer status` and post-mortems.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("scope_key", sa.String(500), nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.Column(
        # Not "full": a reserved word in PostgreSQL (FULL JOIN), which every query would have to quote.
        "full_round", sa.Boolean, nullable=False, default=False, comment="a full enumeration (initial or resync)"
    ),
    sa.Column("pages", sa.Integer, nullable=False, default=0),
    sa.Column("upserted", sa.Integer, nullable=False, default=0),
    sa.Column("deleted", sa.Integer, nullable=False, default=0),
    sa.Column(
        "outcome",
        sa.String(32),
        nullable=False,
        default="running",
        comment="running | ok | error | throttled",
    ),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index(None, "tenant_id", "scope_key", "started_at"),
    sa.Index(None, "started_at"),  # the status page's last 24 hours (migration 0004)
)

mirror_tables = sa.Table(
    "syncer_mirror_tables",
    metadata,
    # Which tables syncer derived from the spec, and the column layout it gave them.
    sa.Column("table_name", sa.String(200), primary_key=True),
    sa.Column("subscription_name", sa.String(200), nullable=False),
    sa.Column("columns", sa.JSON, nullable=False, comment="[{name, type, field}] as last applied"),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

applied_spec = sa.Table(
    "syncer_applied_spec",
    metadata,
    # The subscriptions.yaml the database was last brought in line with (syncer.applied): running
    # workers compare it with their own copy and never act on an older one.
    sa.Column("key", sa.String(32), primary_key=True, comment="always 'spec'"),
    sa.Column("fingerprint", sa.String(64), nullable=False, comment="sha256 of the spec's declarations"),
    sa.Column("applied_by", sa.String(64), nullable=False, comment="db upgrade | reconcile"),
    sa.Column("applied_at", UtcDateTime, nullable=False),
    sa.Column("path", sa.String(1000), nullable=False),
)

locks = sa.Table(
    "syncer_locks",
    metadata,
    # Named locks on databases without advisory locks (SQLite): reconcile, the single worker.
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("acquired_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
)

sign_ins = sa.Table(
    "syncer_sign_ins",
    metadata,
    # Delegated accounts (auth: delegated) a worker has seen: whether each must sign in again. Written by
    # the worker, read by `syncer status` and the receiver's /metrics (syncer_sign_in_required).
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, comment="tenant entry name in subscriptions.yaml"),
    sa.Column("account", sa.String(320), nullable=False, comment="the user principal name declared"),
    sa.Column(
        "required_since", UtcDateTime, nullable=True, comment="refresh refused: `syncer login NAME` needed; null = signed in"
    ),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)


def one_of(column: sa.ColumnElement[Any], values: Sequence[Any], *, dialect: str) -> sa.ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``, one parameter whatever the count.

    An IN list of 500 ids is rendered, sent and parsed as 500 parameters on every call (40 ms of a
    worker's drain batch); the array form has one text, which psycopg also prepares once.
    """
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))
