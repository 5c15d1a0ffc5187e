"""Caps on requests in flight, per tenant and per mailbox, shared by every thread of the process.

Graph throttles per tenant and per app, and Outlook allows 4 concurrent requests per app and
mailbox (https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits). A scheduler with many worker threads must stay under those caps whatever the
number of GraphClient objects, so the counts live in module-level registries keyed by
``(tenant, mailbox, size)``: two clients of the same tenant share them. The size is part of the key
so that a client configured with another cap gets its own (configuration is per process, so in
practice all clients agree and share).

A slot is held for one HTTP exchange only, never while sleeping before a retry. The tenant's slots
are a :class:`~syncer.graph.budget.TenantBudget`: a 429 pauses and shrinks them for every thread.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from syncer.graph.budget import TenantBudget

_TENANTS: dict[tuple[str, int], TenantBudget] = {}
_REGISTRY_LOCK = threading.Lock()
# Requests in flight per (tenant, mailbox, cap); a mailbox with none has no entry: a sync over 100k mailboxes
# keeps no state for the idle ones. Every change is made under the condition, which a release notifies.
_IN_FLIGHT: dict[tuple[str, str, int], int] = {}
_MAILBOX_FREED = threading.Condition(threading.Lock())

# /users/{id-or-upn}/<anything>: a call inside one user's mailbox, drive, calendar, To Do...
# "/users/delta" and "/users/{id}" alone are directory calls, not mailbox calls.
_MAILBOX = re.compile(r"/users/([^/?#()]+)/[^?#]", re.IGNORECASE)
_MAILBOX_PAREN = re.compile(r"/users\('([^']+)'\)/[^?#]", re.IGNORECASE)


def mailbox_of(url: str) -> str | None:
    """The mailbox (user id or UPN, lower-case) a Graph URL works in, or None for a tenant-wide call."""
    match = _MAILBOX.search(url) or _MAILBOX_PAREN.search(url)
    if match is None:
        return None
    user = match.group(1).lower()
    return None if user == "delta" else user


def tenant_semaphore(tenant: str, size: int) -> TenantBudget:
    """The process-wide budget capping requests in flight for *tenant*."""
    key = (tenant.lower(), size)
    found = _TENANTS.get(key)
    if found is not None:
        return found
    with _REGISTRY_LOCK:
        return _TENANTS.setdefault(key, TenantBudget(size))


def reset_budgets() -> None:
    """Forget every tenant's budget (tests: a 429 of one test must not pause the next one)."""
    with _REGISTRY_LOCK:
        _TENANTS.clear()


def _take(tenant: str, wanted: Mapping[str, int], cap: int) -> list[tuple[tuple[str, str, int], int]]:
    """Wait until every mailbox of *wanted* has room for its count, then take them all at once."""
    keys = [((tenant.lower(), mailbox, cap), min(count, cap)) for mailbox, count in wanted.items()]
    with _MAILBOX_FREED:
        while any(_IN_FLIGHT.get(key, 0) + count > cap for key, count in keys):
            _MAILBOX_FREED.wait()
        for key, count in keys:
            _IN_FLIGHT[key] = _IN_FLIGHT.get(key, 0) + count
    return keys


def _give_back(keys: list[tuple[tuple[str, str, int], int]]) -> None:
    with _MAILBOX_FREED:
        for key, count in keys:
            left = _IN_FLIGHT[key] - count
            if left:
                _IN_FLIGHT[key] = left
            else:
                del _IN_FLIGHT[key]
        _MAILBOX_FREED.notify_all()


def mailboxes_tracked() -> int:
    """How many mailboxes have requests in flight now (for tests and diagnostics)."""
    return len(_IN_FLIGHT)


@contextmanager
def slot(tenant: str, mailbox: str | None, *, per_tenant: int, per_mailbox: int) -> Iterator[TenantBudget]:
    """Hold one in-flight slot for *tenant* (and for *mailbox* when given) for the duration of a request."""
    with slots(tenant, {mailbox: 1} if mailbox else {}, per_tenant=per_tenant, per_mailbox=per_mailbox) as budget:
        yield budget


@contextmanager
def slots(tenant: str, mailboxes: Mapping[str, int], *, per_tenant: int, per_mailbox: int) -> Iterator[TenantBudget]:
    """Hold one in-flight slot for *tenant*, and *mailboxes*' count of slots of each, for the duration of a request.

    A ``$batch`` envelope whose items work in mailboxes holds a slot per item: Graph runs the items side by side,
    each one of its mailbox's 4 concurrent requests (a count above the cap holds the cap: Graph answers the rest
    429). The mailbox slots are taken first, all at once when every mailbox has room: a caller never holds some
    while it waits for others, so two envelopes cannot each hold what the other waits for, and an envelope waiting
    for one busy mailbox keeps no slot of the others idle. Nor does it sit on a tenant slot that calls to other
    mailboxes could use; the tenant slot's holders wait for nothing.
    """
    tenant_sem = tenant_semaphore(tenant, per_tenant)
    taken = _take(tenant, mailboxes, per_mailbox) if mailboxes else []
    try:
        with tenant_sem:
            yield tenant_sem
    finally:
        if taken:
            _give_back(taken)
