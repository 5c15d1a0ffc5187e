"""Notification delivery of the emulator: the pure policy (backoff, slow/drop windows, batching) and, over real
HTTP, the dispatcher against a tiny receiver."""

from __future__ import annotations

import pytest

from syncer.emulator.delivery_policy import (
    DueQueue,
    EndpointHealth,
    RetryRules,
    ThrottleRules,
    attempt_timeout,
    backoff_delay,
    next_retry_at,
    retry_schedule,
)

# ---------------------------------------------------------------------------------------------------------------
# pure policy


def test_default_retry_rules_follow_graph() -> None:
    rules = RetryRules()
    assert attempt_timeout(rules, 1) == 3.0
    assert attempt_timeout(rules, 2) == attempt_timeout(rules, 7) == 10.0
    schedule = retry_schedule(rules)
    assert schedule[:3] == [60.0, 180.0, 420.0]  # 1, 2, 4 minutes apart
    assert schedule[-1] <= 4 * 3600 < schedule[-1] + rules.max_backoff_s
    gaps = [b - a for a, b in zip([0.0, *schedule], schedule, strict=False)]
    assert max(gaps) == rules.max_backoff_s


def test_backoff_is_exponential_and_capped() -> None:
    rules = RetryRules(initial_backoff_s=1, backoff_factor=3, max_backoff_s=20)
    assert [backoff_delay(rules, n) for n in range(1, 6)] == [1, 3, 9, 20, 20]


def test_retry_stops_at_the_window() -> None:
    rules = RetryRules(initial_backoff_s=1, backoff_factor=2, window_s=10)
    assert next_retry_at(rules, first_attempt_at=100, attempts_made=1, now=100.2) == pytest.approx(101.2)
    assert next_retry_at(rules, first_attempt_at=100, attempts_made=4, now=107) is None  # 107 + 8 > 110
    assert retry_schedule(rules) == [1, 3, 7]


def _health(**overrides: float) -> EndpointHealth:
    rules = ThrottleRules(**{"window_s": 600, "min_samples": 10, **overrides})  # type: ignore[arg-type]
    return EndpointHealth(rules)


def test_endpoint_turns_slow_above_ten_percent_and_recovers() -> None:
    health = _health()
    for i in range(9):
        health.record(float(i), elapsed_s=0.01, timed_out=False, timeout_s=3)
    health.record(9.0, elapsed_s=3.5, timed_out=False, timeout_s=3)  # 1/10 = 10%: not MORE than 10%
    assert health.current_mode(9.0) == "normal"
    health.record(10.0, elapsed_s=0.0, timed_out=True, timeout_s=3)  # 2/11 > 10%
    assert health.current_mode(10.0) == "slow"
    assert health.snapshot(10.0)["mode_until"] == 610.0
    assert health.current_mode(609.9) == "slow"
    assert health.current_mode(610.0) == "normal"
    assert health.times_slow == 1


def test_endpoint_turns_drop_above_fifteen_percent_of_ten_second_responses() -> None:
    health = _health()
    for i in range(8):
        health.record(float(i), elapsed_s=0.01, timed_out=False, timeout_s=3)
    # first-attempt timeouts (3 s) are slow but never "over 10 s"
    health.record(8.0, elapsed_s=3.0, timed_out=True, timeout_s=3)
    assert health.very_slow == 0
    health.record(9.0, elapsed_s=10.0, timed_out=True, timeout_s=10)
    health.record(10.0, elapsed_s=10.5, timed_out=False, timeout_s=10)
    assert health.current_mode(10.0) == "drop"
    assert health.times_dropping == 1
    assert health.current_mode(10.0 + 600) == "normal"


def test_window_needs_min_samples_and_rolls_over() -> None:
    health = _health()
    for i in range(9):
        health.record(float(i), elapsed_s=5, timed_out=False, timeout_s=3)
    assert health.current_mode(9.0) == "normal"  # 9 samples < 10
    health.record(700.0, elapsed_s=5, timed_out=False, timeout_s=3)  # new window: the old slow ones are forgotten
    assert health.total == 1
    assert health.current_mode(700.0) == "normal"


def test_thresholds_are_configurable() -> None:
    health = _health(slow_response_s=0.1, slow_ratio=0.5, slow_delay_s=5, min_samples=2)
    health.record(0, elapsed_s=0.2, timed_out=False, timeout_s=3)
    health.record(1, elapsed_s=0.0, timed_out=False, timeout_s=3)
    assert health.current_mode(1) == "normal"  # exactly 50%
    health.record(2, elapsed_s=0.2, timed_out=False, timeout_s=3)
    assert health.current_mode(2) == "slow"
    assert health.current_mode(7) == "normal"


def test_due_queue_batches_by_due_time_and_kind() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.push("a", due=1, kind="change")
    queue.push("late", due=50, kind="change")
    queue.push("b", due=1, kind="change")
    queue.push("lc", due=2, kind="lifecycle")
    queue.push("c", due=3, kind="change")
    assert queue.take_batch(0.5, 10) == ("", [])
    assert queue.take_batch(10, 10) == ("change", ["a", "b"])
    assert queue.take_batch(10, 10) == ("lifecycle", ["lc"])
    assert queue.take_batch(10, 1) == ("change", ["c"])
    assert queue.next_due() == 50
    assert queue.drain() == ["late"]
    assert len(queue) == 0
