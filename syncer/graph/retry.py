"""When to try a Graph call again, and how long to wait: Graph's throttling guidance as a pure policy.

Rules (https://learn.microsoft.com/en-us/graph/throttling and https://learn.microsoft.com/en-us/graph/errors, and what we decided where the docs are silent):

* Whether a failure is worth repeating is the error's own ``retryable`` flag (429, 500/502/503/504/509,
  transport failures). 400, 401 (handled separately: one token refresh), 403, 404, 409, 410 never are.
* A call that may have changed something is only repeated when that cannot do harm. GET, HEAD,
  OPTIONS, PUT and DELETE are idempotent by HTTP's definition; POST and PATCH are not unless the
  caller says so (``idempotent=True``, e.g. a PATCH that sets an absolute expiration). A non-idempotent
  call is still repeated when the failure proves the server did not act on it:

  - :class:`~syncer.errors.ConnectError`: the connection was never made, nothing was sent;
  - 429: Graph throttles *before* executing the request ("throttled calls still count" against the
    limit, but are not performed) [inference from the throttling page];
  - 503: the service is unavailable/overloaded and did not take the request [inference].

  A read timeout, a reset after sending, 500, 502 and 504 may all come after the server acted, so a
  non-idempotent call is not repeated on them: the caller gets the error and decides (e.g. reconcile
  lists subscriptions again before creating one).
* The wait is ``Retry-After`` when the server sent one (seconds or HTTP date), else capped
  exponential backoff with "equal jitter" (half fixed, half random), so a retry is never immediate.
* Every call has a budget: attempts and seconds. When the next wait would overrun it, the call
  fails at once with :class:`~syncer.errors.RetryBudgetExhausted` instead of sleeping in vain.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from syncer.errors import (
    ConnectError,
    GraphError,
    RetryBudgetExhausted,
    ThrottledError,
    mask_secrets,
    truncate,
)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one call. All times in seconds."""

    max_attempts: int = 6
    """Attempts in total, the first included (1 = never retry)."""
    max_elapsed: float = 120.0
    """Wall time from the first attempt after which no new attempt starts (waits included)."""
    backoff_base: float = 0.5
    """First backoff when the server gave no Retry-After; doubles on each further retry."""
    backoff_max: float = 30.0
    """Ceiling of one backoff wait."""
    max_retry_after: float = 300.0
    """A Retry-After longer than this is not waited for: the call fails with RetryBudgetExhausted."""
    min_retry_after: float = 0.0
    """Floor under Retry-After (some proxies send 0; Graph says never to retry immediately)."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, found {self.max_attempts}")
        if self.max_elapsed < 0 or self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("RetryPolicy times must not be negative")

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The wait before retry number *retry_number* (1-based) when the server said nothing."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** max(retry_number - 1, 0))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)

    def wait_for(self, error: GraphError, retry_number: int, rng: random.Random | None = None) -> float:
        """How long to wait after *error* before retry number *retry_number*."""
        if error.retry_after is not None:
            return max(error.retry_after, self.min_retry_after)
        return self.backoff(retry_number, rng)


NO_RETRY = RetryPolicy(max_attempts=1)


def is_idempotent(method: str, idempotent: bool | None = None) -> bool:
    """Whether repeating *method* cannot do harm; an explicit *idempotent* from the caller wins."""
    if idempotent is not None:
        return idempotent
    return method.upper() in IDEMPOTENT_METHODS


def may_retry(error: GraphError, *, idempotent: bool) -> bool:
    """Whether *error* allows another attempt of a call that is (or is not) *idempotent*."""
    if not error.retryable:
        return False
    if idempotent:
        return True
    # Not idempotent: only when the failure proves the server did not act (module docstring).
    return isinstance(error, (ConnectError, ThrottledError)) or error.status == 503


@dataclass
class RetryState:
    """The budget of one call: counts attempts and time, and says how long to wait (or gives up)."""

    policy: RetryPolicy
    what: str = "Graph call"
    clock: Callable[[], float] = time.monotonic
    rng: random.Random | None = None
    started: float = field(init=False)
    attempts: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def begin_attempt(self) -> int:
        """Record that an attempt starts; returns its 1-based number."""
        self.attempts += 1
        return self.attempts

    @property
    def elapsed(self) -> float:
        """Seconds since the call started."""
        return self.clock() - self.started

    def next_wait(self, error: GraphError, *, idempotent: bool) -> float:
        """The wait before the next attempt after *error*; raises *error* or RetryBudgetExhausted if there is none."""
        if not may_retry(error, idempotent=idempotent):
            raise error
        wait = self.policy.wait_for(error, self.attempts, self.rng)
        exhausted = self.exhausted_by(error, wait)
        if exhausted is not None:
            raise exhausted from error
        return wait

    def exhausted_by(self, error: GraphError, wait: float) -> RetryBudgetExhausted | None:
        """The RetryBudgetExhausted to raise if waiting *wait* after *error* would overrun the budget, else None."""
        if self.attempts >= self.policy.max_attempts:
            reason = f"{self.what}: retry budget of {self.policy.max_attempts} attempts used"
        elif error.retry_after is not None and error.retry_after > self.policy.max_retry_after:
            reason = f"{self.what}: Retry-After {error.retry_after:g}s exceeds the {self.policy.max_retry_after:g}s we wait at most"
        elif self.elapsed + wait > self.policy.max_elapsed:
            reason = f"{self.what}: retry budget of {self.policy.max_elapsed:g}s would be overrun"
        else:
            return None
        return RetryBudgetExhausted(reason, last_error=error, attempts=self.attempts, elapsed=self.elapsed)


_LONG_SEGMENT = 40


def where(url: str | None) -> str:
    """Where a call went, for a log line: the URL's path, without host, query (tokens, long
    ``$select``) or the bulk of long ids (Outlook's are ~150 characters); ``'Graph'`` if unknown."""
    if not url:
        return "Graph"
    path = mask_secrets(urlsplit(url).path) or "/"
    parts = [p if len(p) <= _LONG_SEGMENT else f"{p[:12]}..." for p in path.split("/")]
    return "/".join(parts)


def retry_line(error: GraphError, attempt: int, wait: float) -> str:
    """One short line for a retry: what Graph answered, to which call, how long we wait.

    The full error (request ids, Graph's message) stays in the exception and the DEBUG log; a
    throttled sync retries many pages, and each warning used to carry the whole masked URL.
    """
    call = f"{error.method} {where(error.url)}" if error.method else where(error.url)
    return f"Graph: {answer(error)} on {call}; retrying in {wait:.1f}s (attempt {attempt})"


def answer(error: GraphError) -> str:
    """What Graph answered, in a few words: ``429 TooManyRequests``, or the transport failure."""
    if error.status is not None:
        return f"{error.status} {error.code}" if error.code else f"HTTP {error.status}"
    return truncate(error.graph_message, 80)

