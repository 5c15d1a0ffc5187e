"""When the emulator sends, retries, delays or drops a notification: Graph's delivery rules as pure values
(https://learn.microsoft.com/graph/change-notifications-delivery-webhooks).

The dispatcher in :mod:`syncer.emulator.delivery` does the I/O; every decision it takes comes from here, so the rules
can be tested without a server and compressed for tests through :class:`RetryRules` and :class:`ThrottleRules`
(which are the dispatcher's configuration, carried by ``EmulatorConfig``). Times are float seconds on the emulator
clock (``clock.now().timestamp()``), so advancing that clock moves retries and throttling windows too.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

EndpointMode = Literal["normal", "slow", "drop"]
LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


@dataclass(frozen=True)
class RetryRules:
    """How long a POST may take and how failed POSTs are retried (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks).

    Graph documents the 3-s budget, the 10-s timeout of retries and the 4-h window; the backoff schedule itself is
    undocumented, so the initial delay, factor and cap are guesses (double from one minute, capped at an hour).
    """

    first_timeout_s: float = 3.0
    retry_timeout_s: float = 10.0
    window_s: float = 4 * 3600.0
    initial_backoff_s: float = 60.0
    backoff_factor: float = 2.0
    max_backoff_s: float = 3600.0


@dataclass(frozen=True)
class ThrottleRules:
    """Graph's slow/drop endpoint rules (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks, current text), every threshold adjustable.

    An endpoint turns *slow* when more than ``slow_ratio`` of the responses in a window took longer than
    ``slow_response_s``: new notifications are then held back ``slow_delay_s``. It turns *drop* when more than
    ``drop_ratio`` took longer than ``drop_response_s``: new notifications are discarded for ``drop_duration_s``.
    ``min_samples`` is how many responses a window needs before it is judged (the 2023 text said 100; the current
    one says "a small sample").
    """

    window_s: float = 600.0
    min_samples: int = 100
    slow_response_s: float = 3.0
    slow_ratio: float = 0.10
    slow_delay_s: float = 600.0
    drop_response_s: float = 10.0
    drop_ratio: float = 0.15
    drop_duration_s: float = 600.0


def attempt_timeout(rules: RetryRules, attempt: int) -> float:
    """The HTTP timeout of attempt number *attempt* (1 = the first POST of a batch)."""
    return rules.first_timeout_s if attempt <= 1 else rules.retry_timeout_s


def backoff_delay(rules: RetryRules, attempts_made: int) -> float:
    """Seconds to wait after the *attempts_made*-th failed attempt: exponential, capped."""
    exponent = max(attempts_made - 1, 0)
    return float(min(rules.initial_backoff_s * rules.backoff_factor**exponent, rules.max_backoff_s))


def next_retry_at(rules: RetryRules, *, first_attempt_at: float, attempts_made: int, now: float) -> float | None:
    """When to try a failed batch again, or ``None`` once the retry window is spent (the batch is then dropped)."""
    due = now + backoff_delay(rules, attempts_made)
    if due > first_attempt_at + rules.window_s:
        return None
    return due


def retry_schedule(rules: RetryRules) -> list[float]:
    """Offsets from the first attempt of every retry, assuming each attempt fails instantly (for docs and tests)."""
    offsets: list[float] = []
    now, attempts = 0.0, 1
    while (due := next_retry_at(rules, first_attempt_at=0.0, attempts_made=attempts, now=now)) is not None:
        offsets.append(due)
        now, attempts = due, attempts + 1
    return offsets


@dataclass
class EndpointHealth:
    """Window accounting of one notification URL's response times, deciding its mode (normal, slow, drop).

    Windows are tumbling (the 2023 text: "counters reset every 10 minutes"). When a window with enough samples crosses
    a threshold the endpoint enters that mode for its duration; every response that keeps the window over the
    threshold extends it, so the endpoint is normal again only after a duration in which its window stayed under
    (our reading of "re-evaluated ... leaves when below the threshold"). Drop outranks slow.
    """

    rules: ThrottleRules
    window_start: float = 0.0
    total: int = 0
    slow: int = 0
    very_slow: int = 0
    mode: EndpointMode = "normal"
    mode_until: float = 0.0
    times_slow: int = 0
    times_dropping: int = 0

    def record(self, now: float, *, elapsed_s: float, timed_out: bool, timeout_s: float) -> None:
        """Account one attempt's response time (a timeout counts as taking the whole timeout)."""
        self._roll(now)
        self.total += 1
        # A first attempt that times out has exceeded the 3-s allowance but not the 10-s one: only a retry (with its
        # 10-s timeout) can time out past the drop threshold.
        if timed_out or elapsed_s > self.rules.slow_response_s:
            self.slow += 1
        if elapsed_s > self.rules.drop_response_s or (timed_out and timeout_s >= self.rules.drop_response_s):
            self.very_slow += 1
        if self.total < self.rules.min_samples:
            return
        if self.very_slow / self.total > self.rules.drop_ratio:
            self._enter("drop", now, self.rules.drop_duration_s)
        elif self.slow / self.total > self.rules.slow_ratio and self.current_mode(now) != "drop":
            self._enter("slow", now, self.rules.slow_delay_s)

    def current_mode(self, now: float) -> EndpointMode:
        """The endpoint's mode at *now*; a mode whose duration has passed ends here."""
        if self.mode != "normal" and now >= self.mode_until:
            self.mode = "normal"
        return self.mode

    def snapshot(self, now: float) -> dict[str, Any]:
        """What the admin API reports about this endpoint."""
        return {
            "mode": self.current_mode(now),
            "mode_until": self.mode_until if self.mode != "normal" else None,
            "window": {"start": self.window_start, "responses": self.total, "slow": self.slow, "very_slow": self.very_slow},
            "times_slow": self.times_slow,
            "times_dropping": self.times_dropping,
        }

    def _roll(self, now: float) -> None:
        if now - self.window_start >= self.rules.window_s or now < self.window_start:
            self._reset(now)

    def _reset(self, now: float) -> None:
        self.window_start, self.total, self.slow, self.very_slow = now, 0, 0, 0

    def _enter(self, mode: EndpointMode, now: float, duration: float) -> None:
        # Crossing the threshold again while in the mode extends it: the endpoint leaves only once a window's
        # ratio is back under the threshold for the whole duration.
        if self.current_mode(now) != mode:
            if mode == "drop":
                self.times_dropping += 1
            else:
                self.times_slow += 1
            self.mode_until = 0.0
        self.mode, self.mode_until = mode, max(self.mode_until, now + duration)


T = TypeVar("T")


@dataclass
class DueQueue(Generic[T]):
    """Items waiting for their due time, taken in (due, arrival) order in batches of one kind.

    A heap rather than a FIFO because delays (slow endpoints, injected delay/reorder faults) make due times
    non-monotonic; the arrival counter keeps equal due times in arrival order.
    """

    _heap: list[tuple[float, int, str, T]] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=itertools.count)

    def push(self, item: T, *, due: float, kind: str) -> None:
        heapq.heappush(self._heap, (due, next(self._counter), kind, item))

    def __len__(self) -> int:
        return len(self._heap)

    def next_due(self) -> float | None:
        """The earliest due time, or ``None`` when empty."""
        return self._heap[0][0] if self._heap else None

    def take_batch(self, now: float, max_items: int) -> tuple[str, list[T]]:
        """Pop up to *max_items* due items of the same kind as the first due one ("" and [] when none is due)."""
        if not self._heap or self._heap[0][0] > now:
            return "", []
        kind = self._heap[0][2]
        batch: list[T] = []
        while self._heap and len(batch) < max_items and self._heap[0][0] <= now and self._heap[0][2] == kind:
            batch.append(heapq.heappop(self._heap)[3])
        return kind, batch

    def drain(self) -> list[T]:
        """Remove and return everything (used when an endpoint is forgotten)."""
        items = [entry[3] for entry in sorted(self._heap)]
        self._heap.clear()
        return items


@dataclass
class NotificationFaults:
    """Rates (0..1) of injected notification faults, drawn from the dispatcher's seeded RNG."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    #: How long a delayed notification is held (emulator seconds).
    delay_s: float = 5.0
    #: How long a reordered notification is held back, so that later ones overtake it.
    reorder_s: float = 0.2

    def to_json(self) -> dict[str, float]:
        """Admin rendering."""
        return {
            "drop": self.drop, "duplicate": self.duplicate, "reorder": self.reorder, "delay": self.delay,
            "delaySeconds": self.delay_s, "reorderSeconds": self.reorder_s,
        }
