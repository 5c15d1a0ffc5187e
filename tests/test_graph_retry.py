"""The retry policy, Retry-After parsing and error mapping of syncer.graph, as pure functions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from syncer.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    ConnectError,
    ForbiddenError,
    GraphError,
    NotFoundError,
    ResyncRequired,
    RetryBudgetExhausted,
    ServerError,
    ThrottledError,
    TransportError,
)
from syncer.graph.responses import code_is, error_from_response, parse_error_body, parse_retry_after
from syncer.graph.retry import RetryPolicy, RetryState, is_idempotent, may_retry

NOW = datetime(2026, 3, 20, 11, 0, 0, tzinfo=UTC)


# --- Retry-After ------------------------------------------------------------------------------


def test_retry_after_seconds() -> None:
    assert parse_retry_after("10") == 10.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("2.5") == 2.5


def test_retry_after_absent_or_garbage_is_none() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None


def test_retry_after_http_date_against_now() -> None:
    when = format_datetime(NOW + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(when, now=NOW) == pytest.approx(7.0)


def test_retry_after_http_date_against_the_response_date_not_our_clock() -> None:
    # Our clock is an hour off; the server's Date header is what the date is relative to.
    server_now = format_datetime(NOW, usegmt=True)
    when = format_datetime(NOW + timedelta(seconds=3), usegmt=True)
    assert parse_retry_after(when, now=NOW + timedelta(hours=1), date_header=server_now) == pytest.approx(3.0)


def test_retry_after_date_in_the_past_means_now() -> None:
    when = format_datetime(NOW - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(when, now=NOW) == 0.0


def test_negative_seconds_clamped() -> None:
    assert parse_retry_after("-5") == 0.0


# --- error bodies and classes ------------------------------------------------------------------

THROTTLE_BODY = b"""{"error": {"code": "TooManyRequests", "message": "Please retry again later.",
  "innerError": {"code": "429", "date": "2020-08-18T12:51:51", "message": "Please retry after",
  "request-id": "94fb3b52-452a-4535-a601-69e0a90e3aa2", "status": "429"}}}"""


def test_parse_graph_error_body() -> None:
    code, message, inner = parse_error_body(THROTTLE_BODY)
    assert code == "TooManyRequests"
    assert message == "Please retry again later."
    assert inner["request-id"] == "94fb3b52-452a-4535-a601-69e0a90e3aa2"


def test_parse_identity_platform_error_body() -> None:
    code, message, _ = parse_error_body(
        b'{"error": "invalid_client", "error_description": "AADSTS7000215: bad"}'
    )
    assert (code, message) == ("invalid_client", "AADSTS7000215: bad")


@pytest.mark.parametrize("body", [b"", b"<html>proxy</html>", b"[1,2]", b'{"error": 5}'])
def test_non_graph_bodies_parse_to_nothing(body: bytes) -> None:
    assert parse_error_body(body) == (None, None, {})


def test_429_becomes_throttled_with_request_ids_and_retry_after() -> None:
    error = error_from_response(
        429,
        {"Retry-After": "10"},
        THROTTLE_BODY,
        method="GET",
        url="https://graph.microsoft.com/v1.0/users",
        client_request_id="c-1",
    )
    assert isinstance(error, ThrottledError)
    assert error.retryable
    assert error.retry_after == 10.0
    assert error.code == "TooManyRequests"
    assert error.request_id == "94fb3b52-452a-4535-a601-69e0a90e3aa2"  # from innerError when no header
    assert error.client_request_id == "c-1"
    text = str(error)
    assert "HTTP 429" in text and "request-id=94fb3b52" in text and "client-request-id=c-1" in text
    assert "retry-after=10s" in text


def test_request_id_header_wins_over_body() -> None:
    error = error_from_response(
        404,
        {"request-id": "hdr"},
        b'{"error": {"code": "x", "message": "m", "innerError": {"request-id": "body"}}}',
    )
    assert error.request_id == "hdr"


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, BadRequestError, False),
        (401, AuthError, False),
        (403, ForbiddenError, False),
        (404, NotFoundError, False),
        (409, ConflictError, False),
        (410, ResyncRequired, False),
        (429, ThrottledError, True),
        (500, ServerError, True),
        (501, ServerError, False),
        (502, ServerError, True),
        (503, ServerError, True),
        (504, ServerError, True),
        (418, GraphError, False),
    ],
)
def test_status_to_class(status: int, cls: type[GraphError], retryable: bool) -> None:
    error = error_from_response(status, {}, b"")
    assert type(error) is cls
    assert error.retryable is retryable
    assert f"HTTP {status}" in str(error)


def test_410_carries_location() -> None:
    body = b'{"error": {"code": "SyncStateNotFound", "message": "The sync state generation is not found"}}'
    error = error_from_response(
        410, {"Location": "https://graph.microsoft.com/v1.0/users/delta?$deltatoken="}, body
    )
    assert isinstance(error, ResyncRequired)
    assert error.location == "https://graph.microsoft.com/v1.0/users/delta?$deltatoken="
    assert code_is(error, "syncStateNotFound")
    assert not code_is(error, "resyncRequired")


def test_secrets_in_bodies_and_urls_are_masked() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4eXoifQ.c2lnbmF0dXJl"
    body = f'{{"error": {{"code": "x", "message": "bad Bearer {token} client_secret=hunter2"}}}}'.encode()
    error = error_from_response(400, {}, body, method="POST", url="https://g/v1.0/x?access_token=abc123")
    text = str(error)
    assert token not in text and "hunter2" not in text and "abc123" not in text
    assert token not in (error.body or "") and "hunter2" not in (error.body or "")


def test_long_bodies_are_truncated() -> None:
    error = error_from_response(500, {}, b"x" * 10_000)
    assert len(str(error)) < 1000
    assert len(error.body or "") < 1000


# --- idempotency and may_retry --------------------------------------------------------------------


def test_idempotent_methods() -> None:
    assert all(is_idempotent(m) for m in ("GET", "get", "PUT", "DELETE", "HEAD", "OPTIONS"))
    assert not is_idempotent("POST") and not is_idempotent("PATCH")
    assert is_idempotent("POST", True) and not is_idempotent("GET", False)


def _err(status: int, retry_after: float | None = None) -> GraphError:
    return error_from_response(
        status, {"Retry-After": str(retry_after)} if retry_after is not None else {}, b""
    )


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 501])
def test_never_retry_these_statuses(status: int) -> None:
    assert not may_retry(_err(status), idempotent=True)
    assert not may_retry(_err(status), idempotent=False)


def test_post_retried_only_when_the_server_did_not_act() -> None:
    assert may_retry(_err(429), idempotent=False)
    assert may_retry(_err(503), idempotent=False)
    assert may_retry(ConnectError("refused"), idempotent=False)
    assert not may_retry(_err(500), idempotent=False)
    assert not may_retry(_err(502), idempotent=False)
    assert not may_retry(_err(504), idempotent=False)
    assert not may_retry(TransportError("read timeout"), idempotent=False)
    assert may_retry(TransportError("read timeout"), idempotent=True)
    assert may_retry(_err(504), idempotent=True)


# --- the budget ------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_capped_and_is_never_immediate() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
    rng = random.Random(1)
    waits = [policy.backoff(n, rng) for n in range(1, 8)]
    for n, wait in enumerate(waits, start=1):
        ceiling = min(8.0, 2 ** (n - 1))
        assert ceiling / 2 <= wait <= ceiling
    assert max(waits) <= 8.0


def test_retry_after_beats_backoff() -> None:
    policy = RetryPolicy(backoff_base=100.0)
    assert policy.wait_for(_err(429, 3), 1) == 3.0
    assert RetryPolicy(min_retry_after=1.0).wait_for(_err(429, 0), 1) == 1.0


def test_budget_exhausted_by_attempts() -> None:
    clock = FakeClock()
    state = RetryState(RetryPolicy(max_attempts=3, backoff_base=0.1), clock=clock)
    state.begin_attempt()
    assert state.next_wait(_err(503), idempotent=True) > 0
    state.begin_attempt()
    assert state.next_wait(_err(503), idempotent=True) > 0
    state.begin_attempt()
    with pytest.raises(RetryBudgetExhausted) as info:
        state.next_wait(_err(503), idempotent=True)
    assert info.value.attempts == 3
    assert isinstance(info.value.last_error, ServerError)
    assert "3 attempts" in str(info.value)


def test_budget_exhausted_by_time_before_sleeping() -> None:
    clock = FakeClock()
    state = RetryState(RetryPolicy(max_elapsed=10.0), clock=clock)
    state.begin_attempt()
    clock.now = 5.0
    assert state.next_wait(_err(429, 4), idempotent=True) == 4.0
    state.begin_attempt()
    clock.now = 9.5
    # 9.5 + 4 > 10: fail now rather than sleep and then give up.
    with pytest.raises(RetryBudgetExhausted) as info:
        state.next_wait(_err(429, 4), idempotent=True)
    assert "10s" in str(info.value)
    assert info.value.retry_after == 4.0


def test_retry_after_longer_than_we_wait_exhausts() -> None:
    state = RetryState(RetryPolicy(max_retry_after=60, max_elapsed=1000), clock=FakeClock())
    state.begin_attempt()
    with pytest.raises(RetryBudgetExhausted, match="exceeds"):
        state.next_wait(_err(429, 3600), idempotent=True)


def test_non_retryable_error_is_raised_as_itself() -> None:
    state = RetryState(RetryPolicy(), clock=FakeClock())
    state.begin_attempt()
    error = _err(404)
    with pytest.raises(NotFoundError) as info:
        state.next_wait(error, idempotent=True)
    assert info.value is error


def test_policy_validates() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
