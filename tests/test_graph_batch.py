"""GraphClient.batch against the emulator's $batch: chunks of 20, per-item results, resending only the
throttled/5xx items after their own Retry-After, dependsOn and 424, and what is never resent."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from graph_fixtures import Harness

from syncer.errors import NotFoundError, RetryBudgetExhausted, ServerError, ThrottledError
from syncer.graph import BatchRequest, RetryPolicy

pytestmark = pytest.mark.usefixtures("no_secret_in_logs")


def seed(h: Harness, users: int) -> list[str]:
    h.admin("POST", "seed", json={"users": users})
    client = h.client()
    ids = [u["id"] for u in client.get_json(f"/users?$select=id&$top={users}")["value"]]
    assert len(ids) == users
    h.admin("DELETE", "requests")
    return ids


def test_mixed_results_in_order_and_only_the_throttled_item_is_resent(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    ids = seed(harness, 30)
    throttled = ids[5]
    harness.fault(type="status", status=429, path=f"^/v1.0/users/{throttled}$", count=1, retryAfter=2)
    client = harness.client()
    requests = [BatchRequest("GET", f"/users/{uid}?$select=id,displayName") for uid in ids[:22]]
    requests.insert(3, BatchRequest("GET", "/users/00000000-0000-0000-0000-00000000dead"))
    requests.append(BatchRequest("PATCH", f"/users/{ids[25]}", body={"jobTitle": "Batched"}, idempotent=True))
    requests.append(BatchRequest("GET", "/users/not-a-user"))
    with caplog.at_level(logging.WARNING, logger="syncer.graph"):
        results = client.batch(requests)
    # One short line: what, how many, how long (the item's whole error stays for DEBUG).
    assert [r.getMessage() for r in caplog.records if r.name == "syncer.graph" and r.levelno >= logging.WARNING] == [
        "Graph: 429 TooManyRequests on 1 of 20 $batch items; resending them in 2.0s (attempt 1)"
    ]

    assert len(results) == len(requests) == 25
    assert [r.id for r in results] == [str(n) for n in range(1, 26)]  # ids by position, results in order
    missing = results[3]
    assert missing.status == 404 and isinstance(missing.error, NotFoundError) and not missing.ok
    assert missing.error.request_id
    assert results[24].status in (400, 404) and results[24].error is not None
    assert results[23].ok and results[23].status in (200, 204)
    ok = [r for n, r in enumerate(results) if n not in (3, 23, 24)]
    assert all(r.ok and r.status == 200 for r in ok)
    assert {r.body["id"] for r in ok} == set(ids[:22])
    again = next(r for r in ok if r.body["id"] == throttled)
    assert again.attempts == 2
    assert harness.sleeps == [2.0]  # the item's own Retry-After
    log = harness.requests_log()
    assert len([r for r in log if r["path"] == "/v1.0/$batch"]) == 3  # 20 + resend of 1 + the last 5
    item_calls = [r for r in log if r["batch"]]
    assert len([r for r in item_calls if throttled in r["path"]]) == 2
    assert len(item_calls) == 26  # every item once, the throttled one twice
    assert client.get_json(f"/users/{ids[25]}")["jobTitle"] == "Batched"


def test_5xx_item_resent_and_its_424_dependent_with_it(harness: Harness) -> None:
    ids = seed(harness, 3)
    harness.fault(
        type="status", status=503, path=f"^/v1.0/users/{ids[0]}$", method="PATCH", count=1, retryAfter=1
    )
    client = harness.client()
    results = client.batch(
        [
            BatchRequest("PATCH", f"/users/{ids[0]}", body={"jobTitle": "Lead"}, id="a", idempotent=True),
            BatchRequest("GET", f"/users/{ids[0]}?$select=jobTitle", id="b", depends_on=("a",)),
            BatchRequest("GET", f"/users/{ids[1]}", id="c"),
        ]
    )
    assert [r.id for r in results] == ["a", "b", "c"]
    assert all(r.ok for r in results), [(r.status, r.error) for r in results]
    assert results[1].body["jobTitle"] == "Lead"
    assert results[0].attempts == results[1].attempts == 2 and results[2].attempts == 1


def test_non_idempotent_item_is_not_resent_after_429(harness: Harness) -> None:
    # A 429 inside a batch has been seen to have taken effect anyway: a POST item is handed back.
    harness.fault(type="status", status=429, path="^/v1.0/users$", method="POST", count=1, retryAfter=1)
    client = harness.client()
    body = {
        "accountEnabled": True,
        "displayName": "Batch New",
        "mailNickname": "batchnew",
        "userPrincipalName": "batchnew@contoso.onmicrosoft.com",
        "passwordProfile": {"password": "xWwvJ]6NMw+bWH-d"},
    }
    [result] = client.batch([BatchRequest("POST", "/users", body=body)])
    assert result.status == 429 and isinstance(result.error, ThrottledError)
    assert result.error.retry_after == 1.0
    assert harness.sleeps == []
    with pytest.raises(ThrottledError):
        result.raise_for_error()


def test_item_that_stays_throttled_exhausts_the_budget(harness: Harness) -> None:
    ids = seed(harness, 2)
    harness.fault(type="status", status=429, path=f"^/v1.0/users/{ids[0]}$", retryAfter=1)
    client = harness.client(retry=RetryPolicy(max_attempts=3, max_elapsed=60))
    first, second = client.batch(
        [BatchRequest("GET", f"/users/{ids[0]}"), BatchRequest("GET", f"/users/{ids[1]}")]
    )
    assert second.ok
    assert isinstance(first.error, RetryBudgetExhausted) and first.status == 429
    assert isinstance(first.error.last_error, ThrottledError)
    harness.errors.append(first.error)
    assert harness.sleeps == [1.0, 1.0]


def test_a_throttled_envelope_is_retried_whole(harness: Harness) -> None:
    ids = seed(harness, 2)
    harness.fault(type="status", status=429, path=r"^/v1.0/\$batch$", count=1, retryAfter=1)
    client = harness.client()
    results = client.batch([BatchRequest("GET", f"/users/{uid}") for uid in ids])
    assert all(r.ok for r in results)
    assert harness.sleeps == [1.0]


def test_an_envelope_of_posts_is_not_retried_after_a_500(harness: Harness) -> None:
    harness.fault(type="status", status=500, path=r"^/v1.0/\$batch$", count=1)
    client = harness.client()
    with pytest.raises(ServerError) as info:
        client.batch([BatchRequest("POST", "/users", body={})])
    harness.errors.append(info.value)


def test_bad_batches_are_refused_before_sending(harness: Harness) -> None:
    client = harness.client()
    with pytest.raises(ValueError, match="duplicate"):
        client.batch([BatchRequest("GET", "/users", id="x"), BatchRequest("GET", "/users", id="X")])
    many = [BatchRequest("GET", "/users", id=str(n)) for n in range(21)]
    many[20] = BatchRequest("GET", "/users", id="20", depends_on=("1",))
    with pytest.raises(ValueError, match="outside its envelope"):
        client.batch(many)
    assert harness.requests_log("$batch") == []
    client.get_json("/users")  # something at DEBUG for the log check


def test_an_item_throttled_inside_a_200_envelope_slows_the_whole_tenant(harness: Harness) -> None:
    """Graph throttles per item (the envelope still answers 200): the tenant's budget hears it like a direct 429."""
    ids = seed(harness, 3)
    harness.fault(type="status", status=429, path=f"^/v1.0/users/{ids[1]}$", count=1, retryAfter=2)
    client = harness.client(max_in_flight_per_tenant=8)
    budget = client.budget
    results = client.batch([BatchRequest("GET", f"/users/{uid}?$select=id") for uid in ids])
    assert [r.status for r in results] == [200, 200, 200]  # resent after its Retry-After
    assert budget.throttles == 1 and budget.limit == 4  # halved for every thread of the tenant
    assert budget.paused_until > 0


def test_an_envelope_and_direct_calls_never_put_a_fifth_request_in_flight_to_a_mailbox(harness: Harness) -> None:
    """Graph runs a batch's items side by side, each one of its mailbox's 4 concurrent requests: an envelope of 4
    reads of a mailbox waits for the direct calls to it in flight, instead of having items answered 429."""
    (user,) = seed(harness, 1)
    harness.fault(type="latency", ms=300, path=f"^/v1.0/users/{user}/")
    client = harness.client(max_in_flight_per_tenant=16)
    started = threading.Barrier(4)

    def direct() -> None:
        started.wait(5)
        client.get_json(f"/users/{user}/mailFolders")

    threads = [threading.Thread(target=direct) for _ in range(3)]
    for t in threads:
        t.start()
    started.wait(5)
    time.sleep(0.1)  # the 3 direct calls in flight
    results = client.batch([BatchRequest("GET", f"/users/{user}/mailFolders?$top={n + 1}") for n in range(4)])
    for t in threads:
        t.join(10)
    assert [r.status for r in results] == [200] * 4
    assert all(r.attempts == 1 for r in results)  # none answered 429 and resent
    assert harness.admin("GET", "faults")["mailboxRejections"] == 0
