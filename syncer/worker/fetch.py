"""Fetch by id: the notified items of a scope whose resource has no delta query, under the scope's lease.

Some resources (see :mod:`syncer.resources`, strategy ``fetch``) cannot be followed with a delta query:
their scope is listed by a full pass every time (swept), and between lists a notification that names
an item makes the worker GET that item alone, which costs one request instead of a list. The pass
(:mod:`syncer.worker.sync`) and these fetches take the same lease, write through the same
:class:`~syncer.worker.writer.RowWriter` and report a :class:`~syncer.worker.sync.PassResult`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from syncer.errors import LeaseLost
from syncer.worker.byid import get_item
from syncer.worker.lookups import known_owners
from syncer.worker.scopes import Scope
from syncer.worker.scopestate import LEASE_TTL, Clock, ScopeStore, utcnow
from syncer.worker.sync import PageSource, PassResult, describe_error, take_scope, throttle_of, throttle_wait
from syncer.worker.writer import RowWriter, apply_items

__all__ = ["fetch_items"]

log = logging.getLogger("syncer.worker.fetch")


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
    with engine.begin() as connection:
        state, refused = take_scope(store, connection, now=clock())
        if refused is not None:
            return refused
        # Ids not looked up yet are the next pass's (syncer.worker.lookups): a fetch only GETs its items.
        writer = RowWriter(engine, scope, owners=known_owners(scope, state.owner_ids))
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
        throttle = throttle_of(error)
        until = clock() + throttle_wait(throttle) if throttle is not None else None
        with engine.begin() as connection:
            if until is not None:
                store.update_run(connection, run_id, outcome="throttled", finished_at=clock(), error=str(error))
                store.release_lease(connection, last_error=str(error), not_before=until)
            else:
                store.update_run(connection, run_id, outcome="error", finished_at=clock(), error=describe_error(error))
                store.release_lease(connection)
        if until is None:
            raise
        log.info("scope %s throttled while fetching by id, postponed until %s", scope.key, until.isoformat())
        return PassResult(scope.key, "throttled", run_id=run_id, error=str(error), not_before=until)
    return PassResult(scope.key, "ok", run_id=run_id, pages=1, items=len(items), upserted=done.upserted, deleted=done.deleted)


def _get_items(source: PageSource, scope: Scope, resources: Sequence[str]) -> list[Mapping[str, Any]]:
    items: list[Mapping[str, Any]] = []
    for resource in dict.fromkeys(resources):
        item = get_item(source, scope, _normalise_resource(resource, scope.key))
        if item is not None:
            items.append(item)
    return items


def _normalise_resource(resource: str, collection: str) -> str:
    # Notifications spell the collection "Users/{id}" or "Users('{id}')"; Graph's paths are
    # case-blind but a strict server (or proxy) may not be, so collection names go lower-case.
    path, _, query = resource.strip().lstrip("/").partition("?")
    path = re.sub(r"\('([^']*)'\)", r"/\1", path)
    if path.lower() == collection.lower() or path.lower().startswith(collection.lower() + "/"):
        # Under the scope's own path (security/alerts/{id}, print/printers/{id}/jobs/{id}): spelled as the
        # scope is, the ids as notified (an alert id's letter case is its own).
        return collection + path[len(collection):] + (f"?{query}" if query else "")
    parts = path.split("/")
    parts = [p.lower() if i % 2 == 0 else p for i, p in enumerate(parts)]
    return "/".join(parts) + (f"?{query}" if query else "")
