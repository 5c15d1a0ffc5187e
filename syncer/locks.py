"""Named locks in syncer's database, so that two processes never do the same exclusive work at once.

Two ``syncer reconcile`` runs at the same time (a deploy and the scheduler) would both see a
declared subscription missing and both create it; the worker must run once per deployment. Both
take a named lock in the one place every syncer process shares: the database.

- PostgreSQL: a session-level ``pg_advisory_lock`` on a dedicated connection. The server releases it
  if the process dies, so a crash never leaves it stuck. A row in ``syncer_locks`` says who holds it
  (for the "waiting for ..." message and ``syncer doctor``); it is informative only.
- SQLite has no advisory locks: the row in ``syncer_locks`` *is* the lock. Taking it is one INSERT
  (the primary key makes a second one fail); it carries an expiry that a heartbeat thread pushes
  forward while the holder lives, so the lock of a crashed process frees itself after ``ttl``.

While waiting, the caller is told who holds the lock and since when (``on_wait``), once at first and
then every ``report_every`` seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncer.database import is_sqlite
from syncer.errors import DatabaseError, LockTimeout
from syncer.schema import locks

log = logging.getLogger("syncer.locks")

RECONCILE_LOCK = "reconcile"
"""The lock every reconcile, and every lifecycle repair (reauthorize, recreate), holds."""


@dataclass(frozen=True)
class LockInfo:
    """Who holds a lock, since when, and (SQLite) until when unless renewed."""

    name: str
    holder: str
    acquired_at: datetime
    expires_at: datetime

    def __str__(self) -> str:
        return f"{self.holder} since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC"


def default_holder(purpose: str) -> str:
    """A holder name that says which process: purpose, host and pid."""
    return f"{purpose} on {socket.gethostname()} pid {os.getpid()}"


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` from a lock name."""
    digest = hashlib.blake2b(f"syncer:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def read_lock(engine: Engine, name: str) -> LockInfo | None:
    """The ``syncer_locks`` row for *name* (on PostgreSQL: informative; it may outlive a dead holder)."""
    with engine.connect() as connection:
        row = connection.execute(sa.select(locks).where(locks.c.name == name)).first()
    if row is None:
        return None
    return LockInfo(row.name, row.holder, row.acquired_at, row.expires_at)


def take_back(engine: Engine, name: str, holder: str) -> None:
    """Delete the row of lock *name* if *holder* holds it: a process restarted under the same holder
    name (a systemd unit or pod with a stable id) is its killed predecessor's successor, and takes the
    lock at once instead of after its ttl."""
    with engine.begin() as connection:
        connection.execute(sa.delete(locks).where(locks.c.name == name, locks.c.holder == holder))


class DatabaseLock:
    """One named lock; use :func:`hold` (a context manager) unless you need acquire/release apart."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        holder: str | None = None,
        ttl: timedelta = timedelta(minutes=2),
    ) -> None:
        if ttl < timedelta(seconds=3):
            raise ValueError("a lock ttl under 3 seconds leaves no time for the heartbeat")
        self.engine = engine
        self.name = name
        self.holder = holder or default_holder(name)
        self.ttl = ttl
        self.lost = False
        self._connection: Connection | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._held = False

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._held

    def acquire(
        self,
        *,
        timeout: float | None = 60.0,
        poll: float = 0.2,
        on_wait: Callable[[LockInfo | None], None] | None = None,
        report_every: float = 15.0,
    ) -> None:
        """Take the lock, waiting up to *timeout* seconds (None: forever); LockTimeout names the holder."""
        if self._held:
            raise RuntimeError(f"lock {self.name!r} is already held by this object")
        started = time.monotonic()
        # A wait shorter than this is not worth a message (and on PostgreSQL the holder's info row
        # lands just after its advisory lock).
        next_report = started + min(0.5, report_every)
        while True:
            try:
                got = self._try_acquire()
            except (sa.exc.OperationalError, sa.exc.ProgrammingError) as error:
                raise DatabaseError(
                    f"cannot take lock {self.name!r}: {error.orig}; is the database migrated (`syncer db upgrade`)?"
                ) from error
            if got:
                self._held = True
                if is_sqlite(self.engine):
                    self._start_heartbeat()
                return
            now = time.monotonic()
            if timeout is not None and now - started >= timeout:
                info = read_lock(self.engine, self.name)
                by = f" held by {info}" if info else ""
                raise LockTimeout(f"lock {self.name!r}{by} was not released within {timeout:g}s")
            if now >= next_report:
                info = read_lock(self.engine, self.name)
                (on_wait or _log_wait)(info)
                next_report = now + report_every
            time.sleep(poll)

    def release(self) -> None:
        """Give the lock back (a no-op when not held)."""
        if not self._held:
            return
        self._held = False
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        mine = sa.and_(locks.c.name == self.name, locks.c.holder == self.holder)
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.execute(sa.delete(locks).where(mine))
                connection.execute(
                    sa.text("SELECT pg_advisory_unlock(:key)"), {"key": advisory_key(self.name)}
                )
            finally:
                connection.close()
            return
        with self.engine.begin() as connection:
            connection.execute(sa.delete(locks).where(mine))

    # --- backends ---------------------------------------------------------------------------------

    def _try_acquire(self) -> bool:
        if is_sqlite(self.engine):
            return self._try_row()
        return self._try_advisory()

    def _try_advisory(self) -> bool:
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = connection.execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": advisory_key(self.name)}
            ).scalar_one()
            if not got:
                connection.close()
                return False
            now = _utcnow()
            # Informative row: whoever held it before us may have died without deleting theirs.
            connection.execute(sa.delete(locks).where(locks.c.name == self.name))
            connection.execute(
                sa.insert(locks).values(
                    name=self.name, holder=self.holder, acquired_at=now, expires_at=now + self.ttl
                )
            )
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return True

    def _try_row(self) -> bool:
        now = _utcnow()
        try:
            with self.engine.begin() as connection:
                # A lock whose holder stopped renewing it (crashed) is free again.
                connection.execute(
                    sa.delete(locks).where(locks.c.name == self.name, locks.c.expires_at < now)
                )
                connection.execute(
                    sa.insert(locks).values(
                        name=self.name, holder=self.holder, acquired_at=now, expires_at=now + self.ttl
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._renew_loop, name=f"lock-{self.name}", daemon=True)
        self._heartbeat.start()

    def _renew_loop(self) -> None:
        interval = self.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                with self.engine.begin() as connection:
                    renewed = connection.execute(
                        sa.update(locks)
                        .where(locks.c.name == self.name, locks.c.holder == self.holder)
                        .values(expires_at=_utcnow() + self.ttl)
                    ).rowcount
            except sa.exc.OperationalError as error:
                log.warning("could not renew lock %r: %s", self.name, error.orig)
                continue
            if not renewed:
                self.lost = True
                log.error("lock %r was lost (expired and taken by another process)", self.name)
                return


def _log_wait(info: LockInfo | None) -> None:
    log.warning("waiting for lock held by %s", info or "another process")


@contextmanager
def hold(
    engine: Engine,
    name: str,
    *,
    holder: str | None = None,
    timeout: float | None = 60.0,
    ttl: timedelta = timedelta(minutes=2),
    poll: float = 0.2,
    on_wait: Callable[[LockInfo | None], None] | None = None,
) -> Iterator[DatabaseLock]:
    """Hold lock *name* for the ``with`` block; waits up to *timeout* seconds, telling *on_wait* who has it."""
    lock = DatabaseLock(engine, name, holder=holder, ttl=ttl)
    lock.acquire(timeout=timeout, poll=poll, on_wait=on_wait)
    try:
        yield lock
    finally:
        lock.release()
