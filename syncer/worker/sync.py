"""One sync pass for one scope: Graph pages in, mirror rows and the cursor out, crash-safe.

"Push as trigger, pull as truth": a notification only marks a scope dirty; this module pulls the
truth with a delta query (or a list and GETs where Graph has no delta) and writes it.

A pass, and why each step is where it is:

1. **Lease** (one transaction): take the scope's lease (:mod:`syncer.worker.scopestate`: one writer per
   scope across all workers; the same statement reads the state row), decide where the round
   starts: the nextLink of an interrupted round (resume), the stored deltaLink (incremental), or the
   initial URL (a *full* round: first pass, ``--full``, a requested resync), and record the pass in
   ``syncer_sync_runs``.
2. **Pages**: a prefetch thread (:mod:`syncer.worker.prefetch`) fetches page N+1 while page N is written
   (started once the first page says more follow: most scopes of a tenant are one page).
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
4. **Finish**: record the outcome. A pass that succeeds does it in its last page's transaction (the
   deltaLink, the lease given back and the run's outcome commit with the rows: two transactions in
   all for a scope of one page); the others in a transaction of their own. Throttling postpones the scope (``not_before``), it does not fail
   it, and it never holds a lock or a thread that other scopes need.

Resources without delta are listed by the same pass (a full round every time, swept) and, between
lists, fetched by id when a notification names them (:mod:`syncer.worker.fetch`), under the same lease.

Where a round starts, how its pages commit with their cursor and what replaces a round after a 410 or
a lost link: :mod:`syncer.worker.rounds`. Where the pages go: a :class:`PageWriter`, either rows into
a mirror table (:mod:`syncer.worker.writer`, where the speed is) or, for a container scope such as a
mailbox, child scopes into scope state (:mod:`syncer.worker.containers`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncer.errors import (
    GraphError,
    LeaseLost,
    NotFoundError,
    ResyncRequired,
    RetryBudgetExhausted,
    ServerError,
    SyncerError,
    ThrottledError,
)
from syncer.log import database_unreachable
from syncer.worker import chain, cursor, idaction, inline
from syncer.worker.byid import OneItem, WholeItems, names_one_item
from syncer.worker.containers import ContainerWriter
from syncer.worker.lookups import Owners, resolve_owners
from syncer.worker.prefetch import Prefetcher
from syncer.worker.rounds import (
    Batch,
    LostLink,
    Round,
    RoundEnd,
    lost_link,
    put_back,
    restart,
    resync_note,
    start_round,
)
from syncer.worker.scopes import FETCH, Scope
from syncer.worker.scopestate import LEASE_TTL, Clock, ScopeStore, is_due, utcnow
from syncer.worker.specwatch import layout_differs
from syncer.worker.writer import PageOutcome, RowWriter

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "Fault",
    "PageSource",
    "PageWriter",
    "PassResult",
    "Progress",
    "describe_error",
    "progress_line",
    "sync_scope",
    "take_scope",
    "throttle_of",
    "throttle_wait",
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
ENDED = "ended"
"""What :func:`_run_pages` returns when the transaction of the round's last page also ended the pass (lease
given back, run recorded "ok"): nothing is left for :func:`_finish`."""
MAX_RESTARTS = 2
"""410s handled in one pass before it gives up (each restarts the round)."""
class PageSource(Protocol):
    """What a pass needs from the Graph client (GraphClient satisfies it)."""

    def iter_pages(self, url_or_path: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Any]: ...

    def get_json(self, url_or_path: str) -> Any: ...


class PageWriter(Protocol):
    """Where a pass writes its pages: rows into a mirror table (:class:`~syncer.worker.writer.RowWriter`), or
    the child scopes of a container into scope state (:class:`~syncer.worker.containers.ContainerWriter`)."""

    def begin_round(self, *, full: bool, resumed: bool) -> None:
        """A round starts, or a restart replaced it (a full round from its first page can sweep at its end)."""

    def apply(
        self, connection: Connection, items: Sequence[Mapping[str, Any]], *, now: datetime, round_id: int
    ) -> PageOutcome:
        """Write one page inside the caller's transaction."""

    def sweep(self, connection: Connection, *, round_id: int, now: datetime, round_started: datetime | None) -> int:
        """At the end of a full round: remove what the round did not see; how many rows went."""


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
    # | stopped (the worker is shutting down; resumes from the committed page) | clean (due_only: passed meanwhile)
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


def throttle_of(error: BaseException) -> GraphError | None:
    if isinstance(error, ThrottledError):
        return error
    if isinstance(error, RetryBudgetExhausted) and isinstance(error.last_error, ThrottledError | ServerError):
        return error.last_error
    if isinstance(error, ServerError) and error.status == 503 and error.retry_after is not None:
        return error
    return None


def throttle_wait(throttle: GraphError) -> timedelta:
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
    manual: bool = False,
    due_only: bool = False,
) -> PassResult:
    """Run one pass of *scope*: from its cursor to a new deltaLink (or as far as Graph lets us).

    *manual* (``syncer sync``: a person asked for this pass) runs it despite the scope's back-off
    (``not_before``); a lease held by a running worker is still respected (``busy``).

    When *stop* is set (the worker is shutting down) the pass ends after its next commit with
    outcome ``stopped``: the rows and the resume point committed so far stay, the lease is released
    and the next pass carries on from there.

    Never raises for Graph or database trouble during the pass: the outcome says what happened and
    ``syncer_sync_runs``/``syncer_sync_state`` record it. Returns ``busy`` at once when another
    worker holds the scope's lease, and with *due_only* (the worker's passes) ``clean`` when the scope no
    longer asks for a pass: another pass cleaned it since this one was queued. *page_size* asks Graph for pages of that size
    (``Prefer: odata.maxpagesize``; Graph may ignore it).
    """
    step = fault or _no_fault
    if scope.strategy.refetch_listed:
        source = WholeItems(source, scope, engine)
    elif names_one_item(scope):
        source = OneItem(source, scope)
    store = ScopeStore(engine, scope, worker=worker, clock=clock, lease_ttl=lease_ttl)
    started = clock()
    with engine.begin() as connection:
        # async_commit: the lease need not wait for its WAL flush (a few ms on an idle server, tens under
        # load): every later commit of this pass flushes it, and a server crash that loses it breaks this
        # pass's connections, its next transaction finding the lease gone (LeaseLost).
        state, refused = take_scope(
            store, connection, now=started, force=full or manual, due_only=due_only and not full, async_commit=True,
        )
        if refused is not None:
            return refused

        def new_run(full_round: bool, note: str | None) -> int:
            return store.start_run(connection, full=full_round, error=note, abandon=bool(state.open_run))

        rnd, run_id = start_round(store, connection, state, force_full=full, new_run=new_run)
    step("leased")
    counters = Progress(scope.key)
    try:
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else None
        owners = resolve_owners(engine, source, store, state.owner_ids)
        outcome = _run_pages(
            engine, source, store, rnd, run_id, counters, progress=progress, prefetch=prefetch, step=step,
            headers=headers, commit_every=commit_every, stop=stop, owners=owners, started=started,
        )
    except LeaseLost as error:
        _finish(store, run_id, "lost", counters, error=str(error), started=started, release=False)
        return _result(scope, run_id, rnd, counters, "lost", error=str(error))
    except Exception as error:
        throttle = throttle_of(error)
        if throttle is not None:
            until = clock() + throttle_wait(throttle)
            _finish(store, run_id, "throttled", counters, error=str(error), started=started, not_before=until)
            log.info("scope %s throttled, postponed until %s", scope.key, until.isoformat())
            return _result(scope, run_id, rnd, counters, "throttled", error=str(error), not_before=until)
        if database_unreachable(error):
            # Nothing can be recorded now; the caller's outage log reports it once per outage
            # (syncer.log.OutageLog), not once per pass with the failed SQL statement.
            raise
        log.warning("scope %s: pass failed: %s", scope.key, error, exc_info=not isinstance(error, SyncerError))
        retry_at = _finish(store, run_id, "error", counters, error=describe_error(error), started=started)
        return _result(scope, run_id, rnd, counters, "error", error=describe_error(error), not_before=retry_at)
    step("pages-done")
    if outcome != ENDED:
        _finish(store, run_id, outcome, counters, started=started, error=resync_note(rnd.resync))
    step("finished")
    return _result(scope, run_id, rnd, counters, "ok" if outcome == ENDED else outcome)


def take_scope(
    store: ScopeStore, connection: Connection, *, now: datetime, force: bool = False, due_only: bool = False,
    async_commit: bool = False,
) -> tuple[Any, PassResult | None]:
    """Take the scope's lease for a pass or a fetch: ``(its state row, None)`` to go on, or ``(None, the
    result to return)``: ``busy`` when another worker holds the lease, ``postponed`` (lease given back)
    while the scope's ``not_before`` lies ahead, unless *force*; ``outdated`` (lease given back) when
    the table's columns are not those the scope's declaration says (another spec was applied); with
    *due_only*, ``clean`` (lease given back) when the scope is no longer dirty, resync-requested or
    mid-round. *async_commit*: :meth:`ScopeStore.take`'s."""
    # One statement: the lease, the state row, the table's recorded columns and whether a dead
    # worker's run is still open (a pass of a small scope is mostly this bookkeeping).
    state = store.take(connection, async_commit=async_commit)
    if state is None:
        return None, PassResult(store.scope.key, "busy")
    if (outdated := layout_differs(store.scope.mirror, state.layout)) is not None:
        # Rows written with other columns than the table's would lack the new ones, and a resync
        # requested for them would be spent (syncer.applied): give the scope back untouched.
        store.release_lease(connection)
        return None, PassResult(store.scope.key, "outdated", error=outdated)
    if due_only and not is_due(state):
        # Read under our lease, so no pass can clean it between this read and ours: the pass queued
        # for it was overtaken (another worker's pass, or one started from an older due_scopes).
        store.release_lease(connection)
        return None, PassResult(store.scope.key, "clean")
    if state.not_before is not None and state.not_before > now and not force:
        store.release_lease(connection)
        return None, PassResult(store.scope.key, "postponed", not_before=state.not_before)
    return state, None


def describe_error(error: BaseException) -> str:
    if isinstance(error, SyncerError):
        return str(error)
    if isinstance(error, sa.exc.SQLAlchemyError):
        return f"database error: {type(error).__name__}: {str(getattr(error, 'orig', error))[:300]}"
    return f"{type(error).__name__}: {str(error)[:300]}"


def _result(scope: Scope, run_id: int, rnd: Round, c: Progress, outcome: str, **kw: Any) -> PassResult:
    if rnd.resync and "resync" not in kw:
        kw["resync"] = rnd.resync
    return PassResult(
        scope.key, outcome, run_id=run_id, full=rnd.full, pages=c.pages, items=c.items, upserted=c.upserted,
        deleted=c.deleted, **kw,
    )


def _run_pages(
    engine: Engine,
    source: PageSource,
    store: ScopeStore,
    rnd: Round,
    run_id: int,
    counters: Progress,
    *,
    progress: Callable[[Progress], None] | None,
    prefetch: int,
    step: Fault,
    headers: Mapping[str, str] | None,
    commit_every: float,
    stop: threading.Event | None = None,
    owners: Owners | None = None,
    started: datetime,
) -> str:
    """Walk the round's pages; the outcome (ENDED: the last page's transaction ended the pass too)."""
    scope = store.scope
    source = idaction.pages_for(scope, source)
    if scope.strategy.chain is not None:  # listed per team or per user (syncer.worker.chain)
        source = chain.ChainedSource(source, scope.strategy.chain, scope.initial_url)
    writer: PageWriter = ContainerWriter(scope) if scope.container else RowWriter(engine, scope, owners=owners.values if owners else None)
    writer.begin_round(full=rnd.full, resumed=rnd.resumed)
    record = owners.record if owners is not None else None
    recording: Batch | None = None
    restarts = 0
    newest_seen: datetime | None = None  # a cursor scope's newest item of the round (syncer.worker.cursor)
    while True:
        pages = (
            Prefetcher(partial(source.iter_pages, rnd.url, headers=headers), depth=prefetch, last=_is_last)
            if prefetch > 0 else None
        )
        iterator = iter(pages) if pages is not None else source.iter_pages(rnd.url, headers=headers)
        batch: Batch | None = None
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
                            lost = lost_link(rnd, error)
                            if lost is not None:
                                raise lost from error
                            if rnd.replaced is not None and isinstance(error, NotFoundError):
                                put_back(engine, store, rnd)
                        raise
                    fetched += 1
                    items = page.items
                    if scope.strategy.inline is not None and inline.has_more(items, scope.strategy.inline):
                        if batch is not None:  # the rest of a root's replies is read with no transaction open
                            pending, batch = batch, None
                            pending.commit(counters)
                        items = inline.complete(source, items, scope.strategy.inline)
                    if scope.strategy.cursor is not None:
                        newest_seen = cursor.newest(page.items, scope.strategy.cursor, since=newest_seen)
                    step("page-fetched")
                    now = store.clock()
                    last = page.next_link is None
                    if batch is None:
                        if held is None or held.closed:
                            held = engine.connect()
                        batch = Batch(held, store, run_id, last=last)
                        if record is not None and (recording is None or not recording.committed):
                            record(batch.connection)  # until a batch that recorded them commits
                            recording = batch
                    connection = batch.connection
                    done = writer.apply(connection, items, now=now, round_id=rnd.round_id)
                    batch.add(pages=1, items=len(page.items), upserted=done.upserted, deleted=done.deleted)
                    step("page-applied")
                    if not last:
                        batch.page_link = page.next_link
                    else:
                        if rnd.full:
                            swept = writer.sweep(connection, round_id=rnd.round_id, now=now, round_started=rnd.started)
                            batch.add(deleted=swept)
                            step("swept")
                        link = page.delta_link
                        if link is None and scope.strategy.cursor is not None:
                            link = cursor.next_start(scope.initial_url, scope.strategy.cursor, rnd.from_delta, newest_seen)
                        if link is None and scope.strategy.method not in (FETCH,):
                            raise GraphError(f"delta round of {scope.key} ended without an @odata.deltaLink")
                        # The round's end is the pass's: cursor, lease and run record go with the rows.
                        batch.end = RoundEnd(link, now, started, resync_note(rnd.resync))
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
                return ENDED
            except BaseException:
                if batch is not None:
                    batch.rollback()
                    batch = None
                if held is not None:
                    held.close()  # before a restart opens its own
                raise
        except (ResyncRequired, LostLink) as error:
            restarts += 1
            if restarts > MAX_RESTARTS:
                if isinstance(error, LostLink):
                    raise error.cause from error
                raise
            with engine.begin() as connection:
                store.renew_lease(connection)
                restart(store, connection, rnd, error, run_id=run_id)
                writer.begin_round(full=rnd.full, resumed=rnd.resumed)
                step("restarted")
        finally:
            if held is not None:
                held.close()
            if pages is not None:
                pages.close()


def _is_last(page: Any) -> bool:
    return page.next_link is None


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


def progress_line(p: Progress) -> str:
    """One line describing a running pass, for a progress display."""
    return f"{p.scope}: {p.items:,} items, {p.pages:,} pages, {p.rate:,.0f} items/s"
