"""GraphClient over real HTTPS against the emulator: auth, token refresh, retries, paging, 410, concurrency.

Every test here also checks (fixture ``no_secret_in_logs``) that no log line of the test, at DEBUG,
and no error string contains the client secret, the private key or an access token.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from graph_fixtures import Harness, Recorder, find_leaks, raises_typed

from syncer.emulator import EmulatorConfig
from syncer.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ResyncRequired,
    RetryBudgetExhausted,
    ServerError,
    ThrottledError,
    TransportError,
)
from syncer.graph import RetryPolicy
from syncer.graph.responses import code_is

pytestmark = pytest.mark.usefixtures("no_secret_in_logs")

PREFER_999 = {"Prefer": "odata.maxpagesize=999"}


def seed_users(h: Harness, count: int) -> None:
    h.admin("POST", "seed", json={"users": count})


# --- auth ------------------------------------------------------------------------------------------


def test_secret_auth_pages_a_delta_round_to_its_delta_link(harness: Harness) -> None:
    seed_users(harness, 2500)
    client = harness.client()
    round_ = client.delta("/users/delta", headers=PREFER_999)
    ids: list[str] = []
    for page in round_:
        assert round_.delta_link is None  # only after the last page
        ids += [item["id"] for item in page.items]
    assert round_.pages == 3 and round_.items == 2500 == len(set(ids))
    assert round_.delta_link and "$deltatoken=" in round_.delta_link
    # The deltaLink, called as-is, returns the changes since: one renamed user.
    client.request("PATCH", f"/users/{ids[7]}", json={"jobTitle": "Analyst"})
    second = client.delta(round_.delta_link)
    changed = [item for page in second for item in page.items]
    assert [item["id"] for item in changed] == [ids[7]]
    assert second.delta_link and second.delta_link != round_.delta_link
    with pytest.raises(RuntimeError):
        iter(second)


@pytest.mark.parametrize("with_certificate", [True, False], ids=["x5c-public-certificate", "thumbprint"])
def test_certificate_auth(harness: Harness, with_certificate: bool) -> None:
    seed_users(harness, 3)
    client = harness.client(harness.certificate_credential(with_certificate=with_certificate))
    assert len(client.get_json("/users")["value"]) == 3
    assert client.credential.acquired == 1  # type: ignore[attr-defined]


def test_wrong_secret_is_an_auth_error_without_the_secret(harness: Harness) -> None:
    info = harness.info
    from syncer.graph import ClientSecretCredential

    wrong = ClientSecretCredential(
        info["base_url"],
        info["tenant_id"],
        info["client_id"],
        "wrong-" + info["client_secret"],
        ca_bundle=info["ca_cert"],
    )
    client = harness.client(wrong)
    error = raises_typed(harness, lambda: client.get_json("/users"), AuthError)
    assert error.code == "invalid_client"
    assert "wrong-" not in str(error)
    assert harness.requests_log("/v1.0/") == []  # never reached Graph


def test_the_leak_check_sees_a_token_logged_by_anyone(harness: Harness, no_secret_in_logs: Recorder) -> None:
    # The check every test here ends with must be able to fail: log the token the way a careless
    # library would, and the detector finds it (then drop the line so this test itself passes).
    import logging

    credential = harness.secret_credential()
    harness.client(credential).get_json("/users")
    token = next(iter(credential._tokens.values()))[0]
    logging.getLogger("careless.library").debug("sending Authorization: Bearer %s", token)
    assert find_leaks(no_secret_in_logs.lines, harness.sensitive())
    no_secret_in_logs.lines = [line for line in no_secret_in_logs.lines if not line.startswith("careless")]


def test_token_is_cached_across_calls(harness: Harness) -> None:
    credential = harness.secret_credential()
    client = harness.client(credential)
    for _ in range(5):
        client.get_json("/users")
    assert credential.acquired == 1
    assert len(harness.requests_log("/oauth2/v2.0/token")) == 1


def test_401_refreshes_the_token_once_and_succeeds(harness: Harness) -> None:
    credential = harness.secret_credential()
    client = harness.client(credential)
    client.get_json("/users")
    # Two hours later on the server's clock, our cached token has expired there (not here).
    harness.admin("POST", "clock", json={"advance": 7200})
    client.get_json("/users")
    assert credential.acquired == 2
    statuses = [r["status"] for r in harness.requests_log("/v1.0/users")]
    assert statuses == [200, 401, 200]
    assert harness.sleeps == []  # a token refresh is not a backoff


def test_a_second_401_is_an_auth_error(harness: Harness) -> None:
    harness.fault(type="status", status=401, path="^/v1.0/users$", count=5)
    client = harness.client()
    error = raises_typed(harness, lambda: client.get_json("/users"), AuthError)
    assert error.status == 401 and error.request_id and error.client_request_id
    assert len(harness.requests_log("/v1.0/users")) == 2


@pytest.mark.parametrize("emulator_config", [EmulatorConfig(seed=5, token_lifetime_s=302)])
def test_token_refreshed_before_it_expires(harness: Harness) -> None:
    # A 302 s token is fresh for 2 s (we refresh 300 s early): the next call after that gets a new
    # token although the old one is still valid on the server, so no call ever meets a 401.
    credential = harness.secret_credential()
    client = harness.client(credential)
    client.get_json("/users")
    client.get_json("/users")
    assert credential.acquired == 1
    time.sleep(2.2)
    client.get_json("/users")
    assert credential.acquired == 2
    assert [r["status"] for r in harness.requests_log("/v1.0/users")] == [200, 200, 200]


# --- retries -----------------------------------------------------------------------------------------


def test_429_honours_retry_after_seconds(harness: Harness) -> None:
    harness.fault(type="status", status=429, path="^/v1.0/users$", count=2, retryAfter=3)
    client = harness.client()
    assert client.get_json("/users")["value"] == []
    assert harness.sleeps == [3.0, 3.0]
    log = harness.requests_log("/v1.0/users")
    assert [r["status"] for r in log] == [429, 429, 200]
    # a fresh client-request-id on every attempt
    assert len({r["clientRequestId"] for r in log}) == 3


def test_429_honours_retry_after_as_an_http_date(harness: Harness) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    harness.fault(type="status", status=429, path="^/v1.0/users$", count=1, retryAfter=when)
    client = harness.client()
    client.get_json("/users")
    assert len(harness.sleeps) == 1
    # Measured against the response's Date header (1 s resolution): about 20 s, never the 0.01 s backoff.
    assert 17.0 <= harness.sleeps[0] <= 21.0


def test_503_without_retry_after_backs_off_exponentially(harness: Harness) -> None:
    harness.fault(type="status", status=503, path="^/v1.0/users$", count=3)
    client = harness.client(retry=RetryPolicy(max_attempts=5, backoff_base=0.2, backoff_max=10))
    client.get_json("/users")
    assert len(harness.sleeps) == 3
    for n, wait in enumerate(harness.sleeps, start=1):
        ceiling = 0.2 * 2 ** (n - 1)
        assert ceiling / 2 <= wait <= ceiling


def test_retry_budget_exhausted_by_attempts(harness: Harness) -> None:
    harness.fault(type="status", status=504, path="^/v1.0/users$")
    client = harness.client(retry=RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.01))
    error = raises_typed(harness, lambda: client.get_json("/users"), RetryBudgetExhausted)
    assert error.attempts == 3
    assert isinstance(error.last_error, ServerError) and error.last_error.status == 504
    assert error.request_id and error.client_request_id  # from the last answer
    assert len(harness.requests_log("/v1.0/users")) == 3


def test_retry_budget_exhausted_by_time(harness: Harness) -> None:
    harness.fault(type="status", status=429, path="^/v1.0/users$", retryAfter=30)
    client = harness.client(retry=RetryPolicy(max_attempts=10, max_elapsed=20))
    error = raises_typed(harness, lambda: client.get_json("/users"), RetryBudgetExhausted)
    assert isinstance(error.last_error, ThrottledError)
    assert harness.sleeps == []  # failed at once instead of sleeping past the budget
    assert len(harness.requests_log("/v1.0/users")) == 1


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ConflictError),
        (501, ServerError),
    ],
)
def test_no_retry_on_4xx(harness: Harness, status: int, cls: type[Exception]) -> None:
    harness.fault(type="status", status=status, path="^/v1.0/users$", count=1)
    client = harness.client()
    error = raises_typed(harness, lambda: client.get_json("/users"), cls)
    assert error.status == status and error.code and error.request_id
    assert f"request-id={error.request_id}" in str(error)
    assert len(harness.requests_log("/v1.0/users")) == 1
    assert harness.sleeps == []


def _new_user(n: int) -> dict[str, object]:
    return {
        "accountEnabled": True,
        "displayName": f"New {n}",
        "mailNickname": f"new{n}",
        "userPrincipalName": f"new{n}@contoso.onmicrosoft.com",
        "passwordProfile": {"password": "xWwvJ]6NMw+bWH-d"},
    }


@pytest.mark.parametrize("status", [500, 502, 504])
def test_post_is_not_repeated_when_the_server_may_have_acted(harness: Harness, status: int) -> None:
    harness.fault(type="status", status=status, path="^/v1.0/users$", method="POST", count=1)
    client = harness.client()
    raises_typed(harness, lambda: client.request("POST", "/users", json=_new_user(1)), ServerError)
    assert len(harness.requests_log("/v1.0/users")) == 1
    # ...unless the caller says repeating it is safe.
    harness.fault(type="status", status=status, path="^/v1.0/users$", method="POST", count=1)
    assert client.request("POST", "/users", json=_new_user(2), idempotent=True).status == 201


@pytest.mark.parametrize("status", [429, 503])
def test_post_is_repeated_when_graph_said_it_did_not_act(harness: Harness, status: int) -> None:
    harness.fault(type="status", status=status, path="^/v1.0/users$", method="POST", count=1, retryAfter=1)
    client = harness.client()
    assert client.request("POST", "/users", json=_new_user(3)).status == 201
    assert [r["status"] for r in harness.requests_log("/v1.0/users")] == [status, 201]


def test_connection_reset_retried_for_get_not_for_post(harness: Harness) -> None:
    harness.fault(type="reset", path="^/v1.0/users$", count=1)
    # A short read timeout: once the emulator's reset left a connection hanging instead of
    # dropping it (reported to EMU-A); a timeout is the same kind of failure for this test.
    client = harness.client(timeout=(5.0, 5.0))
    assert client.get_json("/users")["value"] == []
    assert len(harness.sleeps) == 1
    harness.fault(type="reset", path="^/v1.0/users$", method="POST", count=1)
    error = raises_typed(harness, lambda: client.request("POST", "/users", json=_new_user(4)), TransportError)
    assert error.client_request_id and not isinstance(error, RetryBudgetExhausted)


def test_read_timeout_is_a_transport_error_retried_for_get(harness: Harness) -> None:
    harness.fault(type="latency", ms=1500, path="^/v1.0/users$", count=1)
    client = harness.client(timeout=(5.0, 0.5))
    assert client.get_json("/users")["value"] == []
    assert len(harness.sleeps) == 1


# --- 410 ------------------------------------------------------------------------------------------------


def test_410_expired_delta_token_is_resync_required(harness: Harness) -> None:
    seed_users(harness, 10)
    client = harness.client()
    first = client.delta("/users/delta")
    list(first)
    assert first.delta_link
    harness.fault(type="deltaReset", scope="users", kind="expired", count=1)
    error = raises_typed(harness, lambda: list(client.delta(first.delta_link or "")), ResyncRequired)
    assert error.status == 410 and code_is(error, "syncStateNotFound")
    assert not error.retryable
    assert len(harness.requests_log("/v1.0/users/delta")) == 2  # not retried


def test_410_reset_carries_location_to_restart_from(harness: Harness) -> None:
    seed_users(harness, 10)
    client = harness.client()
    first = client.delta("/users/delta")
    list(first)
    harness.fault(type="deltaReset", scope="users", kind="reset", count=1)
    error = raises_typed(harness, lambda: list(client.delta(first.delta_link or "")), ResyncRequired)
    assert error.location and "/users/delta" in error.location
    restarted = client.delta(error.location)
    assert sum(len(p.items) for p in restarted) == 10 and restarted.delta_link


# --- concurrency -------------------------------------------------------------------------------------------


def _hammer_mailbox(harness: Harness, per_mailbox: int, threads: int = 12) -> tuple[int, list[BaseException]]:
    user = harness.admin("POST", "seed", json={"users": 2, "messagesPerUser": 3, "contentUsers": 1})["users"][
        "firstId"
    ]
    harness.fault(type="latency", ms=150, path=f"^/v1.0/users/{user}/messages")
    client = harness.client(
        per_mailbox=per_mailbox, real_sleep=True, retry=RetryPolicy(max_attempts=20, max_elapsed=60)
    )
    failures: list[BaseException] = []

    def work() -> None:
        try:
            assert len(client.get_json(f"/users/{user}/messages")["value"]) == 3
        except BaseException as e:  # collected and asserted in the test thread
            failures.append(e)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return harness.admin("GET", "faults")["mailboxRejections"], failures


def test_per_mailbox_cap_keeps_under_outlooks_limit(harness: Harness) -> None:
    rejections, failures = _hammer_mailbox(harness, per_mailbox=4)
    assert failures == []
    assert rejections == 0
    assert harness.sleeps == []


def test_without_the_cap_the_emulator_throttles(harness: Harness) -> None:
    # Control for the test above: the emulator does enforce 4, so a cap of 8 gets 429s (then retries).
    rejections, failures = _hammer_mailbox(harness, per_mailbox=8)
    assert failures == []
    assert rejections > 0
    assert len(harness.sleeps) == rejections
