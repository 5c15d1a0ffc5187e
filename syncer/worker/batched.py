"""A drain's reads by id sent as JSON ``$batch`` envelopes: one request in flight carries up to 20 reads.

A basic notification of a whole mailbox's message or contact is read by id (:mod:`syncer.worker.notified`), one
GET each. Graph's answer takes ~100 ms, and the tenant's in-flight limit (``concurrency``, 16 by default) then
caps a drain at ~160 reads/s, under a tenant's 200 notifications/s. Graph's JSON batching
(https://learn.microsoft.com/en-us/graph/json-batching) carries up to 20 requests in one HTTP call, answered
together, each item with its own status: so the drain sends its reads 20 to an envelope, each envelope one of
the tenant's slots (:meth:`syncer.graph.client.GraphClient.batch`, which resends the items answered 429 or 5xx
after their Retry-After, and lets their 429s slow the tenant: :mod:`syncer.graph.budget`).

Each item's answer is handled as a single read's (:func:`syncer.worker.rich.as_read`): 200 the item, 404 a
removal, any other failure that item's fallback (its mailbox's scopes are marked dirty), the others written.

Graph runs a batch's items side by side, and Outlook allows 4 concurrent requests per app and mailbox
(https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits), items included: a fifth is
answered 429. So an envelope holds one of its mailbox's slots per item, beside the passes' calls to that mailbox
(:func:`syncer.graph.limits.slots`), and the reads go in waves holding at most 4 of any one mailbox, the
envelopes of a wave side by side, the next wave when they are answered. A drain has rarely more than one wave:
more notified items of one mailbox than it has folders are not read at all (one pass per folder is fewer
requests). A drain with one or two reads of a tenant reads them one request each, as before: an envelope would
take the same slot and add the envelope's own parsing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, as_completed, wait
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sqlalchemy.engine import Engine

from syncer.errors import GraphError, NotFoundError
from syncer.graph import limits
from syncer.graph.batch import MAX_BATCH, BatchRequest, BatchResult
from syncer.graph.retry import RetryPolicy
from syncer.worker import rich
from syncer.worker.scopes import Scope, ScopeIndex
from syncer.worker.sync import PageSource

__all__ = ["MIN_BATCH", "PER_MAILBOX", "BatchSource", "read_all", "waves"]

#: Fewer reads of a tenant than this in one drain are read one request each (an envelope would save nothing).
MIN_BATCH = 3
#: Outlook's concurrent requests per app and mailbox: reads of one mailbox in flight at once, envelopes included.
PER_MAILBOX = 4


@runtime_checkable
class BatchSource(PageSource, Protocol):
    """A page source that also sends ``$batch`` envelopes (GraphClient)."""

    def batch(self, requests: Iterable[BatchRequest], *, retry: RetryPolicy | None = None) -> list[BatchResult]: ...


@dataclass(frozen=True)
class _Read:
    reading: int  # which Reading (its position) the item is read for
    change: rich.Change
    path: str


def waves(reads: Sequence[_Read], *, envelope: int = MAX_BATCH, per_mailbox: int = PER_MAILBOX) -> list[list[list[_Read]]]:
    """*reads* in envelopes of at most *envelope*, grouped in waves that hold at most *per_mailbox* reads of any
    one mailbox (a wave's envelopes are sent side by side; the next wave once they are answered)."""
    by_mailbox: dict[str | None, list[_Read]] = {}
    for read in reads:
        by_mailbox.setdefault(limits.mailbox_of("/" + read.path), []).append(read)
    out: list[list[list[_Read]]] = []
    for depth in range(0, max((len(group) for group in by_mailbox.values()), default=0), per_mailbox):
        wave = [read for group in by_mailbox.values() for read in group[depth : depth + per_mailbox]]
        out.append([wave[start : start + envelope] for start in range(0, len(wave), envelope)])
    return out


def read_all(engine: Engine, index: ScopeIndex, sources: Mapping[str, PageSource],
             targets: Sequence[tuple[Scope, Sequence[rich.Change]]], pool: Executor) -> Iterator[rich.Reading]:
    """Each target's :class:`~syncer.worker.rich.Reading`, as :func:`~syncer.worker.rich.read_notified` makes it,
    yielded as they are ready: the reads of a tenant with :data:`MIN_BATCH` or more in envelopes on *pool*, the
    others one request each on *pool*. Database errors are raised."""
    readings = [rich.plan_notified(engine, target, changes) for target, changes in targets]
    by_tenant: dict[str, list[_Read]] = {}
    for position, reading in enumerate(readings):
        for change in rich.reads_of(reading).values():
            by_tenant.setdefault(reading.target.tenant_id, []).append(
                _Read(position, change, rich.read_path(reading.target, change)))
    enveloped = {tenant: reads for tenant, reads in by_tenant.items()
                 if len(reads) >= MIN_BATCH and isinstance(sources[tenant], BatchSource)}
    batched = {read.reading for reads in enveloped.values() for read in reads}
    pending: list[Future[rich.Reading]] = [pool.submit(rich.read_planned, engine, index, sources, reading)
                                           for position, reading in enumerate(readings) if position not in batched]
    found: dict[int, dict[str, rich.Change | Exception]] = {position: {} for position in batched}
    planned = {tenant: waves(reads) for tenant, reads in enveloped.items()}
    for depth in range(max((len(w) for w in planned.values()), default=0)):
        sent = {pool.submit(_send, sources[tenant], envelope): envelope
                for tenant, tenant_waves in planned.items() if depth < len(tenant_waves)
                for envelope in tenant_waves[depth]}
        wait(sent)
        for answered, envelope in sent.items():
            for read, outcome in zip(envelope, _outcomes(answered, len(envelope)), strict=True):
                target = readings[read.reading].target
                found[read.reading][read.change.item_id] = (
                    outcome if isinstance(outcome, Exception) else rich.as_read(target, read.change, outcome))
    pending += [pool.submit(rich.finish_notified, engine, index, readings[position], read)
                for position, read in found.items()]
    for future in as_completed(pending):
        yield future.result()


def _send(source: PageSource, envelope: list[_Read]) -> list[BatchResult]:
    assert isinstance(source, BatchSource)
    return source.batch([BatchRequest("GET", read.path, id=str(n)) for n, read in enumerate(envelope, start=1)])


def _outcomes(future: Future[list[BatchResult]], count: int) -> list[object | Exception]:
    """Each item's body (None for a 404: a removal), or its error; every item's error when the envelope failed."""
    error = future.exception()
    if error is not None:
        return [error if isinstance(error, Exception) else GraphError(str(error))] * count
    out: list[object | Exception] = []
    for result in future.result():
        if isinstance(result.error, NotFoundError):
            out.append(None)
        elif result.error is not None or not result.ok:
            out.append(result.error or GraphError(f"$batch item answered {result.status}"))
        else:
            out.append(result.body)
    return out
