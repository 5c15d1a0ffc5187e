"""A tenant's budget of requests in flight, shared by every thread, that shrinks when Graph throttles.

Graph throttles per app and per tenant, not per request: once one call gets 429, the calls the other
threads are about to send will mostly get 429 too, and each of them still counts against the limit
(https://learn.microsoft.com/en-us/graph/throttling). Retrying only the refused call, while 15 other
threads keep sending, keeps the tenant over its limit. So a 429 slows the whole tenant:

* **pause**: no new request of the tenant starts before the Retry-After the server sent (a request
  already in flight finishes);
* **shrink**: the number allowed in flight is halved (at least 1), then grows back by one after as
  many successes as the current size (additive increase, multiplicative decrease, as TCP does), up to
  the configured cap.

Pure bookkeeping behind one condition variable; time comes from an injectable clock for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TenantBudget:
    """At most ``limit`` requests in flight for one tenant, fewer after 429s (see the module docstring)."""

    def __init__(self, cap: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if cap < 1:
            raise ValueError(f"a tenant's in-flight cap must be >= 1, found {cap}")
        self.cap = cap
        self.limit = cap
        """How many requests may be in flight now (the cap, or less after 429s)."""
        self.in_flight = 0
        self.paused_until = 0.0
        self.throttles = 0
        """429s reported so far (diagnostics)."""
        self._successes = 0
        self._clock = clock
        self._cond = threading.Condition()

    def acquire(self) -> None:
        """Wait for a slot: fewer than :attr:`limit` in flight and no pause running."""
        with self._cond:
            while True:
                wait = self.paused_until - self._clock()
                if wait <= 0 and self.in_flight < self.limit:
                    self.in_flight += 1
                    return
                self._cond.wait(timeout=wait if wait > 0 else None)

    def release(self) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify()

    def __enter__(self) -> TenantBudget:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def throttled(self, retry_after: float | None) -> None:
        """A request of this tenant got 429: halve the budget and pause new requests for *retry_after*."""
        with self._cond:
            self.throttles += 1
            self.limit = max(1, self.limit // 2)
            self._successes = 0
            if retry_after:
                self.paused_until = max(self.paused_until, self._clock() + retry_after)

    def succeeded(self) -> None:
        """A request went through: after ``limit`` of them in a row, allow one more in flight."""
        if self.limit >= self.cap:
            return  # the common case, without the lock
        with self._cond:
            self._successes += 1
            if self._successes >= self.limit:
                self._successes = 0
                self.limit = min(self.cap, self.limit + 1)
                self._cond.notify()
