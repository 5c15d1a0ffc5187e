"""A round of a scope's delta and its cursor: where it starts, how it moves with its pages, how it restarts.

A *round* walks one delta query from its first page to its deltaLink; a pass (:mod:`syncer.worker.sync`)
runs one round, or resumes one a crash interrupted. The round's cursor lives in the scope's state row
(:mod:`syncer.worker.scopestate`): the stored deltaLink, the nextLink of the round in progress
(``page_link``), and the round's id and kind (``round_id``, ``round_full``). This module decides:

- where a round starts (:func:`start_round`): the nextLink of an interrupted round, the stored
  deltaLink, or the initial URL (a full round that forgets the deltaLink in the same transaction,
  so that a crash mid-round resumes as a full round and ends with its sweep);
- how a round's pages commit with their cursor (:class:`Batch`);
- what a stored link that cannot be used means (:func:`lost_link`: lost sync state), and what
  replaces a round after a 410 or such a link (:func:`restart`, :func:`put_back`).

Its log lines are the pass's (logger ``syncer.worker.sync``): a reader follows one pass in one logger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Engine

from syncer.errors import ForeignOriginError, GraphError, NotFoundError, ResyncRequired
from syncer.graph.delta import link_problem
from syncer.worker.scopestate import ScopeStore

if TYPE_CHECKING:
    from syncer.worker.sync import Progress

__all__ = [
    "LOST_LINK_STATUSES", "Batch", "LostLink", "Round", "RoundEnd", "lost_link", "new_full_round", "put_back", "restart",
    "resync_note", "start_round", "stored_link",
]

log = logging.getLogger("syncer.worker.sync")

LOST_LINK_STATUSES = frozenset({400, 404})
"""Statuses that, on the first page of a stored deltaLink or nextLink, mean its token is bad: a lost sync
state, resynced. Graph documents 410 for a token it no longer knows
(https://learn.microsoft.com/en-us/graph/delta-query-overview); a token it cannot read is refused with
400 (or 404 on some resources), which is not documented: hence a setting."""


@dataclass
class Round:
    """The round a pass is walking: the URL of its next request and what kind of round it is."""

    url: str
    round_id: int
    full: bool
    resumed: bool
    from_delta: str | None  # the deltaLink this incremental round started from
    started: datetime | None = None
    stored: bool = False  # url is a link read from syncer_sync_state (a deltaLink or a page_link)
    resync: str | None = None  # why this full round replaces lost sync state
    replaced: str | None = None  # the stored deltaLink a 404 made this full round replace (put back if 404 again)

    def become(self, other: Round) -> None:
        """Switch to *other* in place (the pass's caller keeps a reference for its result)."""
        self.__dict__.update(other.__dict__)


@dataclass(frozen=True)
class RoundEnd:
    """The end of a round that ends the pass: what its last batch writes instead of the cursor alone."""

    delta_link: str | None
    now: datetime
    started: datetime
    """When the pass started (a mark newer than this keeps the scope dirty)."""
    note: str | None
    """The run's ``error`` column (a resync's reason; None otherwise)."""


class Batch:
    """Consecutive pages written in one transaction, with the round's cursor and a lease renewal.

    The cursor (nextLink of the last page) and the run's counters are written once, just before the
    commit, rather than after every page: the same transaction either way, a round trip less per page.
    The batch that holds the round's last page also ends the pass (:attr:`end`): the deltaLink, the
    lease given back and the run's outcome commit with the rows, in one transaction rather than two
    (most scopes of a tenant are one page: a folder, a calendar).
    """

    def __init__(self, connection: Connection, store: ScopeStore, run_id: int, *, last: bool = False) -> None:
        """*last*: the batch's first page is the round's last, so the batch ends the pass; its statement
        that gives the lease back checks it (:meth:`ScopeStore.end_round`), where another would renew it first."""
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
        self.end: RoundEnd | None = None
        """Set when the round's last page is in this batch: the commit ends the pass."""
        self._async = store.postgres and not last
        self.committed = False
        try:
            if self._async:
                # A commit need not wait for its WAL flush: rows and cursor are in one transaction, so
                # a server crash loses both together and the next pass fetches them again; the pass's
                # final (synchronous) commit flushes everything before it.
                self.connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
            if not last:
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
            totals = {
                "pages": counters.pages + self.pages, "upserted": counters.upserted + self.upserted,
                "deleted": counters.deleted + self.deleted,
            }
            if self.end is not None:
                end = self.end
                if self._async:
                    self.connection.exec_driver_sql("SET LOCAL synchronous_commit = on")  # the pass's final commit
                self.store.end_round(self.connection, delta_link=end.delta_link, now=end.now, started=end.started)
                self.store.update_run(
                    self.connection, self.run_id, outcome="ok", finished_at=end.now, error=end.note, **totals
                )
            else:
                if self.page_link is not None:
                    self.store.update_state(self.connection, page_link=self.page_link)
                self.store.update_run(self.connection, self.run_id, **totals)
            self._transaction.commit()
        except BaseException:
            self.connection.close()
            raise
        self.committed = True
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


def resync_note(resync: str | None) -> str | None:
    """What a pass that resynced records in its run's ``error`` column (shown by ``syncer status``)."""
    return f"resync: {resync}" if resync else None


NewRun = Callable[[bool, "str | None"], int]
"""Records the pass in ``syncer_sync_runs`` once its round is known: ``(full round?, note) -> run id``."""


def start_round(store: ScopeStore, connection: Connection, state: Any, *, force_full: bool, new_run: NewRun) -> tuple[Round, int]:
    """Where a pass starts, from the scope's *state* row: the interrupted round it resumes, an incremental
    round from the stored deltaLink, or a full round (forced, requested, or nothing usable stored); with
    the id of the pass's run, recorded by *new_run* once the kind of round is known (one statement for
    the record, rather than an insert and an update)."""
    scope = store.scope
    lost: list[str] = []
    delta_link = stored_link(state.delta_link, "deltaLink", lost)
    page_link = stored_link(state.page_link, "nextLink of the round in progress", lost)
    if force_full or state.resync_requested:
        run_id = new_run(True, None)
        return new_full_round(store, connection, run_id, scope.initial_url), run_id
    if page_link is not None and state.round_id is not None and (state.round_full or delta_link is not None):
        if lost:
            log.warning("scope %s: %s; resuming the round", scope.key, "; ".join(lost))
        run_id = new_run(bool(state.round_full), None)
        started = store.run_started_at(connection, int(state.round_id)) if state.round_full else None
        rnd = Round(page_link, int(state.round_id), bool(state.round_full), True, delta_link, started, stored=True)
        return rnd, run_id
    if delta_link is None or (state.round_full and state.page_link is not None):
        # Nothing to start from, or a full round whose resume point is lost: enumerate (and sweep).
        resync = "; ".join(lost) or None
        if resync:
            log.warning("scope %s: lost sync state (%s); enumerating it again", scope.key, resync)
        run_id = new_run(True, resync_note(resync))
        return new_full_round(store, connection, run_id, scope.initial_url, resync=resync), run_id
    if lost:
        log.warning("scope %s: %s; starting the round again from its deltaLink", scope.key, "; ".join(lost))
    run_id = new_run(False, None)
    store.update_state(connection, round_id=run_id, round_full=False, page_link=None)
    return Round(delta_link, run_id, False, False, delta_link, stored=True), run_id


def stored_link(link: object, what: str, lost: list[str]) -> str | None:
    """*link* if it can be called; else None, with the reason appended to *lost* (never the link itself)."""
    if link is None:
        return None
    problem = link_problem(link)
    if problem is None:
        return str(link)
    lost.append(f"the stored {what} is {problem}")
    return None


def new_full_round(
    store: ScopeStore, connection: Connection, run_id: int, url: str, *, resync: str | None = None,
    replaced: str | None = None,
) -> Round:
    """A full round of run *run_id* from *url*, with the scope's stored cursor forgotten (the caller's transaction)."""
    # Forgetting the deltaLink here, in the same transaction as the round's start, is what makes a
    # crash mid-round resume as a full round (and end with its sweep) rather than as an incremental one.
    # listed_at: a calendarView's window is set, and every item read, from now (the safety net counts from it).
    now = store.clock()
    store.update_state(
        connection, delta_link=None, page_link=None, round_id=run_id, round_full=True, resync_requested=False,
        listed_at=now,
    )
    return Round(url, run_id, True, False, None, now, resync=resync, replaced=replaced)


class LostLink(Exception):
    """The stored link a round started from cannot be used (a bad token, another origin): lost sync state."""

    def __init__(self, reason: str, cause: GraphError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


def lost_link(rnd: Round, error: BaseException) -> LostLink | None:
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
        return LostLink(f"the stored {what} points outside the Graph origin ({error.graph_message})", error)
    if isinstance(error, GraphError) and not isinstance(error, ForeignOriginError) and error.status in LOST_LINK_STATUSES:
        code = f" {error.code}" if error.code else ""
        return LostLink(f"Graph refused the stored {what} with HTTP {error.status}{code}", error)
    return None


def restart(store: ScopeStore, connection: Connection, rnd: Round, error: ResyncRequired | LostLink, *, run_id: int) -> None:
    """Turn *rnd* in place into the round that replaces it after *error* (a 410, or a stored link that
    cannot be used), inside the caller's transaction: the incremental round again from its deltaLink
    when only its nextLink was refused, else a full round from the scope's initial URL."""
    scope = store.scope
    if rnd.resumed and not rnd.full and rnd.from_delta:
        # An expired (or refused) nextLink of an incremental round: start that round again
        # from its deltaLink.
        if isinstance(error, LostLink):
            log.warning("scope %s: %s; starting the round again from its deltaLink", scope.key, error.reason)
        store.update_state(connection, page_link=None, round_id=run_id, round_full=False)
        rnd.become(Round(rnd.from_delta, run_id, False, False, rnd.from_delta, stored=True))
        return
    if isinstance(error, LostLink):
        resync = error.reason
        log.warning("scope %s: lost sync state (%s); enumerating it again", scope.key, resync)
    else:
        code = f" {error.code}" if error.code else ""
        resync = f"Graph answered HTTP {error.status}{code}"
        log.info("scope %s: %s; enumerating it again", scope.key, error)
    # A 404 may mean the resource is gone rather than the token bad: the link is
    # put back if the full round's first page is refused with 404 too.
    replaced = (
        rnd.url if isinstance(error, LostLink) and isinstance(error.cause, NotFoundError)
        and not rnd.resumed else None
    )
    # Our own initial URL rather than Graph's Location: it carries the declared $select
    # (a Location rebuilt from a deltaLink with an empty token may not), and either
    # way the round enumerates everything.
    rnd.become(new_full_round(store, connection, run_id, scope.initial_url, resync=resync, replaced=replaced))
    store.update_run(connection, run_id, full_round=True, error=resync_note(resync))


def put_back(engine: Engine, store: ScopeStore, rnd: Round) -> None:
    """Restore the deltaLink a full round replaced: the resource is gone (404 on our initial URL too),
    which says nothing against the token; the pass fails as it did before, and a later pass (once the
    resource is back) carries on from the link, or resyncs if Graph refuses it again."""
    with engine.begin() as connection:
        store.renew_lease(connection)
        store.update_state(connection, delta_link=rnd.replaced, page_link=None, round_id=None, round_full=False)
    rnd.resync = None
    log.info("scope %s: its resource is gone (404); its stored deltaLink is kept", store.scope.key)
