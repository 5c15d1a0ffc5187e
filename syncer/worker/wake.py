"""Waking the worker's drain when the receiver commits notifications, instead of at its next tick.

The drain job runs every ``--drain-interval`` (0.5 s): on its own, that interval is the floor of
notification-to-row latency, and a rich notification (written from its payload, no Graph read) waits
for it like a basic one. So the receiver says when it committed inbox rows and the drain starts at once:

- PostgreSQL: each inbox commit sends ``NOTIFY syncer_inbox`` (:data:`syncer.inbox.NOTIFY_CHANNEL`,
  in the INSERT itself) and each worker holds a ``LISTEN`` connection (:class:`InboxListener`).
  A NOTIFY is delivered at commit, never before the rows are visible
  (https://www.postgresql.org/docs/current/sql-notify.html).
- SQLite: SQLite has no NOTIFY, but ``PRAGMA data_version`` changes whenever another connection commits
  (https://www.sqlite.org/pragma.html#pragma_data_version); the worker reads it every 25 ms on a connection
  of its own (:class:`InboxPoller`, microseconds a read) and, when it moved, wakes the drain if the inbox's
  highest id grew (its own commits, which store no notification, wake nothing).
- One process (``syncer run``): the receiver's store path calls :meth:`Waker.wake` directly as well.

The periodic drain stays: a lost NOTIFY (the LISTEN connection down, a pooler that drops it) costs at
most one interval. A burst of commits triggers one drain at a time (:class:`Waker`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from syncer import database
from syncer.inbox import NOTIFY_CHANNEL
from syncer.log import OutageLog

if TYPE_CHECKING:
    from apscheduler.events import JobEvent
    from apscheduler.schedulers.base import BaseScheduler

__all__ = ["InboxListener", "InboxPoller", "Waker", "attach"]

log = logging.getLogger("syncer.worker.wake")


class Waker:
    """Starts the scheduler's job *job_id* now, coalescing: at most one run starting or running, one more queued.

    A wake while the job runs queues exactly one more run (the running one may have claimed before
    the new rows committed); wakes while a run is due but not started add nothing (that run will see
    their rows). The next run is asked for only after APScheduler counted the last one as finished: asked
    earlier, it would be skipped with "maximum number of running instances reached" (``max_instances=1``).
    """

    def __init__(self, scheduler: BaseScheduler, job_id: str) -> None:
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES

        self.scheduler = scheduler
        self.job_id = job_id
        self.wakes = 0  # wakes asked for
        self.listener: InboxListener | InboxPoller | None = None  # set by attach (LISTEN on PostgreSQL, polling on SQLite)
        self._lock = threading.Lock()
        self._running = False  # a run of the job started and APScheduler has not counted it finished
        self._due = False  # a run was asked for and has not started
        self._again = False  # a wake came while running: one more run when it ends
        self._closed = False
        job = scheduler.get_job(job_id)
        if job is None:
            raise LookupError(f"no job {job_id!r} to wake")
        scheduler.modify_job(job_id, func=self._wrap(job.func))
        self._ended = EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
        scheduler.add_listener(self._on_event, self._ended | EVENT_JOB_MAX_INSTANCES)

    def wake(self) -> None:
        """Inbox rows were committed: drain now (or right after the drain in progress)."""
        with self._lock:
            self.wakes += 1
            if self._closed or self._due:
                return
            if self._running:
                self._again = True
                return
            self._due = True
        self._kick()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        try:
            self.scheduler.remove_listener(self._on_event)
        except Exception:  # already shut down
            pass

    def _wrap(self, func: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with self._lock:
                self._running, self._due, self._again = True, False, False
            return func()

        return run

    def _on_event(self, event: JobEvent) -> None:
        if event.job_id != self.job_id:
            return
        with self._lock:
            if event.code & self._ended:
                self._running = False
            else:  # skipped: a run was in progress (the periodic one started as we asked); ask after it
                self._due, self._again = False, True
                return
            if not self._again or self._closed:
                return
            self._again, self._due = False, True
        self._kick()

    def _kick(self) -> None:
        try:
            self.scheduler.modify_job(self.job_id, next_run_time=datetime.now(UTC))
        except Exception as error:  # the scheduler is stopping: the periodic drain is gone too
            with self._lock:
                self._due = False
            log.debug("could not wake job %s: %s", self.job_id, error)


class InboxListener(threading.Thread):
    """A ``LISTEN syncer_inbox`` connection of its own that calls *wake* for each NOTIFY of our schema.

    Reconnects after the database went away, logging the outage once (:class:`syncer.log.OutageLog`),
    and wakes once after each (re)connection: what was committed while it was down was not announced.
    Idle, it waits in ``notifies()`` on a socket with TCP keepalives (:data:`syncer.database.POSTGRES_BOUNDS`),
    so a silently dead server is noticed within ~25 s; the periodic drain covers that time.
    """

    def __init__(self, url: str, wake: Callable[[], None], *, outage: OutageLog | None = None, poll: float = 1.0,
                 max_delay: float = 5.0) -> None:
        super().__init__(name="syncer-inbox-listen", daemon=True)
        self.url = url
        self.wake = wake
        self.poll = poll  # seconds between checks of the stop flag while idle
        self.max_delay = max_delay  # the longest wait between reconnection attempts
        # The worker's own (Worker.database): an outage is one pair of lines, whichever of the jobs and this
        # connection meets it first.
        self.outage = outage or OutageLog(log, "database")
        self.connected = threading.Event()  # set while listening (tests wait on it)
        self.connections = 0  # successful (re)connections
        self._stopping = threading.Event()
        # Its own engine without a pool: the connection is held for the worker's life, not borrowed from
        # the jobs' pool, and it has every bound syncer's connections have.
        self._engine = database.create_engine(url, poolclass=sa.pool.NullPool)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
        self._engine.dispose()

    def run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            before = self.connections
            try:
                self._listen()
                return  # stopped
            except Exception as error:
                if self._stopping.is_set():
                    return
                if self.connections > before:
                    delay = 0.5  # it was listening: a new outage starts its back-off afresh
                self.outage.failed(error, "retrying")
                self._stopping.wait(delay)
                delay = min(delay * 2, self.max_delay)

    def _listen(self) -> None:
        raw = self._engine.raw_connection()
        try:
            conn: Any = raw.driver_connection
            conn.rollback()
            conn.autocommit = True
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            schema = conn.execute("SELECT current_schema()").fetchone()[0]
            self.outage.ok()
            self.connections += 1
            self.connected.set()
            self.wake()  # commits made while we were not listening were not announced to us
            while not self._stopping.is_set():
                # A timeout, not a blocking wait: the stop flag is checked between notifications.
                for note in conn.notifies(timeout=self.poll):
                    if note.payload == schema:
                        self.wake()
                    if self._stopping.is_set():
                        break
        finally:
            self.connected.clear()
            try:
                raw.invalidate()  # never reused: NullPool closes it
            except Exception:
                pass


class InboxPoller(threading.Thread):
    """SQLite: calls *wake* when another connection committed new inbox rows (see the module's docstring).

    Same interface as :class:`InboxListener` (``connected``, ``stop``); a failing read is reported to the
    worker's outage log and retried.
    """

    def __init__(self, url: str, wake: Callable[[], None], *, outage: OutageLog | None = None,
                 interval: float = 0.025) -> None:
        super().__init__(name="syncer-inbox-poll", daemon=True)
        self.wake = wake
        self.interval = interval
        self.outage = outage or OutageLog(log, "database")
        self.connected = threading.Event()
        self._stopping = threading.Event()
        self._engine = database.create_engine(url, poolclass=sa.pool.NullPool)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)
        self._engine.dispose()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._poll()
                return
            except Exception as error:
                if self._stopping.is_set():
                    return
                self.connected.clear()
                self.outage.failed(error, "retrying")
                self._stopping.wait(1.0)

    def _poll(self) -> None:
        with self._engine.connect() as connection:
            raw: Any = connection.connection.driver_connection
            raw.isolation_level = None  # autocommit: each read sees the latest commit
            newest = raw.execute("SELECT max(id) FROM syncer_inbox").fetchone()[0] or 0
            version = raw.execute("PRAGMA data_version").fetchone()[0]
            self.outage.ok()
            self.connected.set()
            while not self._stopping.wait(self.interval):
                now = raw.execute("PRAGMA data_version").fetchone()[0]
                if now == version:
                    continue
                version = now
                top = raw.execute("SELECT max(id) FROM syncer_inbox").fetchone()[0] or 0
                if top > newest:
                    newest = top
                    self.wake()


def attach(scheduler: BaseScheduler, job_id: str, url: str, *, listen: bool = True,
           outage: OutageLog | None = None) -> tuple[Waker, InboxListener | InboxPoller | None]:
    """A :class:`Waker` of *job_id*, and (with *listen*) a started :class:`InboxListener` on PostgreSQL or
    :class:`InboxPoller` on SQLite."""
    waker = Waker(scheduler, job_id)
    listener: InboxListener | InboxPoller | None = None
    if listen:
        watcher = (InboxPoller if database.is_sqlite(url) else InboxListener)(url, waker.wake, outage=outage)
        listener = waker.listener = watcher
        watcher.start()
    return waker, listener
