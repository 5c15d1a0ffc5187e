"""Caps on requests in flight, per tenant and per mailbox, shared by every thread of the process.

Graph throttles per tenant and per app, and Outlook allows 4 concurrent requests per app and
mailbox (notes §7). A scheduler with many worker threads must stay under those caps whatever the
number of GraphClient objects, so the semaphores live in a module-level registry keyed by
``(tenant, mailbox, size)``: two clients of the same tenant share them. The size is part of the key
so that a client configured with another cap gets its own (configuration is per process, so in
practice all clients agree and share).

A slot is held for one HTTP exchange only, never while sleeping before a retry.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_REGISTRY: dict[tuple[str, str | None, int], threading.BoundedSemaphore] = {}
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


def semaphore(tenant: str, mailbox: str | None, size: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore for *tenant* (mailbox None) or for one mailbox of it."""
    key = (tenant.lower(), mailbox, size)
    found = _REGISTRY.get(key)
    if found is not None:
        return found
    with _REGISTRY_LOCK:
        return _REGISTRY.setdefault(key, threading.BoundedSemaphore(size))


@contextmanager
def slot(tenant: str, mailbox: str | None, *, per_tenant: int, per_mailbox: int) -> Iterator[None]:
    """Hold one in-flight slot for *tenant* (and for *mailbox* when given) for the duration of a request.

    The mailbox slot is taken first: a thread waiting for a busy mailbox then does not sit on a
    tenant slot that calls to other mailboxes could use. Holders of a mailbox slot wait only for the
    tenant slot, whose holders wait for nothing, so there is no cycle.
    """
    mailbox_sem = semaphore(tenant, mailbox, per_mailbox) if mailbox else None
    tenant_sem = semaphore(tenant, None, per_tenant)
    if mailbox_sem is not None:
        mailbox_sem.acquire()
    try:
        tenant_sem.acquire()
        try:
            yield
        finally:
            tenant_sem.release()
    finally:
        if mailbox_sem is not None:
            mailbox_sem.release()
