"""The worker: APScheduler jobs that turn the inbox into sync passes, plus the safety net and reconcile.

Jobs (APScheduler 3.x, fixed ids, ``coalesce=True``, ``max_instances=1``, so a slow run is never
stacked behind itself):

- ``syncer.drain`` (every few seconds): claim inbox rows, collapse them into dirty scopes (a
  notification only says *something changed here*), run lifecycle repairs, acknowledge, then start
  one pass per dirty scope that is due. Passes run on a thread pool and the job does not wait for
  them, so one long or throttled scope never holds back the others.
- ``syncer.safety_net`` (every minute): mark dirty every scope whose last success is older than its
  declared interval. A lost notification then costs latency, never data.
- ``syncer.reconcile``: renewals and lifecycle repairs through :mod:`syncer.reconcile`.

Several workers may share one PostgreSQL database: the inbox is claimed with ``SKIP LOCKED`` and each
scope is leased (see :mod:`syncer.sync`). On SQLite there is one worker: it holds the ``worker`` lock
row for as long as it runs, and a second one is refused with the holder's name.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer import mirror, schema, scopes, sync
from syncer.errors import DatabaseError, LockTimeout, SyncerError
from syncer.inbox import Inbox, InboxItem
from syncer.scopes import FETCH, Scope

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from syncer.graph.client import GraphClient
    from syncer.locks import DatabaseLock
    from syncer.spec import Spec
    from syncer.sync import PageSource

log = logging.getLogger("syncer.worker")

DRAIN_JOB = "syncer.drain"
SAFETY_NET_JOB = "syncer.safety_net"
RECONCILE_JOB = "syncer.reconcile"
WORKER_LOCK = "worker"


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_worker_id() -> str:
    """``host:pid``: unique per process, readable in ``syncer status`` and lock messages."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class ScopeIndex:
    """Every scope the worker knows: the spec's static ones and the folders their containers found."""

    static: dict[tuple[str, str], Scope] = field(default_factory=dict)

    @classmethod
    def of(cls, found: Iterable[Scope]) -> ScopeIndex:
        return cls({(s.tenant_id, s.key): s for s in found})

    def containers(self) -> list[Scope]:
        return [s for s in self.static.values() if s.container]

    def resolve(self, tenant_id: str, key: str, parent_key: str | None) -> Scope | None:
        """The Scope of a ``syncer_sync_state`` row, or None when the spec no longer declares it."""
        found = self.static.get((tenant_id, key))
        if found is not None:
            return found
        for container in self.containers():
            if container.tenant_id == tenant_id and container.parent_key == parent_key:
                folder = scopes.folder_of(key, container)
                if folder is not None:
                    return scopes.child_scope(container, folder)
        return None

    def parents(self, tenant_id: str) -> dict[str, Scope]:
        """Parent key (lower-case) -> one scope under it, for one tenant."""
        return {s.parent_key.lower(): s for s in self.static.values() if s.tenant_id == tenant_id}


@dataclass(frozen=True)
class DrainResult:
    """What one drain did (for logs and tests)."""

    claimed: int = 0
    dirty: int = 0
    fetched: int = 0
    lifecycle: int = 0
    started: tuple[str, ...] = ()


class Worker:
    """The state one worker process keeps between jobs; each job is a plain method."""

    def __init__(
        self,
        engine: Engine,
        sources: Mapping[str, PageSource],
        index: ScopeIndex,
        *,
        worker_id: str | None = None,
        spec: Spec | None = None,
        max_passes: int = 4,
        clock: Callable[[], datetime] = utcnow,
        claim_limit: int = 500,
    ) -> None:
        self.engine = engine
        self.sources = sources  # tenant id -> client
        self.index = index
        self.worker_id = worker_id or default_worker_id()
        self.spec = spec
        self.clock = clock
        self.claim_limit = claim_limit
        self.inbox = Inbox(engine, clock=clock)
        self.pool = ThreadPoolExecutor(max_workers=max_passes, thread_name_prefix="syncer-pass")
        # Set by close(): passes end at their next commit, and nothing new is started.
        self._stopping = threading.Event()
        self._running: dict[tuple[str, str], Future[sync.PassResult]] = {}
        self._lock = threading.Lock()
        self.results: list[sync.PassResult] = []
        self.refresh_every = timedelta(hours=1)
        self.page_size: int | None = sync.DEFAULT_PAGE_SIZE
        self.reanchor_every = timedelta(days=1)
        self._finalizers: list[Callable[[], None]] = []
        self._refreshed: datetime | None = clock() if spec is not None else None
        self._drain_failed = False

    # --- setup ---

    def register_scopes(self) -> None:
        """Create the state rows of every declared scope (new scopes start dirty: enumerate them)."""
        with self.engine.begin() as connection:
            sync.ensure_scope_rows(connection, list(self.index.static.values()), dirty=True, now=self.clock())

    def resume(self) -> int:
        """Make claimable again the inbox rows this worker id claimed in a previous life; how many.

        A worker that starts holds nothing yet, so rows claimed under its id were left by a process
        that died (SIGKILL, OOM, a lost node) before acknowledging them. Without this a restart under
        a stable ``--worker-id`` would wait out the claim lease (5 minutes); scope leases under the
        same id are retaken by :meth:`due_scopes`.
        """
        t = schema.inbox
        with self.engine.begin() as connection:
            return int(
                connection.execute(
                    sa.update(t)
                    .where(t.c.claimed_by == self.worker_id, t.c.processed_at.is_(None))
                    .values(claimed_until=None)
                ).rowcount
            )

    # --- job: drain the inbox ---

    def drain(self, *, start: bool = True, max_batches: int = 20) -> DrainResult:
        """Claim inbox rows, mark their scopes dirty (or fetch items / repair subscriptions), ack them, start due passes.

        Claims batch after batch while they come back full (a burst of notifications collapses into
        one pass per scope), at most *max_batches* per run of the job.
        """
        if self._drain_failed:
            # The last drain died between claiming and acknowledging (the database went away): its
            # rows stay claimed under this id for minutes. Take them back before claiming anew.
            self.resume()
        self._drain_failed = True
        claimed = dirty = fetched = lifecycle = 0
        for _ in range(max_batches):
            batch = self._drain_batch()
            claimed += batch.claimed
            dirty += batch.dirty
            fetched += batch.fetched
            lifecycle += batch.lifecycle
            if batch.claimed < self.claim_limit:
                break
        self._drain_failed = False
        started = self.start_due() if start else ()
        return DrainResult(claimed, dirty, fetched, lifecycle, tuple(started))

    def _drain_batch(self) -> DrainResult:
        items = self.inbox.claim(self.worker_id, limit=self.claim_limit)
        dirty = fetched = lifecycle = 0
        if items:
            subs = self._subscriptions({i.subscription_id for i in items})
            fetches: dict[tuple[str, str], list[str]] = {}
            parents: dict[str, set[str]] = {}  # tenant -> parent keys: many notifications, one mark each
            marking: list[int] = []
            done: list[int] = []
            failed: list[tuple[int, str]] = []
            for item in items:
                try:
                    if item.kind == "lifecycle":
                        lifecycle += 1
                        self._lifecycle(item, subs.get(item.subscription_id))
                    else:
                        target = self._scope_of(item, subs.get(item.subscription_id))
                        if target is None:
                            log.warning("notification for unknown scope (subscription %s, resource %s): ignored",
                                        item.subscription_id, item.resource)
                        elif target.strategy.method == FETCH and item.resource:
                            fetches.setdefault((target.tenant_id, target.key), []).append(item.resource)
                        else:
                            parents.setdefault(target.tenant_id, set()).add(target.parent_key)
                            marking.append(item.id)
                            continue
                    done.append(item.id)
                except Exception as error:  # one bad row must not block the queue
                    log.exception("inbox row %d failed", item.id)
                    failed.append((item.id, str(error)))
            try:
                with self.engine.begin() as connection:
                    for tenant_id, keys in parents.items():
                        dirty += sync.mark_dirty(connection, tenant_id, sorted(keys), now=self.clock())
                done += marking
            except Exception as error:
                log.exception("marking %d scopes dirty failed", sum(len(k) for k in parents.values()))
                failed += [(row_id, str(error)) for row_id in marking]
            for (tenant_id, key), resources in fetches.items():
                scope = self.index.static[(tenant_id, key)]
                try:
                    result = sync.fetch_items(self.engine, self.sources[tenant_id], scope, resources,
                                              worker=self.worker_id, clock=self.clock)
                    fetched += result.items
                except Exception as error:
                    # The periodic list of the scope (a full round with its sweep) covers these items.
                    log.warning("fetching %d notified items of %s failed (%s): listing the scope instead",
                                len(resources), scope.key, error)
                    with self.engine.begin() as connection:
                        dirty += sync.mark_dirty(connection, tenant_id, [scope.parent_key], now=self.clock())
            self.inbox.ack(done, worker=self.worker_id)
            for row_id, reason in failed:
                self.inbox.release([row_id], worker=self.worker_id, error=reason, retry_in=timedelta(minutes=1))
        return DrainResult(len(items), dirty, fetched, lifecycle)

    def _subscriptions(self, ids: set[str]) -> dict[str, Any]:
        t = schema.subscriptions
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(t).where(t.c.subscription_id.in_(sorted(ids)))).all()
        return {r.subscription_id: r for r in rows}

    def _scope_of(self, item: InboxItem, sub: Any) -> Scope | None:
        parents = self.index.parents(item.tenant_id)
        if sub is not None:
            found = parents.get(str(sub.scope_key).lower())
            if found is not None:
                return found
        # No row for the subscription (adopted elsewhere, or removed): the resource path says where.
        resource = (item.resource or "").strip("/").lower()
        best: Scope | None = None
        for key, scope in parents.items():
            if (resource == key or resource.startswith(key + "/")) and (best is None or len(key) > len(best.parent_key)):
                best = scope
        return best

    def _lifecycle(self, item: InboxItem, sub: Any) -> None:
        parent = str(sub.scope_key) if sub is not None else None
        if item.event in ("missed", "subscriptionRemoved") and parent is not None:
            # Changes may have been lost: the scope is enumerated again and swept.
            with self.engine.begin() as connection:
                sync.mark_dirty(connection, item.tenant_id, [parent], now=self.clock(), resync=True)
        if item.event in ("subscriptionRemoved", "reauthorizationRequired"):
            from syncer import reconcile  # late: reconcile's own imports are heavy and unused by most jobs

            if self.spec is not None:
                reconcile.repair(self.spec, event=item.event, subscription_id=item.subscription_id,
                                 engine=self.engine, graphs=self._graphs())

    # --- running passes ---

    def due_scopes(self) -> list[Scope]:
        """Dirty (or resync-requested) scopes that are not postponed, not leased and not running here."""
        s = schema.sync_state
        now = self.clock()
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(s.c.tenant_id, s.c.scope_key, s.c.parent_key)
                .where(
                    sa.or_(s.c.dirty_since.is_not(None), s.c.resync_requested.is_(True), s.c.page_link.is_not(None)),
                    sa.or_(s.c.not_before.is_(None), s.c.not_before <= now),
                    # A lease under this worker's own id with no pass of it running here (start_due
                    # skips those) is stale: left by its killed predecessor, or by a pass that could
                    # not release it because the database was down. Waiting out its ttl would
                    # freeze the scope for minutes after an outage.
                    sa.or_(s.c.lease_until.is_(None), s.c.lease_until < now, s.c.leased_by == self.worker_id),
                )
                .order_by(s.c.dirty_since)
            ).all()
        due = []
        for row in rows:
            scope = self.index.resolve(row.tenant_id, row.scope_key, row.parent_key)
            if scope is not None:
                due.append(scope)
        return due

    def start_due(self) -> list[str]:
        """Start a pass for every due scope not already running in this process."""
        started: list[str] = []
        if self._stopping.is_set():
            return started
        with self._lock:
            for key, future in list(self._running.items()):
                if future.done():
                    del self._running[key]
            for scope in self.due_scopes():
                key = (scope.tenant_id, scope.key)
                if key in self._running:
                    continue
                self._running[key] = self.pool.submit(self._pass, scope)
                started.append(scope.key)
        return started

    def _pass(self, scope: Scope) -> sync.PassResult:
        try:
            result = sync.sync_scope(
                self.engine, self.sources[scope.tenant_id], scope, worker=self.worker_id, clock=self.clock,
                page_size=self.page_size, stop=self._stopping,
            )
        except Exception as error:  # the database failed before the pass could record anything
            log.exception("pass %s could not start", scope.key)
            result = sync.PassResult(scope.key, "error", error=str(error))
            with self._lock:
                self.results.append(result)
            return result
        log.info("pass %s: %s (%d items, %d pages)", scope.key, result.outcome, result.items, result.pages)
        with self._lock:
            self.results.append(result)
        if result.outcome == "ok" and scope.container and not self._stopping.is_set():
            # New folders were registered dirty: start them now rather than at the next drain.
            self.pool.submit(self.start_due)
        return result

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the passes started so far (tests, `syncer sync`)."""
        while True:
            with self._lock:
                pending = [f for f in self._running.values() if not f.done()]
            if not pending:
                return
            for future in pending:
                future.result(timeout=timeout)

    # --- job: safety net ---

    def refresh_scopes(self) -> int:
        """Expand the declarations again (fan-out over a group or filter changes); register new scopes."""
        if self.spec is None:
            return 0
        by_name = {t.name: self.sources[t.tenant_id] for t in self.spec.tenants if t.tenant_id in self.sources}
        fresh = ScopeIndex.of(scopes.declared_scopes(self.spec, clients=by_name))
        added = [sc for key, sc in fresh.static.items() if key not in self.index.static]
        self.index = fresh
        if added:
            with self.engine.begin() as connection:
                sync.ensure_scope_rows(connection, added, dirty=True, now=self.clock())
        self._refreshed = self.clock()
        return len(added)

    def safety_net(self) -> int:
        """Mark dirty the scopes whose last success is older than their interval; how many.

        Also re-expands the declarations every :attr:`refresh_every` (a fan-out group gained a member).
        """
        s = schema.sync_state
        now = self.clock()
        if self._refreshed is None or now - self._refreshed >= self.refresh_every:
            try:
                self.refresh_scopes()
            except Exception:
                log.exception("expanding the declarations failed; keeping the scopes known so far")
                self._refreshed = now
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(s.c.tenant_id, s.c.scope_key, s.c.parent_key, s.c.last_success_at).where(s.c.dirty_since.is_(None))
            ).all()
        stale = []
        for row in rows:
            scope = self.index.resolve(row.tenant_id, row.scope_key, row.parent_key)
            last = sync._aware(row.last_success_at)
            if scope is not None and (last is None or last + scope.interval <= now):
                stale.append((row.tenant_id, row.scope_key))
        resync = self._window_scopes_to_reanchor(now)
        marked = 0
        # Writes only in this transaction (a read first would make SQLite upgrade a read lock, which
        # fails at once instead of waiting when another writer got in between).
        with self.engine.begin() as connection:
            for tenant_id, key in stale:
                marked += connection.execute(
                    sa.update(s)
                    .where(s.c.tenant_id == tenant_id, s.c.scope_key == key, s.c.dirty_since.is_(None))
                    .values(dirty_since=now, updated_at=now)
                ).rowcount
            for tenant_id, key in resync:
                connection.execute(
                    sa.update(s)
                    .where(s.c.tenant_id == tenant_id, s.c.scope_key == key)
                    .values(resync_requested=True, dirty_since=now, updated_at=now)
                )
        return marked + len(resync)

    def _window_scopes_to_reanchor(self, now: datetime) -> list[tuple[str, str]]:
        """calendarView scopes whose window was last set more than :attr:`reanchor_every` ago.

        A calendarView deltaLink keeps the window of the round that created it; moving the window
        with time takes a full round from a fresh initial URL (which also sweeps the events that
        fell out of it).
        """
        windowed = [sc for sc in self.index.static.values() if sc.strategy.window]
        if not windowed:
            return []
        r = schema.sync_runs
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(r.c.tenant_id, r.c.scope_key, sa.func.max(r.c.started_at))
                .where(r.c.full.is_(True), r.c.outcome == "ok")
                .group_by(r.c.tenant_id, r.c.scope_key)
            ).all()
        last_full = {(t, k): sync._aware(at) for t, k, at in rows}
        due = []
        for sc in windowed:
            at = last_full.get((sc.tenant_id, sc.key))
            if at is not None and at + self.reanchor_every <= now:
                due.append((sc.tenant_id, sc.key))
        return due

    # --- job: reconcile ---

    def reconcile(self) -> None:
        """Run reconcile (renewals, repairs, fan-out changes), then sync the scopes it added at once."""
        from syncer import reconcile

        if self.spec is None:  # a worker built without a spec (tests) has nothing to reconcile
            return
        if reconcile.run(self.spec, engine=self.engine, graphs=self._graphs()) is not None:
            # A fan-out group may have gained members: their new subscriptions need their scopes now,
            # not at the next hourly re-expansion.
            added = self.refresh_scopes()
            if added:
                log.info("reconcile added %d scopes to sync", added)

    def _graphs(self) -> Mapping[str, GraphClient]:
        # The page sources of a worker built from a spec are GraphClients (tests may use lighter fakes
        # for passes, but reconcile and repairs only ever run on spec-built workers).
        return cast("Mapping[str, GraphClient]", self.sources)

    def close(self) -> None:
        """Start no more passes; let those in flight stop at their next commit, and wait for them."""
        self._stopping.set()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def release(self) -> None:
        """Give back what :func:`run_worker` took for this worker (the SQLite worker lock)."""
        finalizers, self._finalizers = self._finalizers, []
        for finalize in reversed(finalizers):
            finalize()


# --- building a worker from the spec and scheduling it ---------------------------------------------


def require_tables(engine: Engine, spec: Spec) -> None:
    """DatabaseError naming the fix when the core or mirror tables are missing (never migrated)."""
    try:
        existing = set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError as error:
        raise DatabaseError(f"cannot reach the database {mirror.describe_url(spec.database_url)}: {error}") from error
    wanted = {schema.sync_state.name, schema.sync_runs.name, schema.inbox.name}
    wanted |= {sub.mirror.table for sub in spec.subscriptions}
    missing = sorted(wanted - existing)
    if missing:
        raise DatabaseError(
            f"the database {mirror.describe_url(spec.database_url)} lacks {', '.join(missing)}: "
            "run `syncer db upgrade` first"
        )


def tune_process() -> None:
    """Process settings for a syncer worker (or `syncer sync`), set by their entry points.

    A pass fetches pages on one thread while it writes on another. With CPython's default 5 ms
    switch interval the fetching thread, woken by its socket, waits up to 5 ms for the writer to
    yield the GIL, several times per page; 1 ms measured 20-40% more items/s on an initial mirror.
    """
    if sys.getswitchinterval() > 0.001:
        sys.setswitchinterval(0.001)


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
    engine = engine or schema.create_engine(spec.database_url)
    sources = dict(clients) if clients is not None else clients_for(spec)
    by_name = {t.name: sources[t.tenant_id] for t in spec.tenants if t.tenant_id in sources}
    index = ScopeIndex.of(scopes.declared_scopes(spec, clients=by_name))
    return Worker(engine, sources, index, worker_id=worker_id, spec=spec, max_passes=max_passes)


def single_worker_lock(engine: Engine, worker_id: str) -> DatabaseLock | None:
    """On SQLite, the ``worker`` lock (a second worker is refused with its holder); None on PostgreSQL."""
    if not schema.is_sqlite(engine):
        return None
    from syncer.locks import DatabaseLock

    # The row of a worker killed under this same id (a restarted systemd unit or pod with a stable
    # --worker-id) is taken back at once instead of after its ttl: this process is its successor.
    with engine.begin() as connection:
        connection.execute(
            sa.delete(schema.locks).where(schema.locks.c.name == WORKER_LOCK, schema.locks.c.holder == worker_id)
        )
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
    reconcile: float = 900.0


def schedule_jobs(scheduler: BaseScheduler, worker: Worker, schedule: Schedule | None = None) -> None:
    """Add the worker's jobs to *scheduler* with fixed ids (replacing any of the same id)."""
    schedule = schedule or Schedule()
    common: dict[str, Any] = {"replace_existing": True, "coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
    scheduler.add_job(worker.drain, "interval", seconds=schedule.drain, id=DRAIN_JOB, name="drain the inbox", **common)
    scheduler.add_job(worker.safety_net, "interval", seconds=schedule.safety_net, id=SAFETY_NET_JOB,
                      name="safety-net delta", next_run_time=datetime.now(UTC), **common)
    scheduler.add_job(worker.reconcile, "interval", seconds=schedule.reconcile, id=RECONCILE_JOB,
                      name="reconcile subscriptions", **common)


@dataclass
class RunningWorker:
    """A started worker: its jobs' state, its scheduler and what to release when it stops."""

    worker: Worker
    scheduler: BaseScheduler
    engine: Engine
    lock: DatabaseLock | None

    def stop(self) -> None:
        """Stop the jobs, wait for running passes, release the SQLite worker lock."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.worker.close()
        self.worker.release()

    def __iter__(self) -> Iterator[Any]:
        # `worker, scheduler = run_worker(...)` keeps working; stop with scheduler.shutdown(),
        # worker.close() and worker.release().
        return iter((self.worker, self.scheduler))


def run_worker(spec: Spec, *, schedule: Schedule | None = None, worker_id: str | None = None,
               blocking: bool = True, max_passes: int = 4) -> RunningWorker:
    """Start the worker for *spec*: blocking until interrupted, or in the background (call ``stop()``)."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler

    tune_process()
    engine = schema.create_engine(spec.database_url)
    worker_id = worker_id or default_worker_id()
    try:
        require_tables(engine, spec)
        lock = single_worker_lock(engine, worker_id)
    except BaseException:
        engine.dispose()
        raise
    try:
        worker = build_worker(spec, engine=engine, worker_id=worker_id, max_passes=max_passes)
        worker.register_scopes()
        if resumed := worker.resume():
            log.info("worker %s resumed %d inbox rows its previous process had claimed", worker_id, resumed)
    except BaseException:
        if lock is not None:
            lock.release()
        engine.dispose()
        raise
    if lock is not None:
        worker._finalizers.append(lock.release)
    worker._finalizers.append(engine.dispose)
    scheduler: BaseScheduler = BlockingScheduler(timezone=UTC) if blocking else BackgroundScheduler(timezone=UTC)
    schedule_jobs(scheduler, worker, schedule)
    running = RunningWorker(worker, scheduler, engine, lock)
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
) -> list[sync.PassResult]:
    """What ``syncer sync`` does: one pass of every scope of the named declarations (all when empty).

    The very function the worker's passes call (:func:`syncer.sync.sync_scope`), run in the
    foreground; container scopes run first so that the folders they find are synced in the same call.
    """
    for name in names:
        spec.subscription(name)  # ConfigError naming the declared ones
    tune_process()
    own = engine is None
    engine = engine or schema.create_engine(spec.database_url)
    try:
        require_tables(engine, spec)
    except BaseException:
        if own:
            engine.dispose()
        raise
    sources = dict(clients) if clients is not None else clients_for(spec)
    try:
        by_name = {t.name: sources[t.tenant_id] for t in spec.tenants if t.tenant_id in sources}
        found = scopes.declared_scopes(spec, clients=by_name, names=names or None)
        results: list[sync.PassResult] = []
        worker_id = worker_id or f"{default_worker_id()}:sync"
        with engine.begin() as connection:
            sync.ensure_scope_rows(connection, found, now=utcnow())
        ordered = [s for s in found if s.container] + [s for s in found if not s.container]
        for scope in ordered:
            source = sources[scope.tenant_id]
            result = sync.sync_scope(
                engine, source, scope, worker=worker_id, full=full, progress=progress, page_size=page_size
            )
            results.append(result)
            if scope.container and result.outcome == "ok":
                for child in sync.children_of(engine, scope):
                    results.append(
                        sync.sync_scope(
                            engine, source, child, worker=worker_id, full=full, progress=progress, page_size=page_size
                        )
                    )
        return results
    except SyncerError:
        raise
    finally:
        if own:
            engine.dispose()
