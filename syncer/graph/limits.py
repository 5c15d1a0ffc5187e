"""Caps on requests in flight, per tenant and per mailbox, shared by every thread of the process.

Graph throttles per tenant and per app, and Outlook allows 4 concurrent requests per app and
mailbox (https://learn.microsoft.com/en-us/graph/throttling-limits#outlook-service-limits). A scheduler with many worker threads must stay under those caps whatever the
number of GraphClient objects, so the semaphores live in a module-level registry keyed by
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
from typing import Any

from syncer.graph.budget import TenantBudget

_TENANTS: dict[tuple[str, int], TenantBudget] = {}
# Mailbox semaphores are counted and dropped when idle: a sync over 100k mailboxes must not keep
# 100k semaphores alive. Entry: [semaphore, threads holding or waiting for it].
_MAILBOXES: dict[tuple[str, str, int], list[Any]] = {}
_REGISTRY_LOCK = threading.Lock()

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


def _enter_mailbox(tenant: str, mailbox: str, size: int) -> tuple[tuple[str, str, int], list[Any]]:
    """The registry entry of *mailbox* ``[semaphore, users, lock of multi-slot takers]``, counted as used."""
    key = (tenant.lower(), mailbox, size)
    with _REGISTRY_LOCK:
        entry = _MAILBOXES.get(key)
        if entry is None:
            entry = _MAILBOXES[key] = [threading.BoundedSemaphore(size), 0, threading.Lock()]
        entry[1] += 1
        return key, entry


def _leave_mailbox(key: tuple[str, str, int]) -> None:
    with _REGISTRY_LOCK:
        entry = _MAILBOXES[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _MAILBOXES[key]


def mailboxes_tracked() -> int:
    """How many mailbox semaphores exist now (only those in use: for tests and diagnostics)."""
    return len(_MAILBOXES)


@contextmanager
def slot(tenant: str, mailbox: str | None, *, per_tenant: int, per_mailbox: int) -> Iterator[TenantBudget]:
    """Hold one in-flight slot for *tenant* (and for *mailbox* when given) for the duration of a request."""
    with slots(tenant, {mailbox: 1} if mailbox else {}, per_tenant=per_tenant, per_mailbox=per_mailbox) as budget:
        yield budget


@contextmanager
def slots(tenant: str, mailboxes: Mapping[str, int], *, per_tenant: int, per_mailbox: int) -> Iterator[TenantBudget]:
    """Hold one in-flight slot for *tenant*, and *mailboxes*' count of slots of each, for the duration of a request.

    A ``$batch`` envelope whose items work in mailboxes holds a slot per item: Graph runs the items side by side,
    each one of its mailbox's 4 concurrent requests. The mailbox slots are taken first: a thread waiting for a
    busy mailbox then does not sit on a tenant slot that calls to other mailboxes could use. A single call holds
    one mailbox slot and then waits only for the tenant slot, whose holders wait for nothing. A taker of several
    takes its mailboxes in one order (sorted), and several slots of one mailbox under that mailbox's lock of
    multi-slot takers, so two envelopes never each hold part of what the other waits for: there is no cycle.
    """
    tenant_sem = tenant_semaphore(tenant, per_tenant)
    entered: list[tuple[str, str, int]] = []
    held: list[threading.BoundedSemaphore] = []
    try:
        for mailbox in sorted(mailboxes):
            count = min(mailboxes[mailbox], per_mailbox)  # more never fit: Graph answers the rest 429
            key, (semaphore, _users, takers) = _enter_mailbox(tenant, mailbox, per_mailbox)
            entered.append(key)
            if count == 1:
                semaphore.acquire()
                held.append(semaphore)
                continue
            with takers:
                for _ in range(count):
                    semaphore.acquire()
                    held.append(semaphore)
        with tenant_sem:
            yield tenant_sem
    finally:
        for semaphore in reversed(held):
            semaphore.release()
        for key in entered:
            _leave_mailbox(key)
