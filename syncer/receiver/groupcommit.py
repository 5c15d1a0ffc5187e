"""Group commit for the receiver: one inbox transaction for the rows of many concurrent requests.

Why: one commit per HTTP request caps PostgreSQL at ~850 req/s here (a round trip and a WAL flush
each). Requests of one process that arrive while a batch is being committed wait and form the next
batch; each request's rows still land atomically (all in the same transaction), and a request is
answered 2xx only after the transaction containing its rows committed. The rows are written by
:meth:`syncer.inbox.Inbox.put_rows`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncer import database
from syncer.errors import DatabaseError
from syncer.inbox import Inbox, NewItem, Row

log = logging.getLogger(__name__)

_QUEUED, _TAKEN, _LEAD, _DONE = range(4)


class _Waiter:
    # A bare lock, acquired at birth and released when the waiter's fate is decided, is the cheapest
    # one-shot signal between threads: an Event builds a Condition and a fresh lock on every wait
    # (measured ~15% of the receiver's CPU under load).
    __slots__ = ("done", "error", "link", "new_keys", "rows", "state")

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.done = threading.Lock()
        self.done.acquire()
        self.error: BaseException | None = None
        self.new_keys: set[str] = set()
        self.state = _QUEUED
        self.link: _Link | None = None  # handed over with the lead


# How long past its statement timeout the committer still waits for the server's answer: the server
# cancels the statement at the timeout; silence beyond it means no server is listening any more (or
# a link so slow that a round trip exceeds Graph's whole allowance: then reconnecting costs nothing).
_ANSWER_GRACE = 3.0


class _Link:
    """One database connection of the committer, reopened when it dies; used by one leader at a time."""

    def __init__(self, engine: Engine, *, statement_timeout: float) -> None:
        self.engine = engine
        self.statement_timeout = statement_timeout
        self.connection: Connection | None = None

    def open(self) -> tuple[Connection, bool]:
        """The connection, and whether it was already open (then it may have died while idle)."""
        if self.connection is not None:
            return self.connection, True
        # A leader opens the connection for the requests waiting on it, which Graph gives up on after
        # 3 s: the engine's connect_timeout (10 s) would hold them, and readiness, far longer.
        with database.connect_within(self.statement_timeout):
            conn = self.engine.connect()
        dbapi: Any = conn.connection.dbapi_connection
        if hasattr(dbapi, "io_timeout"):
            # syncer.schema's bounded psycopg connection: the server cancels a stuck statement after
            # statement_timeout, but a server that is gone (its socket silently dead after a failover)
            # answers nothing, and without this bound the leader would wait in recv() for ever, with
            # every request of the process queued behind it.
            dbapi.io_timeout = self.statement_timeout + _ANSWER_GRACE
        if self.engine.dialect.name == "postgresql":
            # The leader is a request thread: it cannot wait on a stuck commit (a lock, a stalled
            # server) longer than Graph waits for our answer. PostgreSQL cancels the statement
            # instead; nothing of it is committed, the requests get 503 and Graph retries.
            conn.exec_driver_sql(f"SET statement_timeout = {max(1, int(self.statement_timeout * 1000))}")
            conn.commit()
            # The batch is ONE statement (INSERT ... SELECT), atomic on its own: in autocommit it is
            # sent, run and committed in a single round trip instead of three.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        elif self.engine.dialect.name == "sqlite":
            # WAL + synchronous=NORMAL survives a process crash but not a power cut; a 2xx promises
            # more, and with group commit the extra fsync is paid once per batch.
            conn.exec_driver_sql("PRAGMA synchronous=FULL")
            conn.commit()
        self.connection = conn
        return conn, False

    def drop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.invalidate()
                self.connection.close()
            except Exception:
                pass
            self.connection = None


def _cancelled(exc: BaseException) -> bool:
    # psycopg's QueryCanceled (SQLSTATE 57014): our statement_timeout fired.
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "57014"


class _ReadOnlySession(DatabaseError):
    pass


def _connection_lost(exc: sa.exc.DBAPIError) -> bool:
    """The connection, not the batch, failed: a fresh connection may succeed at once."""
    return exc.connection_invalidated or isinstance(exc, sa.exc.InterfaceError) or database.session_unusable(exc.orig or exc)


# The probe's statement: what an insert would meet, without writing. A session that would refuse the
# insert (opened while the database was read-only, or on a hot standby after a failover) says "on".
_READ_ONLY_SQL = "SELECT current_setting('transaction_read_only')"


class GroupCommitter:
    """Stores the rows of all concurrently waiting requests of a process in one transaction.

    Leader/follower: a request that finds a connection free becomes the *leader*: it takes every
    request waiting (and its own), writes them in one transaction, wakes the others, and, if more
    requests queued meanwhile, hands the lead (and the connection) to the first of them. The others
    (*followers*) sleep until their batch committed. No committer thread: the leader's own request
    needs no wakeup, and there is no thread to hand each batch to (measured: the handoff was the
    receiver's largest CPU cost after Flask). The batch size adapts to the load with no timer, and
    an idle receiver commits at once. ``committers`` connections = batches in flight at once
    (PostgreSQL then also shares WAL flushes between them; SQLite always has one).

    ``put`` returns only once the transaction holding the request's rows committed, or raises
    :class:`DatabaseError` (the caller answers 5xx): a follower gives up after ``timeout`` (its
    rows may still land; Graph's retry is then absorbed as a duplicate), a leader's statement is
    cancelled by PostgreSQL after ``statement_timeout``. If a batch fails on a bad row, each
    request in it is retried alone so that one bad request cannot fail its neighbours. Each
    connection is kept open (a pool checkout with pre-ping per batch would cost a round trip); if
    it turns out dead, the batch is retried once on a new one.
    """

    def __init__(
        self,
        inbox: Inbox,
        *,
        committers: int = 1,
        max_batch_rows: int = 2000,
        statement_timeout: float = 2.5,
        on_commit: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.inbox = inbox
        self.max_batch_rows = max_batch_rows
        self._on_commit = on_commit
        self._postgres = inbox.engine.dialect.name == "postgresql"
        # SQLite has one writer at a time: more connections would only queue on its lock.
        count = 1 if inbox.engine.dialect.name == "sqlite" else max(1, committers)
        self._links = [_Link(inbox.engine, statement_timeout=statement_timeout) for _ in range(count)]
        self._idle = list(self._links)  # connections no leader holds
        self._pending: deque[_Waiter] = deque()
        self._lock = threading.Lock()
        self._closed = False

    def put(self, items: Sequence[NewItem], *, timeout: float = 2.5) -> set[str]:
        """Store *items* durably; returns the dedupe keys that were new. Raises DatabaseError."""
        if not items:
            return set()
        try:
            rows = self.inbox.encode(items)
        except (TypeError, ValueError) as exc:
            raise DatabaseError(f"cannot encode the notifications: {type(exc).__name__}") from exc
        return self._submit(rows, timeout)

    def probe(self, *, timeout: float = 2.5) -> None:
        """Raise DatabaseError unless this committer can commit now: a request with no rows, queued
        and led like any other on the same connections, checked for writability. A leader stuck on a
        dead connection, or a read-only session, fails it as it fails the notifications.

        Answers within *timeout* whatever happens: the probe runs on a thread of its own, because
        a probe that becomes the leader would otherwise wait as long as its batch (a connection
        start-up, a slow round trip) and a readiness check must not hang on the database."""
        outcome: list[BaseException | None] = []
        done = threading.Event()

        def run() -> None:
            try:
                self._submit([], timeout)
                outcome.append(None)
            except BaseException as exc:  # handed to the caller
                outcome.append(exc)
            done.set()

        threading.Thread(target=run, name="syncer-commit-probe", daemon=True).start()
        if not done.wait(timeout):
            raise DatabaseError(f"the inbox committer did not commit within {timeout:g}s")
        error = outcome[0]
        if error is None:
            return
        if isinstance(error, DatabaseError):
            raise error
        raise DatabaseError(f"the inbox committer cannot commit: {type(error).__name__}") from error

    def _submit(self, rows: list[Row], timeout: float) -> set[str]:
        me = _Waiter(rows)
        link: _Link | None = None
        with self._lock:
            if self._closed:
                raise DatabaseError("the inbox committer is closed")
            if self._idle:
                link = self._idle.pop()
                batch = self._take(me)
            else:
                self._pending.append(me)
        if link is None:
            if not me.done.acquire(timeout=timeout):
                with self._lock:
                    if me.state == _QUEUED:
                        self._pending.remove(me)
                    if me.state in (_QUEUED, _TAKEN):
                        # Not known to be stored: the caller answers 5xx and Graph retries. If the
                        # commit still lands, the retry is absorbed as a duplicate.
                        raise DatabaseError(f"storing the notifications took longer than {timeout:g}s")
                me.done.acquire()  # decided (led or done) just now: the release is on its way
            if me.state == _LEAD:
                link, me.link = me.link, None
                with self._lock:
                    batch = self._take(me)
        if link is not None:
            self._lead(link, batch)
        if me.error is not None:
            if isinstance(me.error, DatabaseError):
                raise me.error
            raise DatabaseError(f"could not store notifications: {type(me.error).__name__}") from me.error
        return me.new_keys

    def close(self, *, timeout: float = 10.0) -> None:
        """Refuse new requests, let the batches in flight finish, close the connections."""
        with self._lock:
            self._closed = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._idle) == len(self._links):
                    break
            time.sleep(0.005)
        with self._lock:
            for link in self._idle:
                link.drop()

    def _take(self, first: _Waiter) -> list[_Waiter]:
        # Caller holds self._lock.
        first.state = _TAKEN
        batch = [first]
        rows = len(first.rows)
        pending = self._pending
        while pending and rows < self.max_batch_rows:
            waiter = pending.popleft()
            waiter.state = _TAKEN
            batch.append(waiter)
            rows += len(waiter.rows)
        return batch

    def _lead(self, link: _Link, batch: list[_Waiter]) -> None:
        try:
            self._commit(link, batch)
        finally:
            with self._lock:
                successor = self._pending.popleft() if self._pending else None
                if successor is None:
                    self._idle.append(link)
                else:
                    successor.state = _LEAD
                    successor.link = link
            if successor is not None:
                successor.done.release()

    def _transaction(self, link: _Link, waiters: Sequence[_Waiter]) -> set[str]:
        rows = [row for w in waiters for row in w.rows]
        for attempt in (1, 2):
            conn, reused = link.open()
            try:
                if not rows:
                    self._check_writable(conn)  # probes only: an insert proves as much
                    return set()
                if self._postgres:
                    return self.inbox.put_rows(conn, rows)  # autocommit: the one statement is the transaction
                with conn.begin():
                    return self.inbox.put_rows(conn, rows)
            except (sa.exc.DataError, sa.exc.IntegrityError):
                raise  # a bad row: the connection is fine
            except sa.exc.DBAPIError as exc:
                # Anything else may outlive its cause on this connection (a read-only or terminated
                # session, a dead socket, a cancel whose answer never came): replace it. Reconnecting
                # costs one connection start; reusing a broken session fails every batch after it.
                link.drop()
                if _cancelled(exc):
                    raise DatabaseError(
                        f"storing the notifications took longer than {link.statement_timeout:g}s"
                    ) from exc
                if reused and attempt == 1 and _connection_lost(exc):
                    continue  # the kept connection died while idle: one more try on a fresh one
                raise
            except _ReadOnlySession:
                link.drop()
                if reused and attempt == 1:
                    continue  # opened while the database was read-only; a new session may not be
                raise
            except Exception:
                link.drop()
                raise
        raise AssertionError("unreachable")

    def _check_writable(self, conn: Connection) -> None:
        if not self._postgres:
            with conn.begin():
                conn.exec_driver_sql("SELECT 1")
            return
        if conn.exec_driver_sql(_READ_ONLY_SQL).scalar() == "on":
            raise _ReadOnlySession("the database session is read-only")

    def _commit(self, link: _Link, batch: list[_Waiter]) -> None:
        started = time.perf_counter()
        try:
            new_keys = self._transaction(link, batch)
        except Exception as exc:
            # A bad row (a value the database refuses) fails the whole batch: retry request by
            # request so that it fails only its own request. Anything else (connection lost, table
            # missing, timeout) would fail each retry the same way, so the batch fails as one.
            statement_level = isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError))
            if len(batch) == 1 or not statement_level:
                # Each request's caller gets the error and reports it (the receiver: once per outage,
                # syncer.log.OutageLog); a warning here would be a line per batch during an outage.
                log.debug("inbox commit of %d requests failed: %s", len(batch), type(exc).__name__)
                for waiter in batch:
                    waiter.error = exc
                    waiter.state = _DONE
                    waiter.done.release()
                return
            for waiter in batch:
                self._commit(link, [waiter])
            return
        elapsed = time.perf_counter() - started
        for waiter in batch:
            waiter.new_keys = {row.dedupe_key for row in waiter.rows} & new_keys
            waiter.state = _DONE
            waiter.done.release()
        if self._on_commit is not None:
            try:
                self._on_commit(len(batch), sum(len(w.rows) for w in batch), elapsed)
            except Exception:  # metrics must never break storing
                log.exception("inbox on_commit hook failed")
