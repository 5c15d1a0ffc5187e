"""One sync pass for one scope: Graph pages in, mirror rows and the cursor out, crash-safe.

"Push as trigger, pull as truth": a notification only marks a scope dirty; this module pulls the
truth with a delta query (or a list and GETs where Graph has no delta) and writes it.

A pass, and why each step is where it is:

1. **Lease** (one transaction): take the scope's lease (:mod:`syncer.worker.scopestate`: one writer per
   scope across all workers), record the pass in ``syncer_sync_runs``, and decide where the round
   starts: the nextLink of an interrupted round (resume), the stored deltaLink (incremental), or the
   initial URL (a *full* round: first pass, ``--full``, a requested resync).
2. **Pages**: a prefetch thread (:mod:`syncer.worker.prefetch`) fetches page N+1 while page N is written.
   Pages are applied in a transaction together with the round's progress: the last page's nextLink
   (where to resume), or at the end of the round the new deltaLink. So rows and cursor always move
   together; a crash anywhere loses at most the uncommitted pages, which the next pass fetches again
   (upserts are idempotent, and a removal keeps its first ``_deleted_at``). A transaction gathers
   pages only while the next one is already fetched, for at most ``commit_every`` seconds: it never
   waits on the network (on SQLite an open write transaction would block the receiver). The same
   transaction renews the lease, and fails if the lease was lost.
3. **Full rounds mark and sweep**: rows written in a full round carry the round's id in
   ``_sync_run_id``; the last page's transaction deletes (or soft-deletes) the scope's rows the round
   did not see, atomically with the new deltaLink. A 410 (token expired, sync state reset) turns the
   pass into a full round, and so does a stored link that cannot be used (**lost sync state**): one
   that is empty or not a string, one Graph refuses on its first page with 400 or 404 (a bad token),
   or one on another origin (refused before anything is sent). A 404 that the full round's first
   page gets too means the resource itself is gone: the stored link is put back and the pass fails
   as it did before (a vanished mailbox or drive backs off; it is not a reason to forget its cursor).
   The reason is logged (never the link: its token reads the scope's changes) and kept on the run.
4. **Finish**: record the outcome. Throttling postpones the scope (``not_before``), it does not fail
   it, and it never holds a lock or a thread that other scopes need.

Resources without delta are listed by the same pass (a full round every time, swept) and, between
lists, fetched by id when a notification names them (:func:`fetch_items`), under the same lease.

Writing the rows themselves (fast, per database) is :mod:`syncer.worker.writer`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncer import schema
from syncer.errors import (
    ForeignOriginError,
    GraphError,
    LeaseLost,
    NotFoundError,
    ResyncRequired,
    RetryBudgetExhausted,
    ServerError,
    SyncerError,
    ThrottledError,
)
from syncer.graph.delta import link_problem
from syncer.log import database_unreachable
from syncer.worker.prefetch import Prefetcher
from syncer.worker.scopes import FETCH, Scope, child_scope, folder_of
from syncer.worker.scopestate import LEASE_TTL, Clock, ScopeStore, drop_scope, ensure_scope_rows, utcnow
from syncer.worker.writer import SWEPT, PageOutcome, RowWriter, apply_items, removal_of

__all__ = [
    "SWEPT",
    "LeaseLost",
    "PassResult",
    "Progress",
    "RowWriter",
    "apply_items",
    "children_of",
    "fetch_items",
    "removal_of",
    "sync_scope",
]

log = logging.getLogger("syncer.worker.sync")

THROTTLE_DEFAULT = timedelta(seconds=60)
"""Postponement after a 429 that named no Retry-After."""
ERROR_BACKOFF_MAX = timedelta(minutes=30)
COMMIT_EVERY = 1.0
"""Seconds of pages one transaction may gather while the next page is already fetched (fewer commits
and SQLite checkpoints); a page that is not there yet commits what was written at once."""
DEFAULT_PAGE_SIZE = 999
"""``Prefer: odata.maxpagesize`` the worker and ``syncer sync`` send: Graph's default pages are small
(10 messages, 100 users) and every page is a round trip; Graph caps what a resource does not allow."""
MAX_RESTARTS = 2
"""410s handled in one pass before it gives up (each restarts the round)."""
LOST_LINK_STATUSES = frozenset({400, 404})
"""Statuses that, on the first page of a stored deltaLink or nextLink, mean its token is bad: a lost sync
state, resynced. Graph documents 410 for a token it no longer knows
(https://learn.microsoft.com/en-us/graph/delta-query-overview); a token it cannot read is refused with
400 (or 404 on some resources), which is not documented: hence a setting."""


class PageSource(Protocol):
    """What a pass needs from the Graph client (GraphClient satisfies it)."""

    def iter_pages(self, url_or_path: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Any]: ...

    def get_json(self, url_or_path: str) -> Any: ...


@dataclass
class Progress:
    """Counters of a pass, handed to the progress callback after every committed page."""

    scope: str
    pages: int = 0
    items: int = 0
    upserted: int = 0
    deleted: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        """Items per second so far."""
        elapsed = time.monotonic() - self.started
        return self.items / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class PassResult:
    """What one pass did."""

    scope: str
    outcome: str  # ok | throttled | error | busy (leased elsewhere) | postponed (not_before) | lost (lease taken over)
    # | stopped (the worker is shutting down; resumes from the committed page)
    run_id: int | None = None
    full: bool = False
    pages: int = 0
    items: int = 0
    upserted: int = 0
    deleted: int = 0
    error: str | None = None
    not_before: datetime | None = None
    resync: str | None = None
    """Why the pass had to enumerate the scope again (a 410, a lost stored link); None otherwise."""


Fault = Callable[[str], None]
"""Test hook: called at each named step of a pass; raising there simulates a crash at that instant."""


def _no_fault(_step: str) -> None:
    return None


# --- the pass -------------------------------------------------------------------------------------


class _Batch:
    """Consecutive pages written in one transaction, with the round's cursor and a lease renewal.

    The cursor (nextLink of the last page) and the run's counters are written once, just before the
    commit, rather than after every page: the same transaction either way, a round trip less per page.
    """

    def __init__(self, connection: Connection, store: ScopeStore, run_id: int) -> None:
        # The pass's connection, kept between batches (no pool checkout and ping per batch); a batch
        # that fails closes it, so the next one starts on a fresh connection.
        self.connection = connection
        self._transaction = self.connection.begin()
        self.store = store
        self.run_id = run_id
        self.started = time.monotonic()
        self.pages = self.items = self.upserted = self.deleted = 0
        self.page_link: str | None = None
        """Where the round resumes after this batch (None: the last page already stored the deltaLink)."""
        try:
            if store.postgres:
                # A commit need not wait for its WAL flush: rows and cursor are in one transaction, so
                # a server crash loses both together and the next pass fetches them again; the pass's
                # final (synchronous) commit flushes everything before it.
                self.connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
            store.renew_lease(self.connection)
        except BaseException:
            self.rollback()
            raise

    @property
    def age(self) -> float:
        """Seconds since the transaction began."""
        return time.monotonic() - self.started

    def add(self, *, pages: int = 0, items: int = 0, upserted: int = 0, deleted: int = 0) -> None:
        self.pages += pages
        self.items += items
        self.upserted += upserted
        self.deleted += deleted

    def commit(self, counters: Progress) -> None:
        """Write the cursor and the run's counters, commit, then count what is now durable."""
        try:
            if self.page_link is not None:
                self.store.update_state(self.connection, page_link=self.page_link)
            self.store.update_run(
                self.connection, self.run_id, pages=counters.pages + self.pages,
                upserted=counters.upserted + self.upserted, deleted=counters.deleted + self.deleted,
            )
            self._transaction.commit()
        except BaseException:
            self.connection.close()
            raise
        counters.pages += self.pages
        counters.items += self.items
        counters.upserted += self.upserted
        counters.deleted += self.deleted

    def rollback(self) -> None:
        if self.connection.closed:
            return
        try:
            self._transaction.rollback()
        finally:
            self.connection.close()


@dataclass
class _Round:
    url: str
    round_id: int
    full: bool
    resumed: bool
    from_delta: str | None  # the deltaLink this incremental round started from
    started: datetime | None = None
    stored: bool = False  # url is a link read from syncer_sync_state (a deltaLink or a page_link)
    resync: str | None = None  # why this full round replaces lost sync state
    replaced: str | None = None  # the stored deltaLink a 404 made this full round replace (put back if 404 again)

    def become(self, other: _Round) -> None:
        """Switch to *other* in place (the pass's caller keeps a reference for its result)."""
        self.__dict__.update(other.__dict__)


def _throttle_of(error: BaseException) -> GraphError | None:
    if isinstance(error, ThrottledError):
        return error
    if isinstance(error, RetryBudgetExhausted) and isinstance(error.last_error, ThrottledError | ServerError):
        return error.last_error
    if isinstance(error, ServerError) and error.status == 503 and error.retry_after is not None:
        return error
    return None


def _throttle_wait(throttle: GraphError) -> timedelta:
    return timedelta(seconds=throttle.retry_after) if throttle.retry_after else THROTTLE_DEFAULT


def sync_scope(
    engine: Engine,
    source: PageSource,
    scope: Scope,
    *,
    worker: str,
    full: bool = False,
    progress: Callable[[Progress], None] | None = None,
    clock: Clock = utcnow,
    lease_ttl: timedelta = LEASE_TTL,
    prefetch: int = 2,
    page_size: int | None = None,
    commit_every: float = COMMIT_EVERY,
    fault: Fault | None = None,
    stop: threading.Event | None = None,
) -> PassResult:
    """Run one pass of *scope*: from its cursor to a new deltaLink (or as far as Graph lets us).

    When *stop* is set (the worker is shutting down) the pass ends after its next commit with
    outcome ``stopped``: the rows and the resume point committed so far stay, the lease is released
    and the next pass carries on from there.

    Never raises for Graph or database trouble during the pass: the outcome says what happened and
    ``syncer_sync_runs``/``syncer_sync_state`` record it. Returns ``busy`` at once when another
    worker holds the scope's lease. *page_size* asks Graph for pages of that size
    (``Prefer: odata.maxpagesize``; Graph may ignore it).
    """
    step = fault or _no_fault
    store = ScopeStore(engine, scope, worker=worker, clock=clock, lease_ttl=lease_ttl)
    started = clock()
    with engine.begin() as connection:
        store.ensure(connection)
        if not store.take_lease(connection):
            return PassResult(scope.key, "busy")
        state = store.state(connection)
        if state.not_before is not None and state.not_before > started and not full:
            store.update_state(connection, leased_by=None, lease_until=None)
            return PassResult(scope.key, "postponed", not_before=state.not_before)
        run_id = store.start_run(connection, full=False)
        rnd = _start_round(store, connection, state, run_id, force_full=full)
        store.update_run(connection, run_id, full=rnd.full, error=_note(rnd.resync))
    step("leased")
    counters = Progress(scope.key)
    try:
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else None
        outcome = _run_pages(
            engine, source, store, rnd, run_id, counters, progress=progress, prefetch=prefetch, step=step,
            headers=headers, commit_every=commit_every, stop=stop,
        )
    except LeaseLost as error:
        _finish(store, run_id, "lost", counters, error=str(error), started=started, release=False)
        return _result(scope, run_id, rnd, counters, "lost", error=str(error))
    except Exception as error:
        throttle = _throttle_of(error)
        if throttle is not None:
            until = clock() + _throttle_wait(throttle)
            _finish(store, run_id, "throttled", counters, error=str(error), started=started, not_before=until)
            log.info("scope %s throttled, postponed until %s", scope.key, until.isoformat())
            return _result(scope, run_id, rnd, counters, "throttled", error=str(error), not_before=until)
        if database_unreachable(error):
            # Nothing can be recorded now; the caller's outage log reports it once per outage
            # (syncer.log.OutageLog), not once per pass with the failed SQL statement.
            raise
        log.warning("scope %s: pass failed: %s", scope.key, error, exc_info=not isinstance(error, SyncerError))
        retry_at = _finish(store, run_id, "error", counters, error=_describe(error), started=started)
        return _result(scope, run_id, rnd, counters, "error", error=_describe(error), not_before=retry_at)
    step("pages-done")
    _finish(store, run_id, outcome, counters, started=started, error=_note(rnd.resync))
    step("finished")
    return _result(scope, run_id, rnd, counters, outcome)


def _note(resync: str | None) -> str | None:
    """What a pass that resynced records in its run's ``error`` column (shown by ``syncer status``)."""
    return f"resync: {resync}" if resync else None


def _describe(error: BaseException) -> str:
    if isinstance(error, SyncerError):
        return str(error)
    if isinstance(error, sa.exc.SQLAlchemyError):
        return f"database error: {type(error).__name__}: {str(getattr(error, 'orig', error))[:300]}"
    return f"{type(error).__name__}: {str(error)[:300]}"


def _result(scope: Scope, run_id: int, rnd: _Round, c: Progress, outcome: str, **kw: Any) -> PassResult:
    if rnd.resync and "resync" not in kw:
        kw["resync"] = rnd.resync
    return PassResult(
        scope.key, outcome, run_id=run_id, full=rnd.full, pages=c.pages, items=c.items, upserted=c.upserted,
        deleted=c.deleted, **kw,
    )


def _start_round(store: ScopeStore, connection: Connection, state: Any, run_id: int, *, force_full: bool) -> _Round:
    scope = store.scope
    lost: list[str] = []
    delta_link = _stored_link(state.delta_link, "deltaLink", lost)
    page_link = _stored_link(state.page_link, "nextLink of the round in progress", lost)
    if force_full or state.resync_requested:
        return _new_full_round(store, connection, run_id, scope.initial_url)
    if page_link is not None and state.round_id is not None and (state.round_full or delta_link is not None):
        if lost:
            log.warning("scope %s: %s; resuming the round", scope.key, "; ".join(lost))
        started = store.run_started_at(connection, int(state.round_id)) if state.round_full else None
        return _Round(page_link, int(state.round_id), bool(state.round_full), True, delta_link, started, stored=True)
    if delta_link is None or (state.round_full and state.page_link is not None):
        # Nothing to start from, or a full round whose resume point is lost: enumerate (and sweep).
        resync = "; ".join(lost) or None
        if resync:
            log.warning("scope %s: lost sync state (%s); enumerating it again", scope.key, resync)
        return _new_full_round(store, connection, run_id, scope.initial_url, resync=resync)
    if lost:
        log.warning("scope %s: %s; starting the round again from its deltaLink", scope.key, "; ".join(lost))
    store.update_state(connection, round_id=run_id, round_full=False, page_link=None)
    return _Round(delta_link, run_id, False, False, delta_link, stored=True)


def _stored_link(link: object, what: str, lost: list[str]) -> str | None:
    """*link* if it can be called; else None, with the reason appended to *lost* (never the link itself)."""
    if link is None:
        return None
    problem = link_problem(link)
    if problem is None:
        return str(link)
    lost.append(f"the stored {what} is {problem}")
    return None


def _new_full_round(
    store: ScopeStore, connection: Connection, run_id: int, url: str, *, resync: str | None = None,
    replaced: str | None = None,
) -> _Round:
    # Forgetting the deltaLink here, in the same transaction as the round's start, is what makes a
    # crash mid-round resume as a full round (and end with its sweep) rather than as an incremental one.
    store.update_state(
        connection, delta_link=None, page_link=None, round_id=run_id, round_full=True, resync_requested=False
    )
    return _Round(url, run_id, True, False, None, store.clock(), resync=resync, replaced=replaced)


class _LostLink(Exception):
    """The stored link a round started from cannot be used (a bad token, another origin): lost sync state."""

    def __init__(self, reason: str, cause: GraphError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


def _lost_link(rnd: _Round, error: BaseException) -> _LostLink | None:
    """The lost sync state that *error*, raised by the first page of *rnd*, reveals; None if it reveals none.

    Only a link read from the database is suspect: Graph answering 400 or 404 (LOST_LINK_STATUSES) to
    the first page of a stored deltaLink or nextLink means the token is bad (the same request with
    a good token is one Graph built itself), and a stored link on another origin was never Graph's.
    Anything else (throttling, an outage, a 404 on our own initial URL) is handled as before.
    """
    if not rnd.stored:
        return None
    what = "deltaLink" if not rnd.resumed else "nextLink of the round in progress"
    if isinstance(error, ForeignOriginError) and error.handed is None:
        return _LostLink(f"the stored {what} points outside the Graph origin ({error.graph_message})", error)
    if isinstance(error, GraphError) and not isinstance(error, ForeignOriginError) and error.status in LOST_LINK_STATUSES:
        code = f" {error.code}" if error.code else ""
        return _LostLink(f"Graph refused the stored {what} with HTTP {error.status}{code}", error)
    return None


def _run_pages(
    engine: Engine,
    source: PageSource,
    store: ScopeStore,
    rnd: _Round,
    run_id: int,
    counters: Progress,
    *,
    progress: Callable[[Progress], None] | None,
    prefetch: int,
    step: Fault,
    headers: Mapping[str, str] | None,
    commit_every: float,
    stop: threading.Event | None = None,
) -> str:
    scope = store.scope
    writer = None if scope.container else RowWriter(engine, scope)
    restarts = 0
    seen_children: set[str] | None = set() if scope.container and rnd.full and not rnd.resumed else None
    while True:
        pages = Prefetcher(partial(source.iter_pages, rnd.url, headers=headers), depth=prefetch) if prefetch > 0 else None
        iterator = iter(pages) if pages is not None else source.iter_pages(rnd.url, headers=headers)
        batch: _Batch | None = None
        held: Connection | None = None
        fetched = 0
        try:
            try:
                while True:
                    try:
                        page = next(iterator)
                    except StopIteration:
                        break
                    except Exception as error:
                        # Graph failed (throttled, 410, ...): the pages written so far agree with their
                        # cursor, so they are kept rather than fetched again.
                        if batch is not None:
                            pending, batch = batch, None
                            pending.commit(counters)
                        if fetched == 0:
                            lost = _lost_link(rnd, error)
                            if lost is not None:
                                raise lost from error
                            if rnd.replaced is not None and isinstance(error, NotFoundError):
                                _put_back(engine, store, rnd)
                        raise
                    fetched += 1
                    step("page-fetched")
                    now = store.clock()
                    last = page.next_link is None
                    if batch is None:
                        if held is None or held.closed:
                            held = engine.connect()
                        batch = _Batch(held, store, run_id)
                    connection = batch.connection
                    if writer is not None:
                        done = apply_items(connection, writer, page.items, now=now, run_id=rnd.round_id)
                    else:
                        done = _apply_containers(connection, store, page.items, seen_children, now=now)
                    batch.add(pages=1, items=len(page.items), upserted=done.upserted, deleted=done.deleted)
                    step("page-applied")
                    if not last:
                        batch.page_link = page.next_link
                    else:
                        if rnd.full:
                            if writer is not None:
                                swept = writer.sweep(connection, round_id=rnd.round_id, now=now, round_started=rnd.started)
                            else:
                                swept = _sweep_children(connection, store, seen_children) if seen_children is not None else 0
                            batch.add(deleted=swept)
                            step("swept")
                        if page.delta_link is None and scope.strategy.method not in (FETCH,):
                            raise GraphError(f"delta round of {scope.key} ended without an @odata.deltaLink")
                        store.update_state(
                            connection, delta_link=page.delta_link, page_link=None, round_id=None, round_full=False
                        )
                        batch.page_link = None
                    step("page-written")
                    # Commit at the end, after commit_every seconds, or when the next page is not here yet:
                    # an open transaction never waits on the network (on SQLite it would block the receiver).
                    if last or batch.age >= commit_every or pages is None or not pages.ready():
                        batch.commit(counters)
                        batch = None
                        step("page-committed")
                        if progress is not None:
                            progress(counters)
                        if not last and stop is not None and stop.is_set():
                            # Everything so far is committed with its resume point (page_link).
                            return "stopped"
                return "ok"
            except BaseException:
                if batch is not None:
                    batch.rollback()
                    batch = None
                if held is not None:
                    held.close()  # before a restart opens its own
                raise
        except (ResyncRequired, _LostLink) as error:
            restarts += 1
            if restarts > MAX_RESTARTS:
                if isinstance(error, _LostLink):
                    raise error.cause from error
                raise
            with engine.begin() as connection:
                store.renew_lease(connection)
                if rnd.resumed and not rnd.full and rnd.from_delta:
                    # An expired (or refused) nextLink of an incremental round: start that round again
                    # from its deltaLink.
                    if isinstance(error, _LostLink):
                        log.warning("scope %s: %s; starting the round again from its deltaLink", scope.key, error.reason)
                    store.update_state(connection, page_link=None, round_id=run_id, round_full=False)
                    rnd.become(_Round(rnd.from_delta, run_id, False, False, rnd.from_delta, stored=True))
                else:
                    if isinstance(error, _LostLink):
                        resync = error.reason
                        log.warning("scope %s: lost sync state (%s); enumerating it again", scope.key, resync)
                    else:
                        code = f" {error.code}" if error.code else ""
                        resync = f"Graph answered HTTP {error.status}{code}"
                        log.info("scope %s: %s; enumerating it again", scope.key, error)
                    # A 404 may mean the resource is gone rather than the token bad: the link is
                    # put back if the full round's first page is refused with 404 too.
                    replaced = (
                        rnd.url if isinstance(error, _LostLink) and isinstance(error.cause, NotFoundError)
                        and not rnd.resumed else None
                    )
                    # Our own initial URL rather than Graph's Location: it carries the declared $select
                    # (a Location rebuilt from a deltaLink with an empty token may not), and either
                    # way the round enumerates everything.
                    rnd.become(
                        _new_full_round(store, connection, run_id, scope.initial_url, resync=resync, replaced=replaced)
                    )
                    store.update_run(connection, run_id, full=True, error=_note(resync))
                    if scope.container:
                        seen_children = set()
                step("restarted")
        finally:
            if held is not None:
                held.close()
            if pages is not None:
                pages.close()


def _put_back(engine: Engine, store: ScopeStore, rnd: _Round) -> None:
    """Restore the deltaLink a full round replaced: the resource is gone (404 on our initial URL too),
    which says nothing against the token; the pass fails as it did before, and a later pass (once the
    resource is back) carries on from the link, or resyncs if Graph refuses it again."""
    with engine.begin() as connection:
        store.renew_lease(connection)
        store.update_state(connection, delta_link=rnd.replaced, page_link=None, round_id=None, round_full=False)
    rnd.resync = None
    log.info("scope %s: its resource is gone (404); its stored deltaLink is kept", store.scope.key)


def _finish(
    store: ScopeStore,
    run_id: int,
    outcome: str,
    counters: Progress,
    *,
    started: datetime,
    error: str | None = None,
    not_before: datetime | None = None,
    release: bool = True,
) -> datetime | None:
    now = store.clock()
    with store.engine.begin() as connection:
        store.update_run(
            connection, run_id, outcome=outcome, finished_at=now, error=error, pages=counters.pages,
            upserted=counters.upserted, deleted=counters.deleted,
        )
        if not release:
            return None
        if outcome == "ok":
            store.release_succeeded(connection, now=now, started=started)
            return not_before
        values: dict[str, Any] = {}
        if outcome == "throttled":
            values.update(last_error=error, not_before=not_before)
        elif outcome == "stopped":
            pass  # not a failure: the scope stays due and resumes from its page_link
        else:
            failures = int(store.state(connection).failures or 0) + 1
            backoff = min(timedelta(seconds=30 * 2 ** min(failures - 1, 10)), ERROR_BACKOFF_MAX)
            not_before = now + backoff
            values.update(last_error=error, failures=failures, not_before=not_before)
        store.release_lease(connection, **values)
    return not_before


# --- containers (mail folders) -----------------------------------------------------------------------


def _apply_containers(
    connection: Connection, store: ScopeStore, items: Sequence[Mapping[str, Any]], seen: set[str] | None, *, now: datetime
) -> PageOutcome:
    container = store.scope
    added: list[Scope] = []
    removed: list[Scope] = []
    for item in items:
        folder = item.get("id")
        if folder is None:
            continue
        child = child_scope(container, str(folder))
        if removal_of(item, deleted_facet=False) is not None:
            removed.append(child)
            if seen is not None:
                seen.discard(child.key)
        else:
            added.append(child)
            if seen is not None:
                seen.add(child.key)
    # New folders are dirty at once: their first pass enumerates them.
    ensure_scope_rows(connection, added, dirty=True, now=now)
    deleted = sum(_drop_child(connection, store, child, now=now) for child in removed)
    return PageOutcome(upserted=len(added), deleted=deleted)


def _drop_child(connection: Connection, store: ScopeStore, child: Scope, *, now: datetime) -> int:
    dropped = drop_scope(
        connection, child.tenant_id, child.key, mirror_spec=child.mirror, delete=child.delete, reason="deleted", now=now,
    )
    return dropped or 0


def _sweep_children(connection: Connection, store: ScopeStore, seen: set[str]) -> int:
    s = schema.sync_state
    container = store.scope
    rows = connection.execute(
        sa.select(s.c.scope_key).where(s.c.tenant_id == container.tenant_id, s.c.parent_key == container.parent_key)
    ).scalars()
    gone = [
        key for key in rows if key != container.key and folder_of(key, container) is not None and key not in seen
    ]
    now = store.clock()
    total = 0
    for key in gone:
        folder = folder_of(key, container)
        assert folder is not None
        total += _drop_child(connection, store, child_scope(container, folder), now=now)
    return total


def children_of(engine: Engine, container: Scope) -> list[Scope]:
    """The folder scopes a container scope has found so far."""
    s = schema.sync_state
    with engine.connect() as connection:
        keys = connection.execute(
            sa.select(s.c.scope_key).where(s.c.tenant_id == container.tenant_id, s.c.parent_key == container.parent_key)
        ).scalars().all()
    found = []
    for key in keys:
        folder = folder_of(key, container)
        if folder is not None and key != container.key:
            found.append(child_scope(container, folder))
    return found


# --- fetch by id (resources without delta) --------------------------------------------------------


def fetch_items(
    engine: Engine,
    source: PageSource,
    scope: Scope,
    resources: Sequence[str],
    *,
    worker: str,
    clock: Clock = utcnow,
    lease_ttl: timedelta = LEASE_TTL,
) -> PassResult:
    """GET each notified *resource* of a no-delta scope and write what Graph returns (404 = removed).

    Under the scope's lease, like a pass: two workers never write one scope at once, and a list
    pass (a full round) never sweeps what a fetch wrote while it ran. Returns ``busy`` at once, with
    nothing fetched or written, when another worker holds the lease (``lost`` when it was taken over
    during the GETs): the caller tries again later. Throttling postpones, as in a pass: a scope
    whose ``not_before`` lies ahead is not fetched (``postponed``), and a GET that Graph throttles
    past the client's retries postpones the scope (``throttled``, nothing written); both return
    ``not_before``. Only the lease (and a throttle's ``not_before``) is given back at the end; the
    scope's dirtiness and last success belong to its passes. Other Graph or database trouble is
    raised (after recording the run) for the caller to list the scope instead.
    """
    store = ScopeStore(engine, scope, worker=worker, clock=clock, lease_ttl=lease_ttl)
    writer = RowWriter(engine, scope)
    with engine.begin() as connection:
        store.ensure(connection)
        if not store.take_lease(connection):
            return PassResult(scope.key, "busy")
        not_before = store.state(connection).not_before
        if not_before is not None and not_before > clock():
            store.release_lease(connection)
            return PassResult(scope.key, "postponed", not_before=not_before)
        run_id = store.start_run(connection, full=False)
    try:
        items = _get_items(source, scope, resources)
        with engine.begin() as connection:
            store.renew_lease(connection)
            done = apply_items(connection, writer, items, now=clock(), run_id=run_id)
            store.update_run(
                connection, run_id, outcome="ok", finished_at=clock(), pages=1, upserted=done.upserted,
                deleted=done.deleted,
            )
            store.release_lease(connection)
    except LeaseLost as error:
        with engine.begin() as connection:
            store.update_run(connection, run_id, outcome="lost", finished_at=clock(), error=str(error))
        return PassResult(scope.key, "lost", run_id=run_id, error=str(error))
    except Exception as error:
        throttle = _throttle_of(error)
        until = clock() + _throttle_wait(throttle) if throttle is not None else None
        with engine.begin() as connection:
            if until is not None:
                store.update_run(connection, run_id, outcome="throttled", finished_at=clock(), error=str(error))
                store.release_lease(connection, last_error=str(error), not_before=until)
            else:
                store.update_run(connection, run_id, outcome="error", finished_at=clock(), error=_describe(error))
                store.release_lease(connection)
        if until is None:
            raise
        log.info("scope %s throttled while fetching by id, postponed until %s", scope.key, until.isoformat())
        return PassResult(scope.key, "throttled", run_id=run_id, error=str(error), not_before=until)
    return PassResult(scope.key, "ok", run_id=run_id, pages=1, items=len(items), upserted=done.upserted, deleted=done.deleted)


def _get_items(source: PageSource, scope: Scope, resources: Sequence[str]) -> list[Mapping[str, Any]]:
    items: list[Mapping[str, Any]] = []
    for resource in dict.fromkeys(resources):
        resource = _normalise_resource(resource)
        path = scope.strategy.item_path.format(resource=resource) if scope.strategy.item_path else resource
        try:
            body = source.get_json(path)
        except NotFoundError:
            item_id = resource.rstrip("/").rsplit("/", 1)[-1]
            items.append({"id": item_id, "@removed": {"reason": "deleted"}})
            continue
        if isinstance(body, dict) and "id" in body:
            items.append(body)
    return items


def _normalise_resource(resource: str) -> str:
    # Notifications spell the collection "Users/{id}" or "Users('{id}')"; Graph's paths are
    # case-blind but a strict server (or proxy) may not be, so collection names go lower-case.
    path, _, query = resource.strip().lstrip("/").partition("?")
    path = re.sub(r"\('([^']*)'\)", r"/\1", path)
    parts = path.split("/")
    parts = [p.lower() if i % 2 == 0 else p for i, p in enumerate(parts)]
    return "/".join(parts) + (f"?{query}" if query else "")


def progress_line(p: Progress) -> str:
    """One line describing a running pass, for a progress display."""
    return f"{p.scope}: {p.items:,} items, {p.pages:,} pages, {p.rate:,.0f} items/s"
