"""A reading of the due scopes: as many as the worker has pass threads free, oldest mark first.

A worker starts one pass per due scope (dirty, resync-requested or mid-round: :func:`syncer.worker.scopestate.due_scopes`).
Reading every due scope and queueing a pass for each costs one worker nothing, its threads taking them in turn; but
workers sharing a database each queued every scope they saw (a lease was only taken when a thread started the pass),
and the second's threads then found most scopes leased by the first (2,066 ``busy`` attempts in an initial mirror of
200 mailboxes by 2 workers, each a lease transaction for nothing). So a reading takes at most one scope per free
pass thread, oldest mark first (the due index's order: a scope marked long ago is not overtaken by newer marks), and
on PostgreSQL leases them in its own transaction, the readings of all workers one at a time
(:func:`syncer.worker.scopestate.claim_due`): another worker's reading does not see them at all, nor the other folders
of a mailbox one worker is passing (Outlook's 4 requests per mailbox hold across workers only if a mailbox's folders
go to one of them). When more scopes were due than the reading took (a *backlog*), each pass that ends reads again
from its own thread: no thread idles until the next drain while scopes are due.

A reading's query runs outside the worker's lock: passes ending meanwhile take it to record their results. A pass
still running when the query starts is in its answer (its lease is ours, its mark not yet cleared); if it ends before
the lock is ours again, the answer is stale for its scope, and starting the scope again would pass it twice for one
mark. So the passes running when the query started are not started from its answer; their scopes are left to the
next reading, of the state the pass left (dirty again only if a notification came in meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from syncer.worker import scopestate

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from syncer.worker.scopes import Scope

__all__ = ["WIDEN", "Picked", "Row", "not_due", "pick", "read", "rows_to_read"]

Row = tuple[str, str, str | None]
"""``(tenant_id, scope_key, parent_key)`` of a due scope."""
Key = tuple[str, str]

WIDEN = 4
"""How much more a reading reads when the rows it read held too few scopes it could start (see :func:`pick`)."""


def rows_to_read(free: int, running: int) -> int:
    """Rows a reading asks for, for *free* threads while *running* passes of this worker run: their scopes may be
    in the answer (leased by this worker, still dirty until they end) and hold the oldest marks, so they take rows
    the free threads would otherwise get."""
    return free + running


@dataclass(frozen=True)
class Picked:
    """What a reading starts, and what it says about the due scopes."""

    start: list[Scope]
    complete: bool
    """The answer held every due scope (fewer rows than asked for): a queued pass whose scope is not in it is no
    longer due, and no scope waits for a thread."""
    short: bool
    """Too few of the rows read could be started (another reading must read further, see :data:`WIDEN`): the oldest
    marks may be scopes this worker leaves waiting (an account that must sign in again, a scope no longer declared)."""


def pick(
    due: Sequence[Row], *, limit: int, free: int, skip: Collection[Key], allows: Callable[[str], bool] | None,
    resolve: Callable[[str, str, str | None], Scope | None],
) -> Picked:
    """The scopes of *due* (read with *limit*) to start on *free* threads, oldest mark first. Left out: those in
    *skip* (running or fetched here, or running when the query started), those of a tenant *allows* refuses (an
    account that must sign in again: they stay dirty), and those *resolve* does not know (no longer declared:
    retire_scopes drops them)."""
    start: list[Scope] = []
    for tenant_id, scope_key, parent_key in due:
        if len(start) == free:
            break
        if (tenant_id, scope_key) in skip or (allows is not None and not allows(tenant_id)):
            continue
        if (scope := resolve(tenant_id, scope_key, parent_key)) is not None:
            start.append(scope)
    complete = len(due) < limit
    return Picked(start, complete, short=not complete and len(start) < free)


def not_due(keys: Iterable[Key], due: Sequence[Row], picked: Picked) -> list[Key]:
    """Those of *keys* (scopes with a pass of this worker, started or waiting for a thread) whose scope the reading
    *due* shows no longer due: none unless the reading was complete (a scope past its limit is still due).

    A pass still waiting for a thread whose scope is no longer due (another worker holds it or cleaned it, or it
    was postponed) would only take a lease in vain: it is withdrawn. Should the scope be due again, a later reading
    starts it."""
    if not picked.complete:
        return []
    answer = {(tenant_id, key) for tenant_id, key, _ in due}
    return [key for key in keys if key not in answer]


def read(
    engine: Engine, *, worker: str, now: datetime, limit: int, free: int, skip: Collection[Key],
    allows: Callable[[str], bool] | None, resolve: Callable[[str, str, str | None], Scope | None],
    select: Callable[[int], Sequence[Row]],
) -> tuple[Sequence[Row], Picked]:
    """A reading of at most *limit* due scopes and those of them to start on *free* threads (:func:`pick`). On
    PostgreSQL, where workers may be several, their leases are taken in the reading's transaction, one worker's
    reading at a time (:func:`syncer.worker.scopestate.claim_due`); on SQLite (one worker) *select* reads."""
    picked: list[Picked] = []

    def choose(due: Sequence[Row]) -> list[Key]:
        picked.append(pick(due, limit=limit, free=free, skip=skip, allows=allows, resolve=resolve))
        return [(scope.tenant_id, scope.key) for scope in picked[-1].start]

    if engine.dialect.name == "postgresql":
        due = scopestate.claim_due(engine, worker=worker, now=now, limit=limit, pick=choose)
    else:
        choose(due := select(limit))
    return due, picked[-1]
