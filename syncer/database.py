"""Connecting to syncer's database: what a URL means, and the engine every process uses.

Split from :mod:`syncer.schema` (the tables): loading a spec resolves its database URL
(:func:`normalize_url`) without defining a table, and every engine, whoever builds it, gets the
settings each backend needs: SQLite's pragmas and an owner-only file, PostgreSQL's bounds on every
connection and the replacement of sessions that cannot recover (a failover, a read-only episode).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def is_sqlite(engine_or_url: Engine | str | sa.URL) -> bool:
    """Whether the engine or URL points to SQLite."""
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else sa.make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def normalize_url(url: str, *, base_dir: Path | None = None) -> str:
    """Make a database URL usable: relative SQLite paths are taken from *base_dir*, and
    ``postgresql://`` selects psycopg 3 (SQLAlchemy's default would be psycopg2, which we do not ship).

    ``postgres://`` (libpq, Heroku, many PaaS) is taken as ``postgresql://``: SQLAlchemy 1.4 dropped
    that alias and would fail with "Can't load plugin: sqlalchemy.dialects:postgres".
    """
    parsed = sa.make_url(url)
    if parsed.drivername == "postgres" or parsed.drivername.startswith("postgres+"):
        parsed = parsed.set(drivername="postgresql" + parsed.drivername[len("postgres"):])
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


PING_AFTER_IDLE = 5.0
"""Seconds a pooled PostgreSQL connection may sit idle before its next checkout pings it (``SELECT 1``).

SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip, and the CPU to send it, on each of the
two checkouts of every pass, most of them of a connection checked in milliseconds before (a tenant's initial
mirror is thousands of such passes: bench/tenant.py). A connection that broke while it was in use, or right
after, fails its next statement as a disconnect, and SQLAlchemy then discards the whole pool
(https://docs.sqlalchemy.org/en/20/core/pooling.html#disconnect-handling-optimistic): the pass fails like any
pass meeting an outage (the scope stays dirty; the next drain retries it). The ping is kept for the case it is
for: a connection idle long enough for a failover, a restart or a dropped NAT entry to have happened unseen."""

_IDLE_SINCE = "syncer_idle_since"


def _ping_when_idle(engine: Engine, idle_after: float) -> None:
    """Ping a connection at checkout only when it was checked in more than *idle_after* seconds ago."""
    dialect = engine.dialect

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < idle_after:
            return  # a fresh connection, or one in use moments ago
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None) or session_unusable(error):
                # As pool_pre_ping does: this connection and the others opened before it are replaced.
                raise sa.exc.InvalidatePoolError(f"ping after {idle_after:g}s idle failed: {error}") from error
            raise

    sa.event.listen(engine, "checkin", checkin)
    sa.event.listen(engine, "checkout", checkout)


def create_engine(url: str, *, io_timeout: float | None = IO_TIMEOUT, **kwargs: Any) -> Engine:
    """The engine syncer uses for *url*, with the settings each backend needs.

    PostgreSQL connections are bounded (:data:`POSTGRES_BOUNDS`, :data:`STATEMENT_TIMEOUT`, and
    *io_timeout* (:data:`IO_TIMEOUT`); each overridable in the URL's query), pinged at checkout after
    :data:`PING_AFTER_IDLE` seconds idle (every checkout with ``pool_pre_ping=True``), and a connection whose
    session cannot recover (:func:`session_unusable`) is replaced, with the rest of the pool."""
    url = normalize_url(url)
    if is_sqlite(url):
        _create_private_sqlite_file(url)
        engine = sa.create_engine(url, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    parsed, io_timeout = postgres_url(sa.make_url(url), io_timeout=io_timeout)
    engine = sa.create_engine(parsed, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, PING_AFTER_IDLE)
    sa.event.listen(engine, "handle_error", _replace_unusable_sessions)
    if engine.dialect.driver == "psycopg":
        factory = _bounded_connection_class(io_timeout) if io_timeout is not None else None

        def connect(_dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
            _bound_connect_timeout(cparams)
            return factory.connect(*cargs, **cparams) if factory is not None else None

        sa.event.listen(engine, "do_connect", connect)
    return engine
