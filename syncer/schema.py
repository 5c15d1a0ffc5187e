"""syncer's own tables (SQLAlchemy Core) and the engine factory.

These are the tables alembic manages (``migrations/`` is wired to :data:`metadata`). The mirror
tables, whose shape comes from subscriptions.yaml, live in :mod:`syncer.mirror` on a separate
MetaData so that alembic's drift check never sees them.

Every row that belongs to a tenant carries ``tenant_id`` from day one: one database may mirror
several tenants.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

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
    sa.Index(None, "tenant_id", "parent_key"),
)

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
        "full", sa.Boolean, nullable=False, default=False, comment="a full enumeration (initial or resync)"
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

locks = sa.Table(
    "syncer_locks",
    metadata,
    # Named locks on databases without advisory locks (SQLite): reconcile, the single worker.
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("acquired_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
)


def is_sqlite(engine_or_url: Engine | str | sa.URL) -> bool:
    """Whether the engine or URL points to SQLite."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else sa.make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def one_of(column: sa.ColumnElement[Any], values: Sequence[Any], *, dialect: str) -> sa.ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``, one parameter whatever the count.

    An IN list of 500 ids is rendered, sent and parsed as 500 parameters on every call (40 ms of a
    worker's drain batch); the array form has one text, which psycopg also prepares once.
    """
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))


def normalize_url(url: str, *, base_dir: Path | None = None) -> str:
    """Make a database URL usable: relative SQLite paths are taken from *base_dir*, and
    ``postgresql://`` selects psycopg 3 (SQLAlchemy's default would be psycopg2, which we do not ship)."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:" and base_dir is not None:
        path = Path(parsed.database)
        if not path.is_absolute():
            parsed = parsed.set(database=str((base_dir / path).resolve()))
    return parsed.render_as_string(hide_password=False)


def _create_private_sqlite_file(url: str) -> None:
    """Create a missing SQLite database file as owner-only (0600) before SQLite does.

    The file holds the mirror, subscriptions and clientState secrets; SQLite would create it with
    0644 under the usual umask. Its -wal and -shm files take the main file's permissions (SQLite's
    unix VFS, findCreateFileMode in os_unix.c; tests/test_migrations.py checks), so creating this one
    right covers them. An existing
    file keeps whatever permissions its owner chose.
    """
    parsed = sa.make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or parsed.query.get("mode") == "memory":
        return
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        pass  # a missing folder, no permission: SQLite's own error on connecting says so


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the receiver write while the worker reads; busy_timeout makes writers queue instead
    # of failing at once; synchronous=NORMAL is durable across process crashes in WAL mode.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# Bounds on every PostgreSQL connection, as libpq connection parameters
# (https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS). Without them a
# connection whose peer vanished without a RST (a failover, a dropped NAT entry) blocks its user
# for the kernel's 15-minute retransmission limit or, when idle, forever. A parameter given in the
# URL's query wins over these, e.g. ``?tcp_user_timeout=60000&options=-c%20statement_timeout%3D0``.
POSTGRES_BOUNDS: dict[str, str] = {
    "connect_timeout": "10",  # seconds for the whole connection start-up
    "keepalives": "1",
    "keepalives_idle": "10",  # an idle connection is probed after 10 s of silence,
    "keepalives_interval": "5",  # every 5 s,
    "keepalives_count": "3",  # and declared dead after 3 unanswered probes (~25 s)
    "tcp_user_timeout": "20000",  # ms: data sent and not acknowledged for 20 s -> the connection is dead
}
# A statement the server runs longer than this is cancelled by the server (a lock wait, a stall).
STATEMENT_TIMEOUT = "60s"
# The client's own bound on each wait for the server (seconds), for what TCP cannot see: a server
# that acknowledges bytes but never answers (a frozen host, a proxy to a dead peer). Beyond the
# statement timeout, so that it only fires when the server could not cancel the statement itself.
# ``?syncer_io_timeout=N`` in the URL changes it (0: no bound); syncer takes it out of the URL.
IO_TIMEOUT_PARAM = "syncer_io_timeout"
IO_TIMEOUT = 75.0

# SQLSTATEs after which a session stays unusable although the database may be fine again
# (https://www.postgresql.org/docs/current/errcodes-appendix.html): the session was opened read-only
# (default_transaction_read_only, a hot standby) and keeps that default forever; the server is
# terminating it (admin shutdown, crash shutdown, cannot connect now). Class 08 is a lost connection.
SESSION_FATAL_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03", "57P05"})


def session_unusable(error: BaseException) -> bool:
    """Whether a driver *error* means its connection must be replaced, not reused (pure).

    Such an error outlives its cause on the connection it happened on: reused, the connection would
    fail the same way after the database recovered (a read-only session stays read-only)."""
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in SESSION_FATAL_SQLSTATES or sqlstate.startswith("08")
    # psycopg raises OperationalError without a SQLSTATE for a connection failure on the client side
    # (closed by the server, reset, our I/O bound).
    return any(cls.__name__ in ("OperationalError", "InterfaceError") for cls in type(error).__mro__)


def postgres_url(url: sa.URL, *, io_timeout: float | None = IO_TIMEOUT) -> tuple[sa.URL, float | None]:
    """*url* with :data:`POSTGRES_BOUNDS` and the statement timeout added where its query sets none,
    and the client I/O bound (seconds, None for none) taken out of it (libpq would refuse the key)."""
    query = dict(url.query)
    raw_io = query.pop(IO_TIMEOUT_PARAM, None)
    if raw_io is not None:
        seconds = float(raw_io if isinstance(raw_io, str) else raw_io[-1])
        io_timeout = seconds if seconds > 0 else None
    for key, value in POSTGRES_BOUNDS.items():
        query.setdefault(key, value)
    options = query.get("options", "")
    options = options if isinstance(options, str) else " ".join(options)
    if "statement_timeout" not in options:
        query["options"] = f"{options} -c statement_timeout={STATEMENT_TIMEOUT}".strip()
    return url.set(query=query), io_timeout


def _bounded_connection_class(io_timeout: float) -> Any:
    import psycopg
    from psycopg import errors as pg_errors

    class BoundedConnection(psycopg.Connection[Any]):
        """A psycopg connection that gives up a wait for the server after ``io_timeout`` seconds.

        psycopg waits on the socket with no deadline of its own; once that deadline passes the
        protocol state is unknown, so the connection is closed and the error says the connection is
        lost: SQLAlchemy then invalidates it instead of handing it out again. ``io_timeout`` may be
        changed on an instance (the receiver's committer bounds its own much tighter)."""

        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            bound = getattr(self, "io_timeout", io_timeout)
            if timeout is None and bound is not None:
                try:
                    return super().wait(gen, interval=interval, timeout=bound)
                except pg_errors._WaitTimeout as exc:
                    self.pgconn.finish()
                    raise psycopg.OperationalError(
                        f"no answer from the database server within {bound:g}s: connection closed"
                    ) from exc
            return super().wait(gen, interval=interval, timeout=timeout)

    BoundedConnection.io_timeout = io_timeout  # type: ignore[attr-defined]
    return BoundedConnection


def _replace_unusable_sessions(context: sa.engine.ExceptionContext) -> None:
    # Every user of the engine (worker, scheduler, receiver, CLI): a session that cannot recover is
    # treated as a disconnect, so SQLAlchemy discards it and the other connections of the pool opened
    # before it (they may share its fate: all opened while the database was read-only).
    original = context.original_exception
    if context.is_disconnect or not isinstance(original, Exception):
        return
    if session_unusable(original):
        context.is_disconnect = True


_connect_within: ContextVar[int | None] = ContextVar("syncer_connect_within", default=None)


@contextmanager
def connect_within(seconds: float) -> Iterator[None]:
    """Connections a PostgreSQL engine of :func:`create_engine` opens inside the block start up in at
    most *seconds* (rounded up; libpq's minimum is 2), or less if the URL says so. For a caller that
    answers someone waiting (the receiver's committer: Graph gives up after 3 s), where the default
    ``connect_timeout`` would hold the wait far longer."""
    token = _connect_within.set(max(2, math.ceil(seconds)))
    try:
        yield
    finally:
        _connect_within.reset(token)


def _bound_connect_timeout(cparams: dict[str, Any]) -> None:
    within = _connect_within.get()
    if within is None:
        return
    current = str(cparams.get("connect_timeout", ""))
    if not (current.isdigit() and 0 < int(current) <= within):
        cparams["connect_timeout"] = str(within)


@contextmanager
def unbounded(connection: sa.Connection) -> Iterator[None]:
    """Inside a transaction of *connection*: no statement timeout and no client I/O bound, for the
    statements that may rightly run for minutes (schema changes, backfills of large tables, waiting
    for another migrator's lock). The bounds come back when the transaction or the block ends."""
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
    dbapi: Any = connection.connection.dbapi_connection
    bounded = hasattr(dbapi, "io_timeout")
    previous = getattr(dbapi, "io_timeout", None)
    if bounded:
        dbapi.io_timeout = None
    try:
        yield
    finally:
        if bounded:
            dbapi.io_timeout = previous


def create_engine(url: str, *, io_timeout: float | None = IO_TIMEOUT, **kwargs: Any) -> Engine:
    """The engine syncer uses for *url*, with the settings each backend needs.

    PostgreSQL connections are bounded (:data:`POSTGRES_BOUNDS`, :data:`STATEMENT_TIMEOUT`, and
    *io_timeout* (:data:`IO_TIMEOUT`); each overridable in the URL's query), and a connection whose
    session cannot recover (:func:`session_unusable`) is replaced, with the rest of the pool."""
    url = normalize_url(url)
    if is_sqlite(url):
        _create_private_sqlite_file(url)
        engine = sa.create_engine(url, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    parsed, io_timeout = postgres_url(sa.make_url(url), io_timeout=io_timeout)
    engine = sa.create_engine(parsed, **kwargs)
    sa.event.listen(engine, "handle_error", _replace_unusable_sessions)
    if engine.dialect.driver == "psycopg":
        factory = _bounded_connection_class(io_timeout) if io_timeout is not None else None

        def connect(_dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
            _bound_connect_timeout(cparams)
            return factory.connect(*cargs, **cparams) if factory is not None else None

        sa.event.listen(engine, "do_connect", connect)
    return engine
