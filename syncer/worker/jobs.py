"""The worker: the state one worker process keeps, and its jobs as plain methods.

- :meth:`Worker.drain`: claim inbox rows, collapse them into dirty scopes (a notification only says
  *something changed here*), fetch the notified items of scopes without delta, run lifecycle
  repairs, acknowledge, then start one pass per dirty scope that is due. Passes run on a thread pool
  and the job does not wait for them, so one long or throttled scope never holds back the others.
- :meth:`Worker.safety_net`: mark dirty every scope whose last success is older than its declared
  interval. A lost notification then costs latency, never data.
- :meth:`Worker.reconcile`: renewals and lifecycle repairs through :mod:`syncer.reconcile`, then
  :meth:`Worker.refresh_scopes` (a fan-out group gained or lost members).
- :meth:`Worker.housekeeping`: delete processed notifications and pass records past their retention.

Several workers may share one PostgreSQL database: the inbox is claimed with ``SKIP LOCKED`` and each
scope is leased (see :mod:`syncer.worker.scopestate`). When and how often each job runs, and building a
worker from the spec, is :mod:`syncer.worker.scheduler`'s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer import history, reconcile, schema
from syncer.graph.delegated import signed_in
from syncer.inbox import Inbox, InboxItem
from syncer.log import OutageLog, database_unreachable
from syncer.metrics import Metrics
from syncer.reconcile import records
from syncer.worker import batched, fetch, notified, reading, rich, scopes, scopestate, sync
from syncer.worker.scopes import Scope, ScopeIndex, Strategy
from syncer.worker.scopestate import utcnow
from syncer.worker.specwatch import SpecWatch

if TYPE_CHECKING:
    from syncer.graph.client import GraphClient
    from syncer.spec import Spec
    from syncer.worker.accounts import Accounts
    from syncer.worker.sync import PageSource

__all__ = ["DrainResult", "Retention", "Worker", "default_worker_id"]

log = logging.getLogger("syncer.worker.jobs")
T = TypeVar("T")

FETCH_RETRY = timedelta(seconds=10)
"""How long notified items of a scope without delta wait in the inbox while another pass holds the scope."""
RICH_RETRY = timedelta(seconds=1)
"""How long rich notifications wait while a pass holds their scope (passes of a notified scope are short)."""
OWN_PASS_RETRY = timedelta(seconds=1)
"""... and while a pass of this worker holds it: a channel's delta pass runs while its notified replies wait (the
bench of 100 Teams changes converged in 11 s instead of 1 s when they waited FETCH_RETRY)."""


def default_worker_id() -> str:
    """``host:pid``: unique per process, readable in ``syncer status`` and lock messages."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Retention:
    """How long the worker keeps what it no longer needs (None: forever)."""

    notifications: timedelta | None = timedelta(days=7)
    """Processed notifications in the inbox: what `syncer replay` can still replay."""
    runs: timedelta | None = timedelta(days=30)
    """The record of each pass in ``syncer_sync_runs``."""


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
        accounts: Accounts | None = None,
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
        # The drain's reads by id, one mailbox each at a time: a read waits on Graph (100 ms to a second), so a
        # drain of many mailboxes' notifications reads them side by side, within the client's limits.
        self.readers = ThreadPoolExecutor(max_workers=max_passes, thread_name_prefix="syncer-read")
        # Set by close(): passes end at their next commit, and nothing new is started.
        self._stopping = threading.Event()
        self._running: dict[tuple[str, str], Future[sync.PassResult]] = {}
        self._fetching: set[tuple[str, str]] = set()  # scopes whose notified items the drain is fetching
        self._lock = threading.Lock()
        self.max_passes = max_passes
        self._starting = False  # a start_due is reading the due scopes (see there)
        self._start_again = False  # ... and another call came meanwhile: it reads them once more
        self._backlog = False  # the last reading left due scopes unread: each pass that ends reads again
        self._ending: set[tuple[str, str]] = set()  # passes whose thread reads again before it is free
        self.results: list[sync.PassResult] = []
        self.withdrawn = 0
        """Passes withdrawn before they started, their scope no longer due (taken or cleaned by another worker)."""
        self.refresh_every = timedelta(hours=1)
        self.page_size: int | None = sync.DEFAULT_PAGE_SIZE
        self.reanchor_every = timedelta(days=1)
        self.relist_every = timedelta(hours=6)
        """How often a scope whose items carry others (a channel's roots, ``$expand=replies``) is read again from its
        first page, without a sweep: a reply whose notification was lost, under a root that did not change (channel
        delta sends roots only), comes back. Counted from the last full round or relist (``listed_at``)."""
        self.safety_batch = 1_000
        """Scopes a safety-net tick reads per declaration and kind (stale, re-anchor, relist), oldest first."""
        self._declared_of: tuple[ScopeIndex, list[tuple[str, timedelta, Strategy]]] | None = None
        self._finalizers: list[Callable[[], None]] = []
        self._refreshed: datetime | None = clock() if spec is not None else None
        self._drain_failed = False
        self._scope_key_of: dict[str, str] = {}  # subscription id -> scope key (see _scope_keys)
        self.retention = Retention()
        self._history_settled: dict[str, Any] = {}  # tables history.close_orphans has nothing left to wait for
        # The jobs and passes report database failures here: a line per outage, not per attempt.
        self.database = OutageLog(log, "database")
        self.accounts = accounts  # delegated accounts: one that must sign in again is paused, not the others
        self.metrics = Metrics()  # syncer_rows_written_total by source (payload, fetch, delta); see run_worker
        # Whether the database still follows our spec (syncer.applied); when not, we stop.
        self.spec_watch = SpecWatch(engine, spec.fingerprint if spec is not None else "")
        self.spec_watch.on_outdated(self._stopping.set)

    # --- setup ---

    def register_scopes(self) -> None:
        """Create the state rows of every declared scope (new scopes start dirty: enumerate them), and
        retire those the declarations no longer expand to (see :meth:`retire_scopes`)."""
        with self.engine.begin() as connection:
            scopestate.ensure_scope_rows(connection, list(self.index.static.values()), dirty=True, now=self.clock())
        self.retire_scopes()

    def resume(self) -> int:
        """Make claimable again the inbox rows this worker id claimed in a previous life; how many.

        A worker that starts holds nothing yet, so rows claimed under its id were left by a process
        that died (SIGKILL, OOM, a lost node) before acknowledging them. Without this a restart under
        a stable ``--worker-id`` would wait out the claim lease (5 minutes); scope leases under the
        same id are retaken by :meth:`due_scopes`.
        """
        return self.inbox.take_back(self.worker_id)

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
        if self.accounts is not None and (resumed := self.accounts.check()):
            if self.accounts.unresolved & set(resumed):
                self.refresh_scopes()  # an account signed out since start signed in: its scopes are known now
            self.pool.submit(self.reconcile)  # its subscriptions, on the new sign-in
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
            subs = self._scope_keys({i.subscription_id for i in items})
            fetches: dict[tuple[str, str], list[InboxItem]] = {}
            payloads: dict[tuple[str, str], list[rich.Change]] = {}  # rich notifications: rows from payloads
            parents: dict[str, set[str]] = {}  # tenant -> parent keys: many notifications, one mark each
            exact: dict[str, set[str]] = {}  # tenant -> scope keys: a container's child (a To Do list) and itself
            marking: list[int] = []
            done: list[int] = []
            failed: list[tuple[int, str]] = []
            soon: list[int] = []  # retried at once: the database failed, not the row
            held: list[int] = []  # lifecycle events of an account that must sign in again: they wait
            for item in items:
                try:
                    if item.kind == "lifecycle":
                        if self.accounts is None or self.accounts.allows(item.tenant_id):
                            lifecycle += 1
                            self._lifecycle(item, subs.get(item.subscription_id))
                        if self.accounts is not None and not self.accounts.allows(item.tenant_id, observe=True):
                            held.append(item.id)  # answered once its account signed in again
                            continue
                    else:
                        target = self._scope_of(item, subs.get(item.subscription_id))
                        if target is None:
                            log.warning("notification for unknown scope (subscription %s, resource %s): ignored",
                                        item.subscription_id, item.resource)
                        elif rich.writable(target) and (change := rich.change_of(item)) is not None:
                            payloads.setdefault((target.tenant_id, target.key), []).append(change)
                            continue  # acknowledged once written
                        elif (change := notified.change_of(item, target)) is not None:
                            # One item of a whole mailbox: read by id into its folder, not a pass per folder.
                            payloads.setdefault((target.tenant_id, target.key), []).append(change)
                            continue  # acknowledged once written (or its scopes marked)
                        elif item.resource and scopes.fetched_by_id(target.strategy, item.resource):
                            fetches.setdefault((target.tenant_id, target.key), []).append(item)
                            continue  # acknowledged once fetched
                        else:
                            child = scopes.child_key(target, subs.get(item.subscription_id))
                            if child is not None:
                                # One subscription per list: that list's pass, and the container's (one
                                # lists delta) in case the list is new to it.
                                exact.setdefault(target.tenant_id, set()).update((child, target.key))
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
                        dirty += scopestate.mark_dirty(connection, tenant_id, sorted(keys), now=self.clock())
                    for tenant_id, keys in exact.items():
                        dirty += scopestate.mark_dirty(
                            connection, tenant_id, sorted(keys), now=self.clock(), by_scope_key=True
                        )
                done += marking
            except Exception as error:
                if not database_unreachable(error):
                    log.exception("marking %d scopes dirty failed", sum(len(k) for k in parents.values()))
                    failed += [(row_id, str(error)) for row_id in marking]
                else:
                    # The session was lost or unusable (a failover, a read-only episode): its connection is
                    # discarded already, and the next drain gets a fresh one; these rows wait seconds, not
                    # the minute a bad row waits. The outage log says it once.
                    self.database.failed(error, f"{len(marking)} notifications wait for the next drain")
                    soon += marking
            waiting: dict[timedelta, list[int]] = {}  # retry in -> rows
            # Read side by side (Graph answers in 100 ms to a second), many reads to a $batch envelope, and write
            # one after the other as reads end.
            readings = batched.read_all(self.engine, self.index, self.sources,
                                        [(self.index.static[key], changes) for key, changes in payloads.items()],
                                        self.readers)
            for reading in readings:
                written, wait = rich.write_notified(
                    self.engine, reading, exclusive=self._exclusive, worker=self.worker_id, clock=self.clock,
                    metrics=self.metrics, outdated=self.spec_watch.report)
                done += written
                waiting.setdefault(RICH_RETRY, []).extend(wait)
            for (tenant_id, key), named in fetches.items():
                scope = self.index.static[(tenant_id, key)]
                rows = [i.id for i in named]
                try:
                    result = self._fetch(scope, [i.resource for i in named if i.resource])
                except Exception as error:
                    # The periodic list of the scope (a full round with its sweep) covers these items.
                    log.warning("fetching %d notified items of %s failed (%s): listing the scope instead",
                                len(named), scope.key, error)
                    with self.engine.begin() as connection:
                        dirty += scopestate.mark_dirty(connection, tenant_id, [scope.parent_key], now=self.clock())
                    done += rows
                    continue
                if result.outcome == "ok":
                    fetched += result.items
                    self.metrics.inc("syncer_rows_written_total", result.upserted + result.deleted, source="fetch")
                    done += rows
                    continue
                if result.outcome == "outdated":
                    self.spec_watch.report(result.error or "the spec changed")
                # Nothing was written: another pass holds the scope (busy, or it took the lease
                # over), or Graph throttles it. The notifications wait in the inbox until the scope
                # is free, or until the throttle's not_before.
                retry_in = FETCH_RETRY
                if result.not_before is not None:
                    retry_in = max(result.not_before - self.clock(), timedelta(seconds=1))
                log.info("fetching %d notified items of %s: %s, trying again in %ss", len(named), scope.key,
                         result.outcome, int(retry_in.total_seconds()))
                waiting.setdefault(retry_in, []).extend(rows)
            # A decrypted resource is personal data: it leaves the inbox with the acknowledgement.
            self.inbox.ack(done, worker=self.worker_id,
                           forget={i.id: i.payload for i in items if "decryptedContent" in i.payload})
            for retry_in, rows in waiting.items():
                self.inbox.release(rows, worker=self.worker_id, retry_in=retry_in)
            for row_id, reason in failed:
                self.inbox.release([row_id], worker=self.worker_id, error=reason, retry_in=timedelta(minutes=1))
            if soon:
                self.inbox.release(soon, worker=self.worker_id)
            if held:
                self.inbox.release(held, worker=self.worker_id, retry_in=timedelta(seconds=2))
        return DrainResult(len(items), dirty, fetched, lifecycle)

    def _fetch(self, scope: Scope, resources: list[str]) -> sync.PassResult:
        """:func:`syncer.worker.fetch.fetch_items`, or ``busy`` while a pass of *scope* runs in this process."""
        done = self._exclusive(scope, lambda: fetch.fetch_items(
            self.engine, self.sources[scope.tenant_id], scope, resources, worker=self.worker_id, clock=self.clock))
        return done if done is not None else sync.PassResult(scope.key, "busy", not_before=self.clock() + OWN_PASS_RETRY)

    def _exclusive(self, scope: Scope, call: Callable[[], T]) -> T | None:
        """*call* (a write under *scope*'s lease), or None while a pass of *scope* runs in this process.

        Such a pass holds the lease under this worker's own id, which the call would take as its
        own and release under it; so would a pass that :meth:`start_due` started during the call.
        """
        key = (scope.tenant_id, scope.key)
        with self._lock:
            running = self._running.get(key)
            if running is not None and not running.done():
                return None
            self._fetching.add(key)
        try:
            return call()
        finally:
            with self._lock:
                self._fetching.discard(key)

    def _scope_keys(self, ids: set[str]) -> dict[str, str]:
        """Subscription id -> its scope key (the subscription-level resource), for those we have a row of.

        Cached: a subscription keeps its resource for life (a changed resource is a new
        subscription), and a burst of notifications names the same few hundred ids batch after batch.
        """
        missing = sorted(ids - self._scope_key_of.keys())
        if missing:
            found = records.scope_keys_of(self.engine, missing)
            if len(self._scope_key_of) > 100_000:  # ids of subscriptions long gone
                self._scope_key_of.clear()
            self._scope_key_of.update(found)
        return {i: self._scope_key_of[i] for i in ids if i in self._scope_key_of}

    def _scope_of(self, item: InboxItem, scope_key: str | None) -> Scope | None:
        if scope_key is not None and self.accounts is not None:
            scope_key = self.accounts.scope_key(item.tenant_id, scope_key)  # me/... is users/{id}/...
        if scope_key is not None:
            found = self.index.under(item.tenant_id, scope_key)
            if found is not None:
                return found
            # A subscription on one folder of a container (a To Do list): the container's.
            found = self.index.owning(item.tenant_id, scope_key)
            if found is not None:
                return found
        # No row for the subscription (adopted elsewhere, or removed): the resource path says where.
        return self.index.owning(item.tenant_id, item.resource or "")

    def _lifecycle(self, item: InboxItem, parent: str | None) -> None:
        if item.event in ("missed", "subscriptionRemoved") and parent is not None:
            # Changes may have been lost: the scope is enumerated again and swept.
            target = self._scope_of(item, parent)
            child = scopes.child_key(target, parent) if target is not None else None
            with self.engine.begin() as connection:
                if target is not None and child is not None:  # one To Do list's subscription: that list
                    scopestate.mark_dirty(connection, item.tenant_id, [child, target.key], now=self.clock(),
                                          resync=True, by_scope_key=True)
                else:
                    scopestate.mark_dirty(connection, item.tenant_id, [parent], now=self.clock(), resync=True)
        if item.event in ("subscriptionRemoved", "reauthorizationRequired") and self.spec is not None:
            reconcile.repair(self.spec, event=item.event, subscription_id=item.subscription_id,
                             engine=self.engine, graphs=self._graphs())

    # --- running passes ---

    def due_rows(self, limit: int | None = None) -> Sequence[reading.Row]:
        """The due scopes not leased by another worker, oldest mark first (at most *limit*): :meth:`start_due`'s
        reading, which resolves only the scopes it starts."""
        return scopestate.due_scopes(self.engine, worker=self.worker_id, now=self.clock(), limit=limit)

    def due_scopes(self) -> list[Scope]:
        """The Scopes of :meth:`due_rows` (those the spec still declares)."""
        return [scope for row in self.due_rows() if (scope := self.index.resolve(*row)) is not None]

    def start_due(self) -> list[str]:
        """Start passes of the due scopes not already running in this process, one per free pass thread, oldest
        mark first (:mod:`syncer.worker.reading`); a pass that ends reads again while more were due.

        Calls made while one runs (the drain's, ending passes' from their threads) are folded into it: it
        reads the due scopes once more before it returns, so what they were called for is started, by one
        reading at a time (two readings racing would start a scope the other had just seen end).
        """
        started: list[str] = []
        with self._lock:
            if self._starting:
                self._start_again = True
                return started
            self._starting = True
        try:
            widen = 1
            while not self._stopping.is_set():
                with self._lock:
                    self._start_again = False
                    # Passes running when the query starts are not started from its answer (syncer.worker.reading).
                    before = {key for key, future in self._running.items() if not future.done()}
                    free = max(self.max_passes - len(before - self._ending), 0)
                    queued = any(not self._running[key].running() for key in before)  # waiting for a thread
                    skip = before | self._fetching
                limit = reading.rows_to_read(free, len(before)) * widen
                due, picked = reading.read(  # all threads busy: the next pass to end reads (unless some wait)
                    self.engine, worker=self.worker_id, now=self.clock(), limit=limit, free=free, skip=skip,
                    allows=self.accounts.allows if self.accounts is not None else None, resolve=self.index.resolve,
                    select=self.due_rows,
                ) if free or queued else ((), None)
                with self._lock:
                    if picked is not None:
                        self.withdrawn += sum(self._running[key].cancel()
                                              for key in reading.not_due(list(self._running), due, picked))
                        self._running = {key: future for key, future in self._running.items() if not future.done()}
                        for scope in picked.start:
                            if (key := (scope.tenant_id, scope.key)) not in self._fetching:  # a fetch began meanwhile
                                self._running[key] = self.pool.submit(self._pass, scope)
                                started.append(scope.key)
                        self._backlog = not picked.complete
                        widen = widen * reading.WIDEN if picked.short else 1
                    if widen == 1 and not self._start_again:
                        self._starting = False
                        return started
        except BaseException:
            with self._lock:
                self._starting = False
            raise
        with self._lock:
            self._starting = False  # stopping
        return started

    def _pass(self, scope: Scope) -> sync.PassResult:
        try:
            result = sync.sync_scope(
                self.engine, self.sources[scope.tenant_id], scope, worker=self.worker_id, clock=self.clock,
                page_size=self.page_size, stop=self._stopping, due_only=True,
            )
        except Exception as error:  # the database failed: the pass could not record its outcome
            if database_unreachable(error):
                self.database.failed(error, f"pass {scope.key} did not finish; the scope stays dirty")
            else:
                log.exception("pass %s could not start", scope.key)
            result = sync.PassResult(scope.key, "error", error=str(error))
            with self._lock:
                self.results.append(result)
            return result
        log.info("pass %s: %s (%d items, %d pages)", scope.key, result.outcome, result.items, result.pages)
        if result.outcome == "error" and self.accounts is not None:
            self.accounts.observe()  # a refused sign-in pauses its account's other scopes
        self.metrics.inc("syncer_rows_written_total", result.upserted + result.deleted, source="delta")
        with self._lock:
            self.results.append(result)
        if result.outcome == "outdated":
            self.spec_watch.report(result.error or "the spec changed")
        # New folders, or scopes past the last reading's limit: started now from this thread (counted free), not later.
        if (self._backlog or (result.outcome == "ok" and scope.container)) and not self._stopping.is_set():
            with self._lock:
                self._ending.add(key := (scope.tenant_id, scope.key))
            try:
                self.start_due()
            except Exception as error:  # this pass's result stands; the next drain reads again
                if not database_unreachable(error):
                    raise
                self.database.failed(error, "the due scopes are read again at the next drain")
            finally:
                with self._lock:
                    self._ending.discard(key)
        return result

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the passes started so far (tests, `syncer sync`)."""
        while True:
            with self._lock:
                pending = [f for f in self._running.values() if not f.done()]
            if not pending:
                return
            for future in pending:
                with contextlib.suppress(CancelledError):  # withdrawn meanwhile (start_due)
                    future.result(timeout=timeout)

    # --- job: safety net ---

    def refresh_scopes(self) -> int:
        """Expand the declarations again (fan-out over a group or filter changes); register new scopes."""
        if self.spec is None:
            return 0
        by_name = {t.name: self.sources[t.tenant_id] for t in self.spec.tenants if t.tenant_id in self.sources}
        # Delegated accounts' me/... is their user's id, as build_worker expanded it (syncer.worker.accounts).
        resolved = self.accounts.resolve(self.spec) if self.accounts is not None else signed_in(self.spec, self.sources)
        fresh = ScopeIndex.of(scopes.declared_scopes(resolved, clients=by_name))
        added = [sc for key, sc in fresh.static.items() if key not in self.index.static]
        self.index = fresh
        if added:
            with self.engine.begin() as connection:
                scopestate.ensure_scope_rows(connection, added, dirty=True, now=self.clock())
        self._refreshed = self.clock()
        self.retire_scopes()
        return len(added)

    def retire_scopes(self) -> int:
        """Forget the scopes a declaration no longer expands to; how many.

        A user who left a ``for_each`` group (or no longer matches its filter, or was taken off its
        list) is no longer followed: reconcile deletes the user's subscriptions, and here the scopes
        go with their rows (soft-deleted with reason ``retired``, or deleted under ``delete: hard``),
        so the mirror holds what the spec follows. Only declarations still in the spec are looked at
        (the rows of a removed declaration stay where they are), and only after an expansion that
        succeeded: a Graph error while listing a group keeps every scope. A scope that a pass is
        writing is left for the next refresh. If the user comes back, the scope is new: a full pass.
        The worker's index must be the expansion of its whole spec (as :func:`syncer.worker.scheduler.build_worker`
        and :meth:`refresh_scopes` make it): a scope missing from it is taken as no longer declared.
        """
        if self.spec is None:
            return 0
        declarations = {(self.spec.tenant(d.tenant).tenant_id, d.name): d for d in self.spec.subscriptions}
        followed = {(sc.tenant_id, sc.name, sc.parent_key) for sc in self.index.static.values()}
        rows = scopestate.scopes_named(self.engine, sorted({name for _, name in declarations}))
        with self._lock:
            busy = {key for key, future in self._running.items() if not future.done()} | self._fetching
        retired = 0
        unresolved = self.accounts.unresolved if self.accounts is not None else frozenset()
        for tenant_id, key, name, parent_key in rows:
            if tenant_id in unresolved:
                continue  # an account signed out since start: its scopes are unknown, not undeclared
            declaration = declarations.get((tenant_id, name))
            # (A row without parent_key predates migration 0002: where it belongs is unknown, keep it.)
            if declaration is None or parent_key is None or (tenant_id, name, parent_key) in followed:
                continue
            if (tenant_id, key) in busy:
                continue
            with self.engine.begin() as connection:
                dropped = scopestate.drop_scope(
                    connection, tenant_id, key, mirror_spec=declaration.mirror,
                    delete=declaration.mirror.delete, reason=scopestate.RETIRED, now=self.clock(), worker=self.worker_id,
                )
            if dropped is not None:
                retired += 1
                log.info("scope %s is no longer declared (%s): retired, %d mirror rows removed", key, name, dropped)
        return retired

    def safety_net(self) -> int:
        """Mark dirty the scopes whose last success is older than their interval; how many.

        Each tick reads, per declaration, at most :attr:`safety_batch` of its oldest scopes by an index range
        (:func:`scopestate.oldest_scopes`), never every scope: a tick costs the same at 3,000 scopes and at
        30,000. A backlog (after an outage, every scope past its interval) is marked a batch per tick, oldest first.
        Calendar windows older than :attr:`reanchor_every` get a full round, carriers a relist (:attr:`relist_every`).
        Also re-expands the declarations every :attr:`refresh_every` (a fan-out group gained a member).
        """
        now = self.clock()
        if self._refreshed is None or now - self._refreshed >= self.refresh_every:
            try:
                self.refresh_scopes()
            except Exception:
                log.exception("expanding the declarations failed; keeping the scopes known so far")
                self._refreshed = now
        stale: list[tuple[str, str]] = []
        resync: list[tuple[str, str]] = []
        relist: list[Scope] = []
        s = schema.sync_state
        # Each query reads at most safety_batch rows by an index range; what it returns is marked, so it is not read
        # again. A row the worker's index lacks (a signed-out account's scope, a member the hourly refresh will
        # retire) is marked too: it waits dirty, as it would after a notification, and never holds back the others.
        for name, interval, strategy in self._declared():
            for before in (None, now - interval):  # never succeeded (a manual pass that failed), then the oldest
                stale += self._oldest(name, "last_success_at", before, [s.c.dirty_since.is_(None)])
            if strategy.window:
                # A calendarView deltaLink keeps the window of the round that created it; moving the window with
                # time takes a full round from a fresh initial URL (which also sweeps the events that fell out).
                resync += self._oldest(name, "listed_at", now - self.reanchor_every, [s.c.resync_requested.is_(False)])
            if strategy.inline:
                found = self._oldest(name, "listed_at", now - self.relist_every,
                                     [s.c.page_link.is_(None), s.c.delta_link.is_not(None)], resolved=True)
                relist += [sc for sc in found if sc is not None]
        if not (stale or resync or relist):
            return 0  # a quiet tick takes no write lock (on SQLite, one would wait behind every pass's commit)
        # Writes only in this transaction (a read first would make SQLite upgrade a read lock, which
        # fails at once instead of waiting when another writer got in between).
        with self.engine.begin() as connection:
            marked = scopestate.mark_stale(connection, stale, now=now)
            scopestate.request_resync(connection, resync, now=now)
            for sc in relist:
                scopestate.relist(connection, sc.tenant_id, sc.key, sc.initial_url, now=now)
        return marked + len(resync) + len(relist)

    def _declared(self) -> list[tuple[str, timedelta, Strategy]]:
        """``(name, sync interval, strategy)`` of each declaration the index holds (computed once per index)."""
        if self._declared_of is None or self._declared_of[0] is not self.index:
            found: dict[str, tuple[str, timedelta, Strategy]] = {}
            for sc in self.index.static.values():
                found.setdefault(sc.name, (sc.name, sc.interval, sc.strategy))
            self._declared_of = (self.index, sorted(found.values(), key=lambda d: d[0]))
        return self._declared_of[1]

    def _oldest(self, name: str, column: str, before: datetime | None, where: list[sa.ColumnElement[bool]],
                *, resolved: bool = False) -> list[Any]:
        """``(tenant_id, scope_key)`` of the :attr:`safety_batch` scopes of *name* oldest by *column* (null when
        *before* is None); with *resolved*, their :class:`Scope` (None for one the index does not resolve)."""
        rows = scopestate.oldest_scopes(self.engine, name, column, before=before, limit=self.safety_batch, where=where)
        if resolved:
            return [self.index.resolve(tenant_id, key, parent_key) for tenant_id, key, parent_key, _ in rows]
        return [(tenant_id, key) for tenant_id, key, _, _ in rows]

    # --- job: housekeeping ---

    def housekeeping(self) -> tuple[int, int]:
        """Delete processed notifications and pass records older than their retention; how many of each.

        Without it both tables only grow: a busy tenant stores millions of notifications a day.
        """
        now, keep = self.clock(), self.retention
        notifications = runs = 0
        if keep.notifications is not None:
            notifications = self.inbox.purge(processed_before=now - keep.notifications)
        if keep.runs is not None:
            runs = scopestate.purge_runs(self.engine, started_before=now - keep.runs)
        if self.spec is not None:  # each declaration's history: {keep:} (never a current version)
            versions = history.purge(self.engine, self.spec, now=now)
            if versions:
                log.info("housekeeping: deleted %d history versions past their keep", versions)
            # Items gone from Graph while their mirror table was rebuilt: their versions end where a sweep's would.
            history.close_orphans(self.engine, self.spec, now=now, settled=self._history_settled)
        if notifications or runs:
            log.info("housekeeping: deleted %d processed notifications and %d pass records", notifications, runs)
        return notifications, runs

    # --- job: reconcile ---

    def reconcile(self) -> None:
        """Run reconcile (renewals, repairs, fan-out changes), then sync the scopes it added at once."""
        if self.spec is None:  # a worker built without a spec (tests) has nothing to reconcile
            return
        spec = self.accounts.active(self.spec) if self.accounts is not None else self.spec
        if reconcile.run(spec, engine=self.engine, graphs=self._graphs()) is not None:
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
        self.readers.shutdown(wait=True, cancel_futures=True)

    def on_release(self, finalize: Callable[[], None]) -> None:
        """Call *finalize* in :meth:`release` (last added, first called)."""
        self._finalizers.append(finalize)

    def release(self) -> None:
        """Give back what :func:`syncer.worker.scheduler.run_worker` took for this worker (the SQLite worker lock)."""
        finalizers, self._finalizers = self._finalizers, []
        for finalize in reversed(finalizers):
            finalize()

