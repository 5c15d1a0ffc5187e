"""When the worker's jobs run, and building a worker from the spec: ``syncer worker`` and ``syncer sync``.

Jobs (APScheduler 3.x, fixed ids, ``coalesce=True``, ``max_instances=1``, so a slow run is never
stacked behind itself), each a plain method of :class:`syncer.worker.jobs.Worker`:

- ``syncer.drain`` (every few seconds): the inbox into dirty scopes and passes.
- ``syncer.safety_net`` (every minute): the scopes whose last success is too old.
- ``syncer.reconcile``: renewals and lifecycle repairs.
- ``syncer.housekeeping`` (hourly): processed notifications and pass records past their retention.

On SQLite there is one worker: it holds the ``worker`` lock row for as long as it runs, and a
second one is refused with the holder's name.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer import applied, database, mirror, schema
from syncer.errors import (
    DatabaseError,
    DatabaseUnreachable,
    GraphError,
    LockTimeout,
    RetryBudgetExhausted,
    SignInRequired,
    SyncerError,
)
from syncer.graph.delegated import signed_in
from syncer.log import database_unreachable
from syncer.metrics import Metrics
from syncer.spec import model as spec_defaults
from syncer.worker import containers, scopes, scopestate, sync
from syncer.worker.accounts import Accounts
from syncer.worker.jobs import Retention, Worker, default_worker_id
from syncer.worker.scopes import ScopeIndex

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from syncer.locks import DatabaseLock
    from syncer.spec import Spec
    from syncer.worker.wake import Waker

__all__ = [
    "DRAIN_JOB",
    "HOUSEKEEPING_JOB",
    "RECONCILE_JOB",
    "SAFETY_NET_JOB",
    "STARTUP_WAIT",
    "WORKER_LOCK",
    "RunningWorker",
    "Schedule",
    "build_worker",
    "clients_for",
    "require_tables",
    "run_worker",
    "schedule_jobs",
    "signed_in",
    "single_worker_lock",
    "stop_on_signals",
    "sync_once",
    "tune_process",
]

log = logging.getLogger("syncer.worker.jobs")

DRAIN_JOB = "syncer.drain"
SAFETY_NET_JOB = "syncer.safety_net"
RECONCILE_JOB = "syncer.reconcile"
HOUSEKEEPING_JOB = "syncer.housekeeping"
WORKER_LOCK = "worker"

STARTUP_WAIT = 300.0
"""Seconds ``syncer worker`` waits at start for an unreachable database or Graph before giving up."""

T = TypeVar("T")


def require_tables(engine: Engine, spec: Spec) -> None:
    """DatabaseError naming the fix when the core or mirror tables are missing (never migrated)."""
    try:
        existing = set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError as error:
        raise DatabaseUnreachable(f"cannot reach the database {mirror.describe_url(spec.database_url)}: {error}") from error
    wanted = {schema.sync_state.name, schema.sync_runs.name, schema.inbox.name}
    wanted |= {sub.mirror.table for sub in spec.subscriptions}
    # A declaration with history writes its versions in the mirror write's transaction (on SQLite by the writer's
    # own statements): without the table, every pass would fail instead of the start.
    wanted |= {f"{sub.mirror.table}_versions" for sub in spec.subscriptions if sub.mirror.history is not None}
    missing = sorted(wanted - existing)
    if missing:
        raise DatabaseError(
            f"the database {mirror.describe_url(spec.database_url)} lacks {', '.join(missing)}: "
            "run `syncer db upgrade` first"
        )


def require_applied(engine: Engine, spec: Spec) -> None:
    """:class:`~syncer.applied.SpecOutdated` when the database follows another spec than *spec*."""
    with engine.connect() as connection:
        found = applied.outdated(connection, spec.fingerprint)
    if found is not None:
        raise applied.SpecOutdated(found, spec.fingerprint)


def _transient(error: SyncerError) -> bool:
    """Whether *error* says something is not there *yet* (worth waiting for at start)."""
    if isinstance(error, DatabaseUnreachable):
        return True
    return isinstance(error, GraphError) and (error.retryable or isinstance(error, RetryBudgetExhausted))


def when_ready(step: Callable[[], T], *, wait: float, sleep: Callable[[float], None] = time.sleep) -> T:
    """*step*, tried again while the database or Graph is unreachable, for up to *wait* seconds.

    systemd and Kubernetes start the worker with (or before) its database: waiting here, saying so
    once per attempt, beats exiting and being restarted with a growing back-off. Anything that time
    will not fix (tables missing, another SQLite worker, credentials refused) fails at once.
    """
    deadline = time.monotonic() + wait
    delay = 1.0
    while True:
        try:
            return step()
        except SyncerError as error:
            if not _transient(error) or time.monotonic() + delay > deadline:
                raise
            log.warning("not ready to start: %s; trying again in %.0f s", error, delay)
            sleep(delay)
            delay = min(delay * 2, 30.0)


def tune_process() -> None:
    """Process settings for a syncer worker (or `syncer sync`), set by their entry points.

    A pass fetches pages on one thread while it writes on another. With CPython's default 5 ms
    switch interval the fetching thread, woken by its socket, waits up to 5 ms for the writer to
    yield the GIL, several times per page; 1 ms measured 20-40% more items/s on an initial mirror.
    """
    if sys.getswitchinterval() > 0.001:
        sys.setswitchinterval(0.001)


DEFAULT_CONCURRENCY = spec_defaults.DEFAULT_CONCURRENCY
"""Graph requests in flight per tenant when neither the spec (``defaults.concurrency``, ``tenants[].concurrency``)
nor ``syncer worker --concurrency`` says: what sets the time of a mirror when Graph answers in 100 ms to a second.
Never more than 4 per mailbox (:mod:`syncer.graph.limits`)."""


def passes_for(concurrency: int) -> int:
    """Pass threads for *concurrency* requests in flight: twice as many, so that while some passes do
    their bookkeeping in the database, others hold every request slot (measured: bench/tenant.py).
    Threads, not asyncio: a pass is blocking I/O (requests, SQLAlchemy) and releases the GIL while
    it waits; the CPU a pass needs is parsing and writing, which asyncio would not make cheaper."""
    return 2 * concurrency


def clients_for(spec: Spec, **client_kwargs: Any) -> dict[str, Any]:
    """One GraphClient per tenant, keyed by tenant id."""
    from syncer.graph.client import GraphClient
    from syncer.graph.retry import RetryPolicy

    # A scope that Graph throttles for long is postponed (not_before) rather than waited on.
    client_kwargs.setdefault("retry", RetryPolicy(max_retry_after=30.0, max_elapsed=90.0))
    return {t.tenant_id: GraphClient.from_spec(spec, t.name, **client_kwargs) for t in spec.tenants}


def build_worker(spec: Spec, *, engine: Engine | None = None, worker_id: str | None = None,
                 clients: Mapping[str, Any] | None = None, max_passes: int = 4) -> Worker:
    """A worker for *spec*: engine, one client per tenant, the declared scopes."""
    engine = engine or database.create_engine(spec.database_url)
    sources = dict(clients) if clients is not None else clients_for(spec)
    by_name = {t.name: sources[t.tenant_id] for t in spec.tenants if t.tenant_id in sources}
    # Scopes use the signed-in users' ids; the worker's reconcile keeps the declared me/... resources. An
    # account that must sign in again is paused, not the whole worker (syncer.worker.accounts).
    accounts = Accounts(engine, spec, sources, clock=scopestate.utcnow)
    index = ScopeIndex.of(scopes.declared_scopes(accounts.resolve(spec), clients=by_name))
    return Worker(engine, sources, index, worker_id=worker_id, spec=spec, max_passes=max_passes, accounts=accounts)


def single_worker_lock(engine: Engine, worker_id: str) -> DatabaseLock | None:
    """On SQLite, the ``worker`` lock (a second worker is refused with its holder); None on PostgreSQL."""
    if not database.is_sqlite(engine):
        return None
    from syncer.locks import DatabaseLock, take_back

    # The row of a worker killed under this same --worker-id is taken back at once: this process is its successor.
    take_back(engine, WORKER_LOCK, worker_id)
    lock = DatabaseLock(engine, WORKER_LOCK, holder=worker_id, ttl=timedelta(seconds=30))
    try:
        lock.acquire(timeout=0)
    except LockTimeout as error:
        raise LockTimeout(
            f"another syncer worker is running on this SQLite database ({error}); SQLite supports one "
            "worker: stop it first, or use PostgreSQL to run several"
        ) from error
    return lock


@dataclass(frozen=True)
class Schedule:
    """How often each job runs (seconds).

    ``drain`` is the floor of freshness: a stored notification waits half of it on average before a
    pass starts (bench/latency.py: p50 1.1 s at 2 s, 0.34 s at 0.5 s). An idle drain is two indexed
    queries, ~5 ms with 40,000 scopes on PostgreSQL or SQLite, so 0.5 s costs about 1% of a core.
    """

    drain: float = 0.5
    safety_net: float = 60.0
    # Drain as soon as the receiver commits (syncer.worker.wake), the interval being the safety net.
    wake: bool = True
    reconcile: float = 900.0
    housekeeping: float = 3600.0


def guarded(worker: Worker, job: Callable[[], object]) -> Callable[[], None]:
    """*job* as the scheduler runs it: a failure to reach the database goes to ``worker.database``.

    APScheduler logs each exception a job raises with its traceback: every half second for the drain
    while the database is down. The job runs again at its next interval anyway, so such a failure is
    reported by the outage's changes of state instead (:class:`syncer.log.OutageLog`); any other
    exception still reaches APScheduler's log.
    """

    @functools.wraps(job)
    def run() -> None:
        try:
            if not worker.spec_watch.current():
                return  # stopping: never act on a spec older than the one applied (syncer.applied)
            job()
        except Exception as error:
            if not database_unreachable(error):
                raise
            worker.database.failed(error, "retrying")
        else:
            worker.database.ok()

    return run


def reconcile_interval(default: float, spec: Spec | None) -> float:
    """Seconds between reconciles: *default*, or less when a declaration's ``renew_before`` is short.

    A subscription is renewed by the first reconcile inside its ``renew_before`` window. Three runs fall in
    that window, so a run that failed (Graph throttling, an outage of minutes) still leaves two before the
    subscription expires: presence lives 60 minutes at most, renewed 15 minutes before expiry, so the
    worker reconciles every 5 minutes (https://learn.microsoft.com/graph/changenotifications-for-presence).
    """
    windows = [s.renew_before.total_seconds() for s in (spec.subscriptions if spec is not None else ())]
    return min([default, *(w / 3 for w in windows if w > 0)])


def schedule_jobs(scheduler: BaseScheduler, worker: Worker, schedule: Schedule | None = None) -> None:
    """Add the worker's jobs to *scheduler* with fixed ids (replacing any of the same id)."""
    schedule = schedule or Schedule()
    common: dict[str, Any] = {"replace_existing": True, "coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
    scheduler.add_job(guarded(worker, worker.drain), "interval", seconds=schedule.drain, id=DRAIN_JOB,
                      name="drain the inbox", **common)
    scheduler.add_job(guarded(worker, worker.safety_net), "interval", seconds=schedule.safety_net, id=SAFETY_NET_JOB,
                      name="safety-net delta", next_run_time=datetime.now(UTC), **common)
    scheduler.add_job(guarded(worker, worker.reconcile), "interval",
                      seconds=reconcile_interval(schedule.reconcile, worker.spec), id=RECONCILE_JOB,
                      name="reconcile subscriptions", **common)
    # First a minute after start, not an hour: a worker redeployed more often than hourly still purges.
    scheduler.add_job(guarded(worker, worker.housekeeping), "interval", seconds=schedule.housekeeping,
                      id=HOUSEKEEPING_JOB,
                      name="delete old notifications and pass records",
                      next_run_time=datetime.now(UTC) + timedelta(seconds=min(60.0, schedule.housekeeping)), **common)


@dataclass
class RunningWorker:
    """A started worker: its jobs' state, its scheduler and what to release when it stops."""

    worker: Worker
    scheduler: BaseScheduler
    engine: Engine
    lock: DatabaseLock | None
    database_gone: str | None = None  # the SQLite file was deleted or replaced (syncer.worker.dbfile)
    waker: Waker | None = None  # the receiver of `syncer run` wakes the drain through it

    def stop(self) -> None:
        """Stop the jobs, wait for running passes, release the SQLite worker lock."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.worker.close()
        if self.database_gone is None:  # else there is nothing to release, and touching it would create a file
            self.worker.release()

    def __iter__(self) -> Iterator[Any]:
        # `worker, scheduler = run_worker(...)` keeps working; stop with scheduler.shutdown(),
        # worker.close() and worker.release().
        return iter((self.worker, self.scheduler))


def run_worker(spec: Spec, *, schedule: Schedule | None = None, worker_id: str | None = None,
               blocking: bool = True, max_passes: int | None = None, startup_wait: float = STARTUP_WAIT,
               retention: Retention | None = None, metrics: Metrics | None = None,
               concurrency: int | None = None) -> RunningWorker:
    """Start the worker for *spec*: blocking until interrupted, or in the background (call ``stop()``).

    *metrics* (the receiver's, in ``syncer run``) take the worker's counters; by default they are shared
    through ``SYNCER_METRICS_DIR``, where the receiver's ``/metrics`` sums every process's snapshot.

    An unreachable database or Graph at start is waited for, up to *startup_wait* seconds (see
    :func:`when_ready`).
    """
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler

    tune_process()
    # --concurrency overrides every tenant's; the worker's reconcile job uses these same clients, so
    # reconcile and sync passes draw on one budget per tenant.
    spec = spec.with_concurrency(concurrency)
    max_passes = max_passes or passes_for(max(t.concurrency for t in spec.tenants))
    # Passes hold a connection only for their bookkeeping: a bounded pool serves many of them, and a
    # shared PostgreSQL's max_connections stays out of reach.
    engine = database.create_engine(spec.database_url, pool_size=min(max_passes, 20), max_overflow=10)
    worker_id = worker_id or default_worker_id()
    try:
        when_ready(lambda: require_tables(engine, spec), wait=startup_wait)
        require_applied(engine, spec)
        lock = single_worker_lock(engine, worker_id)
    except BaseException:
        engine.dispose()
        raise
    try:
        sources = clients_for(spec)
        # Expanding the declarations lists fan-out groups' members: Graph must answer.
        worker = when_ready(
            lambda: build_worker(spec, engine=engine, worker_id=worker_id, clients=sources, max_passes=max_passes),
            wait=startup_wait,
        )
        worker.retention = retention or worker.retention
        worker.metrics = metrics or Metrics(directory=os.environ.get("SYNCER_METRICS_DIR") or None)
        worker.register_scopes()
        if resumed := worker.resume():
            log.info("worker %s resumed %d inbox rows its previous process had claimed", worker_id, resumed)
    except BaseException:
        if lock is not None:
            lock.release()
        engine.dispose()
        raise
    if lock is not None:
        worker.on_release(lock.release)
    worker.on_release(engine.dispose)
    scheduler: BaseScheduler = BlockingScheduler(timezone=UTC) if blocking else BackgroundScheduler(timezone=UTC)
    # Another spec applied: stop the jobs (from a thread of our own: a job cannot wait for itself).
    worker.spec_watch.on_outdated(
        lambda: threading.Thread(target=scheduler.shutdown, kwargs={"wait": False}, name="syncer-spec-stop").start()
    )
    schedule_jobs(scheduler, worker, schedule)
    waker = None
    if (schedule or Schedule()).wake:
        from syncer.worker import wake

        waker, listener = wake.attach(scheduler, DRAIN_JOB, spec.database_url, outage=worker.database)
        if listener is not None:
            worker.on_release(listener.stop)
        worker.on_release(waker.close)
    running = RunningWorker(worker, scheduler, engine, lock, waker=waker)
    _watch_database_file(running)
    if not blocking:
        scheduler.start()
        return running
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        running.stop()
    return running


def _watch_database_file(running: RunningWorker) -> None:
    """On SQLite, stop the worker (once, said once) when its database file is deleted or replaced."""
    from syncer.worker.dbfile import CHECK_INTERVAL, DatabaseFile

    watched = DatabaseFile.of(running.engine)
    if watched is None:
        return

    def check() -> None:
        if running.database_gone is not None or (reason := watched.problem()) is None:
            return
        running.database_gone = reason
        log.error("%s: stopping; nothing more can be stored (restore the file or run `syncer db upgrade`, then start "
                  "the worker again)", reason)
        scheduler = running.scheduler
        threading.Thread(target=scheduler.shutdown, kwargs={"wait": False}, name="syncer-db-gone").start()

    running.scheduler.add_job(check, "interval", seconds=CHECK_INTERVAL, id="database-file", name="database file",
                              replace_existing=True, coalesce=True, max_instances=1)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """While inside, SIGINT (Ctrl-C) and SIGTERM set *stop*; yields the signals received.

    A pass given *stop* ends at its next commit and gives its lease back (outcome ``stopped``),
    so the next ``syncer sync`` or worker resumes from the committed page at once, instead of
    finding the scope ``busy`` until the lease expires. A second signal interrupts at once
    (KeyboardInterrupt): :func:`sync_once` still releases the lease of the scope it was running.
    Outside the main thread (where Python delivers signals) nothing is installed.
    """
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def on_signal(signum: int, _frame: object) -> None:
        caught.append(signum)
        if len(caught) > 1:
            raise KeyboardInterrupt
        # os.write, not logging: a handler may run while the logging lock is held.
        os.write(2, f"\n{signal.Signals(signum).name}: stopping after the page in flight is committed "
                    "(again to abort at once)\n".encode())
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def sync_once(
    spec: Spec,
    names: Sequence[str] = (),
    *,
    full: bool = False,
    progress: Callable[[sync.Progress], None] | None = None,
    engine: Engine | None = None,
    clients: Mapping[str, Any] | None = None,
    worker_id: str | None = None,
    page_size: int | None = sync.DEFAULT_PAGE_SIZE,
    stop: threading.Event | None = None,
    signed_out: list[SignInRequired] | None = None,
) -> list[sync.PassResult]:
    """What ``syncer sync`` does: one pass of every scope of the named declarations (all when empty).

    A delegated account that must sign in again raises :class:`~syncer.errors.SignInRequired`; given a
    *signed_out* list, its error goes there instead and the other tenants and accounts are synced.

    The very function the worker's passes call (:func:`syncer.worker.sync.sync_scope`), run in the
    foreground; container scopes run first so that the folders they find are synced in the same call.
    A person asked for these passes: they run despite a scope's back-off after failures or throttling
    (``not_before``), but a scope a running worker holds is left to it (``busy``).

    When *stop* is set (see :func:`stop_on_signals`) the pass in flight ends at its next commit and
    the scopes not started yet are reported ``stopped``. Interrupted otherwise (KeyboardInterrupt),
    the lease of the scope in flight is given back before the exception propagates.
    """
    for name in names:
        spec.subscription(name)  # ConfigError naming the declared ones
    tune_process()
    own = engine is None
    engine = engine or database.create_engine(spec.database_url)
    try:
        require_tables(engine, spec)
    except BaseException:
        if own:
            engine.dispose()
        raise
    sources = dict(clients) if clients is not None else clients_for(spec)
    worker_id = worker_id or f"{default_worker_id()}:sync"
    current: scopes.Scope | None = None

    def one(scope: scopes.Scope) -> sync.PassResult:
        nonlocal current
        if stop is not None and stop.is_set():
            return sync.PassResult(scope.key, "stopped")
        current = scope
        result = sync.sync_scope(
            engine, sources[scope.tenant_id], scope, worker=worker_id, full=full, progress=progress,
            page_size=page_size, stop=stop, manual=True,
        )
        current = None
        return result

    try:
        if signed_out is None:
            spec = signed_in(spec, sources)
        else:
            accounts = Accounts(engine, spec, sources, clock=scopestate.utcnow)
            spec = accounts.resolve(spec)  # the declarations of an account never signed in are left out
            signed_out += [p.error for p in accounts.paused.values()]
            spec = accounts.active(spec)
        by_name = {t.name: sources[t.tenant_id] for t in spec.tenants if t.tenant_id in sources}
        wanted = [n for n in names if n in {sub.name for sub in spec.subscriptions}] if names else None
        found = scopes.declared_scopes(spec, clients=by_name, names=wanted) if wanted != [] else []
        results: list[sync.PassResult] = []
        with engine.begin() as connection:
            scopestate.ensure_scope_rows(connection, found)
        ordered = [s for s in found if s.container] + [s for s in found if not s.container]
        for scope in ordered:
            result = one(scope)
            results.append(result)
            if scope.container and result.outcome == "ok":
                results.extend(one(child) for child in containers.children_of(engine, scope))
        return results
    except BaseException:
        if current is not None:
            _give_back(engine, current, worker_id)
        raise
    finally:
        if own:
            engine.dispose()


def _give_back(engine: Engine, scope: scopes.Scope, worker_id: str) -> None:
    """Release *scope*'s lease if this process still holds it (a pass interrupted mid-page).

    The pass's run record stays ``running``; the next pass of the scope marks it abandoned. Its rows
    and resume point are those of the last commit, so nothing written is lost.
    """
    store = scopestate.ScopeStore(engine, scope, worker=worker_id, clock=scopestate.utcnow,
                                  lease_ttl=scopestate.LEASE_TTL)
    try:
        with engine.begin() as connection:
            store.release_lease(connection)
    except Exception as error:  # the database itself may be what failed: the lease then expires by itself
        log.warning("could not release the lease of scope %s: %s", scope.key, error)
