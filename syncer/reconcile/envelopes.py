"""Reconcile's Graph calls in ``$batch`` envelopes: a share of the tenant's budget, one envelope at a time.

30,000 creates or renewals are 1,500 envelopes of 20 (https://learn.microsoft.com/en-us/graph/json-batching).
:func:`send_all` keeps a few of them in flight, builds each request only when its envelope goes out and hands
each envelope's results back as it returns, so :mod:`syncer.reconcile.apply` records them (clientStates
included) before the next one is sent: memory holds a few envelopes whatever the tenant's size, and a
reconcile stopped half-way has recorded everything Graph did.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING

from syncer.errors import GraphError
from syncer.graph.batch import BatchRequest, BatchResult

if TYPE_CHECKING:
    from syncer.graph.client import GraphClient

BATCH_MIN = 2
"""From this many calls on, they go through ``$batch``; a single call needs no envelope."""

BATCH_SIZE = 20
"""Graph's limit of requests per ``$batch`` envelope (https://learn.microsoft.com/en-us/graph/json-batching)."""

RECONCILE_SHARE = 4
"""Reconcile sends at most a 1/RECONCILE_SHARE of the tenant's budget of requests in flight as envelopes at once.

Each envelope holds one slot of the tenant's budget (:mod:`syncer.graph.budget`) for its round trip, the budget
that sync passes draw on too when both run in one process (the worker's reconcile job, ``syncer run``): the
passes keep three quarters of it however many subscriptions a reconcile creates or renews, and a 429 on an
envelope or on any of its items shrinks and pauses the budget for both."""


def envelopes_in_flight(graph: GraphClient) -> int:
    """How many ``$batch`` envelopes reconcile sends at once for *graph*'s tenant (see :data:`RECONCILE_SHARE`)."""
    return max(1, graph.max_in_flight_per_tenant // RECONCILE_SHARE)


def send_all(
    graph: GraphClient,
    count: int,
    make: Callable[[int], BatchRequest],
    handle: Callable[[int, list[BatchResult]], None],
) -> None:
    """Send requests ``make(0) .. make(count - 1)``: few as plain calls, more in envelopes of 20, a few at a time.

    A request is built only when its envelope goes out, and ``handle(first_index, results)`` runs in this thread
    as each envelope comes back, so memory holds a few envelopes whatever *count* is and each result can be
    recorded before the next envelope is even sent. A failure of an envelope itself (after the client's retries)
    becomes the error of each of its items, so one bad envelope is reported per subscription instead of aborting
    the whole apply.
    """
    if count <= 0:
        return
    if count < BATCH_MIN:
        handle(0, [_call(graph, make(i)) for i in range(count)])
        return
    starts = iter(range(0, count, BATCH_SIZE))
    running: dict[Future[list[BatchResult]], int] = {}
    with ThreadPoolExecutor(max_workers=envelopes_in_flight(graph), thread_name_prefix="reconcile-batch") as pool:

        def submit_next() -> None:
            first = next(starts, None)
            if first is not None:
                chunk = [make(i) for i in range(first, min(first + BATCH_SIZE, count))]
                running[pool.submit(_envelope, graph, chunk)] = first

        for _ in range(envelopes_in_flight(graph)):
            submit_next()
        while running:
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                first = running.pop(future)
                submit_next()  # before the bookkeeping: the next envelope travels while we write
                handle(first, future.result())


def run(graph: GraphClient, requests: list[BatchRequest]) -> list[BatchResult]:
    """Send *requests* (:func:`send_all`); one result per request, in order."""
    results: list[BatchResult | None] = [None] * len(requests)

    def keep(first: int, chunk: list[BatchResult]) -> None:
        results[first : first + len(chunk)] = chunk

    send_all(graph, len(requests), requests.__getitem__, keep)
    return [r for r in results if r is not None]


def _envelope(graph: GraphClient, chunk: list[BatchRequest]) -> list[BatchResult]:
    try:
        return graph.batch(chunk)
    except GraphError as error:
        return [
            BatchResult(item.id or str(i), error.status or 0, error=error) for i, item in enumerate(chunk, 1)
        ]


def _call(graph: GraphClient, item: BatchRequest) -> BatchResult:
    try:
        response = graph.request(item.method, item.url, json=item.body, idempotent=item.idempotent)
    except GraphError as error:
        return BatchResult(item.id or "1", error.status or 0, error=error)
    body = response.json() if response.content else None
    return BatchResult(item.id or "1", response.status, dict(response.headers), body)
