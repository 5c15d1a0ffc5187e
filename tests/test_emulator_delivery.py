"""Notification delivery of the emulator: the pure policy (backoff, slow/drop windows, batching) and, over real
HTTP, the dispatcher against a tiny receiver."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from emulator_fixtures import EmulatorClient
from webhook_receiver import Receiver

from syncer.emulator import ChangeEvent, EmulatorConfig, EmulatorServer
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
from syncer.emulator.tls import write_server_files

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


# ---------------------------------------------------------------------------------------------------------------
# the dispatcher over real HTTP

FAST_RETRY = RetryRules(
    first_timeout_s=1.0, retry_timeout_s=1.0, window_s=1.0, initial_backoff_s=0.05, backoff_factor=2, max_backoff_s=0.3
)


@pytest.fixture
def emulator_config(request: pytest.FixtureRequest) -> EmulatorConfig:
    """Compressed delivery timings, plus whatever a test passes with indirect parametrization."""
    changes: dict[str, Any] = getattr(request, "param", {})
    base = EmulatorConfig(seed=11, retry=FAST_RETRY, delivery_tick_s=0.005, delivery_sweep_s=0.01)
    return base.with_changes(**changes)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


@pytest.fixture
def lifecycle() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def _in(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _subscribe(graph: EmulatorClient, url: str, **extra: Any) -> dict[str, Any]:
    body = {
        "resource": "users",
        "changeType": "updated,deleted",
        "notificationUrl": url,
        "expirationDateTime": _in(120),
        "clientState": "cs-1",
        **extra,
    }
    response = graph.post("subscriptions", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def _report(graph: EmulatorClient, **params: Any) -> dict[str, Any]:
    return graph.admin("GET", "delivery", params=params).json()  # type: ignore[no-any-return]


def _wait_idle(graph: EmulatorClient, *, scheduled: bool = True, timeout: float = 10) -> bool:
    body = graph.admin("POST", "delivery/wait", json={"timeoutSeconds": timeout, "includeScheduled": scheduled}).json()
    return bool(body["idle"])


def _endpoint_after(graph: EmulatorClient, url: str, mode: str, timeout: float = 10) -> dict[str, Any]:
    """The endpoint's state once it reaches *mode*: the receiver sees a POST before the emulator has
    timed its answer, so reading the report right after the receiver got an item races with that."""
    deadline = time.monotonic() + timeout
    while True:
        endpoint: dict[str, Any] = _report(graph)["endpoints"][url]
        if endpoint["mode"] == mode or time.monotonic() > deadline:
            return endpoint
        time.sleep(0.02)


def _clock(graph: EmulatorClient, **body: Any) -> None:
    assert graph.admin("POST", "clock", json=body).status_code == 200


def _message_event(emulator: EmulatorServer, user_id: str, *, message_id: str, subject: str = "Hi") -> ChangeEvent:
    """A message created in the user's inbox, as the store announces it (the message write API is EMU-A's)."""
    uid = user_id.lower()
    item = {
        "@odata.etag": 'W/"CQAAABYAAA"',
        "id": message_id,
        "subject": subject,
        "isRead": False,
        "bodyPreview": "secret body",
        "from": {"emailAddress": {"address": "ada@example.com"}},
    }
    return ChangeEvent(
        tenant_id=emulator.config.tenant_id,
        resource_type="message",
        change_type="created",
        item_id=message_id,
        collections=(f"users/{uid}/mailfolders/inbox-id/messages", f"users/{uid}/messages"),
        resource=f"Users/{user_id}/Messages/{message_id}",
        resource_data={
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": f"Users/{user_id}/Messages/{message_id}",
            "@odata.etag": item["@odata.etag"],
            "id": message_id,
        },
        item=item,
        mailbox=user_id,
    )


def test_user_changes_arrive_graph_shaped(graph: EmulatorClient, receiver: Receiver) -> None:
    sub = _subscribe(graph, receiver.url("hook") + "?route=users")
    user = graph.create_user("ada")
    assert graph.patch(f"users/{user['id']}", json={"jobTitle": "Engineer"}).status_code == 204
    assert graph.delete(f"users/{user['id']}").status_code == 204  # soft delete: still "updated"
    items = receiver.wait_items(3)
    assert [i["changeType"] for i in items] == ["updated", "updated", "updated"]
    assert graph.delete(f"directory/deletedItems/{user['id']}").status_code == 204  # permanent: "deleted"
    items = receiver.wait_items(4)
    assert items[3]["changeType"] == "deleted"
    for item in items:
        assert item["subscriptionId"] == sub["id"]
        assert item["clientState"] == "cs-1"
        assert item["tenantId"] == graph.info["tenant_id"]
        assert item["resource"] == f"Users/{user['id']}"
        assert item["resourceData"] == {
            "@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{user['id']}", "id": user["id"]
        }
        assert item["subscriptionExpirationDateTime"].endswith("+00:00")
        assert "lifecycleEvent" not in item and "encryptedContent" not in item
    assert all(r.query == {"route": "users"} for r in receiver.received)
    assert all(r.content_type.startswith("application/json") for r in receiver.received)
    assert all("validationTokens" not in r.body for r in receiver.received)
    # The receiver has the last body before the emulator has its answer (and counts the delivery).
    assert _wait_idle(graph)
    report = _report(graph)
    assert report["delivered"] == 4 and report["dropped"] == 0
    assert report["endpoints"][receiver.url("hook") + "?route=users"]["mode"] == "normal"


def test_change_type_filter(graph: EmulatorClient, receiver: Receiver) -> None:
    _subscribe(graph, receiver.url(), changeType="deleted")
    user = graph.create_user("bob")
    graph.patch(f"users/{user['id']}", json={"jobTitle": "x"})
    graph.delete(f"users/{user['id']}")
    graph.delete(f"directory/deletedItems/{user['id']}")
    items = receiver.wait_items(1)
    assert _wait_idle(graph)
    assert [i["changeType"] for i in receiver.items()] == ["deleted"] == [i["changeType"] for i in items]


@pytest.mark.parametrize("emulator_config", [{"notification_batch_max": 3, "delivery_max_in_flight": 1}], indirect=True)
def test_notifications_are_batched_per_url(graph: EmulatorClient, receiver: Receiver) -> None:
    _subscribe(graph, receiver.url())
    receiver.delay_s = lambda n: 0.6 if n == 1 else 0.0  # the first POST is slow, so the rest pile up
    events = [graph.create_user(f"u{n}")["id"] for n in range(7)]
    items = receiver.wait_items(7)
    assert sorted(i["resourceData"]["id"] for i in items) == sorted(events)
    sizes = [len(r.body["value"]) for r in receiver.received]
    assert max(sizes) <= 3
    assert any(size > 1 for size in sizes)
    assert len(receiver.received) < 7


def test_one_post_can_carry_several_subscriptions(
    graph: EmulatorClient, emulator: EmulatorServer, receiver: Receiver
) -> None:
    user = graph.create_user("carol")
    all_users = _subscribe(graph, receiver.url())
    one_user = _subscribe(graph, receiver.url(), resource=f"users/{user['id']}", changeType="updated")
    receiver.delay_s = lambda n: 0.3 if n == 1 else 0.0
    graph.patch(f"users/{user['id']}", json={"jobTitle": "a"})
    graph.patch(f"users/{user['id']}", json={"jobTitle": "b"})
    items = receiver.wait_items(4)
    assert sorted(i["subscriptionId"] for i in items) == sorted([all_users["id"], one_user["id"]] * 2)
    assert any({i["subscriptionId"] for i in r.body["value"]} == {all_users["id"], one_user["id"]} for r in receiver.received)


def test_failures_are_retried_with_backoff(graph: EmulatorClient, receiver: Receiver) -> None:
    _subscribe(graph, receiver.url())
    receiver.script = [500, 400, 503]  # any non-2xx, 4xx included, is retried
    graph.create_user("dave")
    assert len(receiver.wait_items(1)) == 1
    assert _wait_idle(graph)
    report = _report(graph)
    attempts = [e for e in report["log"] if e.get("attempt")]
    assert [e["attempt"] for e in attempts] == [1, 2, 3, 4]
    assert [e["status"] for e in attempts] == [500, 400, 503, 202]
    assert [e["outcome"] for e in attempts] == ["retry", "retry", "retry", "delivered"]
    assert all(e["body"]["value"][0]["changeType"] == "updated" for e in attempts)
    assert report["failedAttempts"] == 3 and report["retried"] == 3 and report["delivered"] == 1


@pytest.mark.parametrize(
    "emulator_config",
    [{"retry": RetryRules(first_timeout_s=0.2, retry_timeout_s=1.5, window_s=5, initial_backoff_s=0.05)}],
    indirect=True,
)
def test_a_slow_answer_fails_and_retries_get_the_longer_timeout(graph: EmulatorClient, receiver: Receiver) -> None:
    _subscribe(graph, receiver.url())
    receiver.delay_s = 0.5  # over the 0.2-s budget of a first attempt, under the 1.5-s retry timeout
    graph.create_user("erin")
    receiver.wait_for(lambda: _report(graph)["delivered"] == 1, timeout=5)
    attempts = [e for e in _report(graph)["log"] if e.get("attempt")]
    assert [e["status"] for e in attempts] == ["timeout", 202]


@pytest.mark.parametrize(
    ("emulator_config", "missed"),
    [({}, False), ({"lifecycle_events_all_types": True, "missed_min_interval_s": 0}, True)],
    indirect=["emulator_config"],
)
def test_retry_window_drops_the_batch(
    graph: EmulatorClient, receiver: Receiver, lifecycle: Receiver, missed: bool
) -> None:
    sub = _subscribe(graph, receiver.url(), lifecycleNotificationUrl=lifecycle.url())
    receiver.default_status = 500
    graph.create_user("frank")
    assert receiver.wait_for(lambda: _report(graph)["dropped"] == 1, timeout=5)
    report = _report(graph)
    assert report["droppedBy"] == {"retryWindow": 1}
    assert report["log"][-1]["outcome"] == "dropped" or any(e["outcome"] == "dropped" for e in report["log"])
    assert _wait_idle(graph)
    events = [i["lifecycleEvent"] for i in lifecycle.items()]
    # users get no `missed` from Graph (Outlook types only) unless configured
    assert events == (["missed"] if missed else [])
    if missed:
        assert lifecycle.items()[0]["subscriptionId"] == sub["id"]


def test_outlook_drop_sends_missed(graph: EmulatorClient, emulator: EmulatorServer, receiver: Receiver, lifecycle: Receiver) -> None:
    user = graph.create_user("gina")
    sub = _subscribe(
        graph, receiver.url(), resource=f"users/{user['id']}/messages", changeType="created",
        lifecycleNotificationUrl=lifecycle.url(),
    )
    receiver.default_status = 503
    emulator.state.store.notify([_message_event(emulator, user["id"], message_id="m1")])
    items = lifecycle.wait_items(1)
    assert items[0]["lifecycleEvent"] == "missed"
    assert items[0]["subscriptionId"] == sub["id"]
    assert items[0]["clientState"] == "cs-1"
    assert "resource" not in items[0] and "changeType" not in items[0]


@pytest.mark.parametrize(
    "emulator_config",
    [{"retry": RetryRules(initial_backoff_s=60, window_s=3600, first_timeout_s=1)}],
    indirect=True,
)
def test_backoff_runs_on_the_emulator_clock(graph: EmulatorClient, receiver: Receiver) -> None:
    _subscribe(graph, receiver.url())
    _clock(graph, freeze=True)
    receiver.script = [500]
    graph.create_user("hank")
    assert receiver.wait_for(lambda: receiver.attempts == 1), (receiver.attempts, _report(graph))
    assert _wait_idle(graph, scheduled=False)
    assert not _wait_idle(graph, scheduled=True, timeout=0.2)  # the retry is scheduled one emulator minute out
    assert receiver.attempts == 1
    _clock(graph, advance=59)
    assert _wait_idle(graph, scheduled=False)
    assert receiver.attempts == 1
    _clock(graph, advance=2)
    assert len(receiver.wait_items(1)) == 1
    assert receiver.attempts == 2


SLOW_RULES = ThrottleRules(min_samples=2, slow_response_s=0.1, slow_ratio=0.10, slow_delay_s=600, drop_response_s=50)


@pytest.mark.parametrize("emulator_config", [{"throttle": SLOW_RULES}], indirect=True)
def test_slow_endpoint_gets_new_notifications_late(graph: EmulatorClient, receiver: Receiver) -> None:
    _subscribe(graph, receiver.url())
    receiver.delay_s = lambda n: 0.15 if n <= 2 else 0.0
    graph.create_user("ivy")
    receiver.wait_items(1)
    graph.create_user("jack")
    receiver.wait_items(2)
    endpoint = _endpoint_after(graph, receiver.url(), "slow")
    assert endpoint["mode"] == "slow" and endpoint["times_slow"] == 1
    graph.create_user("kim")
    assert _wait_idle(graph, scheduled=False)
    assert len(receiver.items()) == 2  # held back ten (emulator) minutes
    _clock(graph, advance=601)
    assert len(receiver.wait_items(3)) == 3
    assert _endpoint_after(graph, receiver.url(), "normal")["mode"] == "normal"


DROP_RULES = ThrottleRules(min_samples=2, slow_response_s=50, drop_response_s=0.1, drop_ratio=0.15, drop_duration_s=600)


@pytest.mark.parametrize("emulator_config", [{"throttle": DROP_RULES}], indirect=True)
def test_dropping_endpoint_loses_notifications_and_says_missed(
    graph: EmulatorClient, emulator: EmulatorServer, receiver: Receiver, lifecycle: Receiver
) -> None:
    user = graph.create_user("lee")
    _subscribe(
        graph, receiver.url(), resource=f"users/{user['id']}/messages", changeType="created",
        lifecycleNotificationUrl=lifecycle.url(),
    )
    receiver.delay_s = lambda n: 0.15 if n <= 2 else 0.0
    for n in (1, 2):
        emulator.state.store.notify([_message_event(emulator, user["id"], message_id=f"m{n}")])
        receiver.wait_items(n)
    assert _endpoint_after(graph, receiver.url(), "drop")["mode"] == "drop"
    emulator.state.store.notify([_message_event(emulator, user["id"], message_id="m3")])
    assert [i["lifecycleEvent"] for i in lifecycle.wait_items(1)] == ["missed"]
    assert _wait_idle(graph)
    assert len(receiver.items()) == 2
    assert _report(graph)["droppedBy"] == {"endpointDrop": 1}
    _clock(graph, advance=601)
    emulator.state.store.notify([_message_event(emulator, user["id"], message_id="m4")])
    assert [i["resourceData"]["id"] for i in receiver.wait_items(3)][-1] == "m4"


def test_lifecycle_events_on_demand(graph: EmulatorClient, receiver: Receiver, lifecycle: Receiver) -> None:
    sub = _subscribe(graph, receiver.url(), lifecycleNotificationUrl=lifecycle.url())
    plain = _subscribe(graph, receiver.url(), resource="groups")
    for event in ("reauthorizationRequired", "missed"):
        fired = graph.admin("POST", f"subscriptions/{sub['id']}/lifecycle", json={"lifecycleEvent": event})
        assert fired.status_code == 202 and fired.json() == {"sent": True}
    items = lifecycle.wait_items(2)
    # Two POSTs may be in flight at once: Graph promises no order.
    assert sorted(i["lifecycleEvent"] for i in items) == ["missed", "reauthorizationRequired"]
    (reauthorize,) = [i for i in items if i["lifecycleEvent"] == "reauthorizationRequired"]
    assert reauthorize == {
        "subscriptionId": sub["id"],
        "subscriptionExpirationDateTime": reauthorize["subscriptionExpirationDateTime"],
        "tenantId": graph.info["tenant_id"],
        "clientState": "cs-1",
        "lifecycleEvent": "reauthorizationRequired",
    }
    assert receiver.items() == []  # lifecycle events go to the lifecycle URL only
    no_url = graph.admin("POST", f"subscriptions/{plain['id']}/lifecycle", json={"lifecycleEvent": "missed"})
    assert no_url.json() == {"sent": False}
    assert graph.admin("POST", f"subscriptions/{sub['id']}/lifecycle", json={"lifecycleEvent": "nope"}).status_code == 400
    assert graph.admin("POST", "subscriptions/unknown/lifecycle", json={"lifecycleEvent": "missed"}).status_code == 404

    removed = graph.admin("DELETE", f"subscriptions/{sub['id']}")
    assert removed.json() == {"removed": True, "lifecycleSent": True}
    assert lifecycle.wait_items(3)[-1]["lifecycleEvent"] == "subscriptionRemoved"
    assert graph.get(f"subscriptions/{sub['id']}").status_code == 404
    graph.create_user("mia")
    assert _wait_idle(graph)
    assert receiver.items() == []  # the removed users subscription gets nothing (the other one is on groups)


@pytest.mark.parametrize(
    "emulator_config", [{"reauthorization_lead_s": 3600, "reauthorization_interval_s": 600}], indirect=True
)
def test_reauthorization_required_as_expiry_nears(graph: EmulatorClient, lifecycle: Receiver, receiver: Receiver) -> None:
    sub = _subscribe(graph, receiver.url(), lifecycleNotificationUrl=lifecycle.url(), expirationDateTime=_in(50))
    _clock(graph, freeze=True)
    assert _wait_idle(graph)
    assert lifecycle.items() == []
    _clock(graph, advance=601)
    assert [i["lifecycleEvent"] for i in lifecycle.wait_items(1)] == ["reauthorizationRequired"]
    _clock(graph, advance=300)
    assert _wait_idle(graph) and len(lifecycle.items()) == 1
    _clock(graph, advance=301)
    assert len(lifecycle.wait_items(2)) == 2
    renewed = graph.patch(f"subscriptions/{sub['id']}", json={"expirationDateTime": _in(24 * 60)})
    assert renewed.status_code == 200
    _clock(graph, advance=601)
    assert _wait_idle(graph) and len(lifecycle.items()) == 2


@pytest.mark.parametrize(
    "emulator_config", [{"reauthorization_lead_s": 3600, "reauthorization_interval_s": 600}], indirect=True
)
def test_a_renewal_into_the_lead_window_brings_reauthorization_forward(
    graph: EmulatorClient, lifecycle: Receiver, receiver: Receiver
) -> None:
    sub = _subscribe(graph, receiver.url(), lifecycleNotificationUrl=lifecycle.url(), expirationDateTime=_in(24 * 60))
    _clock(graph, freeze=True)
    _clock(graph, advance=601)
    assert _wait_idle(graph) and lifecycle.items() == []
    # About 50 minutes left on the emulator clock: inside the hour's lead, so a notice is due once the interval
    # since the renewal has passed (not a day later, when the old expiration would have entered the lead).
    assert graph.patch(f"subscriptions/{sub['id']}", json={"expirationDateTime": _in(60)}).status_code == 200
    _clock(graph, advance=300)
    assert _wait_idle(graph) and lifecycle.items() == []
    _clock(graph, advance=301)
    assert [i["lifecycleEvent"] for i in lifecycle.wait_items(1)] == ["reauthorizationRequired"]


def test_injected_faults(graph: EmulatorClient, receiver: Receiver) -> None:
    _subscribe(graph, receiver.url())
    assert graph.admin("POST", "delivery/faults", json={"drop": 1}).json()["drop"] == 1
    graph.create_user("nat")
    assert _wait_idle(graph)
    assert receiver.items() == [] and _report(graph)["droppedBy"] == {"fault": 1}

    graph.admin("POST", "delivery/faults", json={"drop": 0, "duplicate": 1})
    graph.create_user("oli")
    items = receiver.wait_items(2)
    assert len(items) == 2 and items[0] == items[1]

    graph.admin("DELETE", "delivery/faults")
    graph.admin("POST", "delivery/faults", json={"reorder": 1, "reorderSeconds": 0.5})
    first = graph.create_user("pam")
    graph.admin("DELETE", "delivery/faults")
    second = graph.create_user("quinn")
    items = receiver.wait_items(4)
    assert [i["resourceData"]["id"] for i in items[2:]] == [second["id"], first["id"]]

    _clock(graph, freeze=True)
    graph.admin("POST", "delivery/faults", json={"delay": 1, "delaySeconds": 30})
    graph.create_user("rob")
    assert _wait_idle(graph, scheduled=False)
    assert len(receiver.items()) == 4
    _clock(graph, advance=31)
    assert len(receiver.wait_items(5)) == 5
    report = _report(graph)
    assert (report["duplicated"], report["reordered"], report["delayed"]) == (1, 1, 1)
    assert graph.admin("POST", "delivery/faults", json={"drop": 2}).status_code == 400
    assert graph.admin("POST", "delivery/faults", json={"bogus": 1}).status_code == 400


def test_same_seed_same_faults(receiver: Receiver, tmp_path: Any) -> None:
    outcomes = []
    for run in range(2):
        with EmulatorServer(EmulatorConfig(seed=99, delivery_tick_s=0.005), workdir=tmp_path / str(run)) as emu:
            graph = EmulatorClient(emu)
            _subscribe(graph, receiver.url(f"run{run}"))
            graph.admin("POST", "delivery/faults", json={"drop": 0.5})
            ids = [graph.create_user(f"s{n}")["id"] for n in range(12)]
            assert _wait_idle(graph)
            got = {i["resourceData"]["id"] for i in receiver.items(f"run{run}")}
            outcomes.append([ids.index(i) for i in ids if i in got])
            graph.close()
    assert outcomes[0] == outcomes[1]
    assert 0 < len(outcomes[0]) < 12


def test_deleted_subscription_gets_nothing_more(graph: EmulatorClient, receiver: Receiver) -> None:
    sub = _subscribe(graph, receiver.url())
    _clock(graph, freeze=True)
    graph.admin("POST", "delivery/faults", json={"delay": 1, "delaySeconds": 10})
    graph.create_user("sam")
    assert graph.delete(f"subscriptions/{sub['id']}").status_code == 204
    _clock(graph, advance=11)
    assert _wait_idle(graph)
    assert receiver.items() == []
    assert _report(graph)["droppedBy"] == {"subscriptionGone": 1}


def test_expired_subscription_gets_nothing(graph: EmulatorClient, receiver: Receiver) -> None:
    _subscribe(graph, receiver.url(), expirationDateTime=_in(50))
    _clock(graph, advance=51 * 60)
    graph._token = None
    graph.create_user("tess")
    assert _wait_idle(graph)
    assert receiver.items() == []
    assert graph.get("subscriptions").json()["value"] == []


def _certificate() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rx")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=9))
        .sign(key, hashes.SHA256())
    )
    return key, base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


def test_rich_notifications_decrypt_and_carry_valid_tokens(
    graph: EmulatorClient, emulator: EmulatorServer, receiver: Receiver
) -> None:
    user = graph.create_user("uma")
    key, cert = _certificate()
    sub = _subscribe(
        graph, receiver.url(), resource=f"users/{user['id']}/messages?$select=subject,isRead", changeType="created",
        includeResourceData=True, encryptionCertificate=cert, encryptionCertificateId="cert-1",
    )
    created = graph.post(
        f"users/{user['id']}/mailFolders/inbox/messages",
        json={"subject": "Grüße", "body": {"contentType": "text", "content": "secret body"}},
    ).json()
    receiver.wait_items(1)
    post = receiver.received[0].body
    item = post["value"][0]
    assert item["subscriptionId"] == sub["id"] and item["changeType"] == "created"
    assert item["resourceData"]["id"] == created["id"]
    content = item["encryptedContent"]
    assert content["encryptionCertificateId"] == "cert-1"
    # decrypt as the docs tell a receiver to
    oaep = asym_padding.OAEP(mgf=asym_padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    data_key = key.decrypt(base64.b64decode(content["dataKey"]), oaep)
    data = base64.b64decode(content["data"])
    mac = crypto_hmac.HMAC(data_key, hashes.SHA256())
    mac.update(data)
    mac.verify(base64.b64decode(content["dataSignature"]))
    decryptor = Cipher(algorithms.AES(data_key), modes.CBC(data_key[:16])).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    plain = unpadder.update(decryptor.update(data) + decryptor.finalize()) + unpadder.finalize()
    resource = json.loads(plain)
    assert resource["subject"] == "Grüße" and resource["isRead"] == created["isRead"] and resource["id"] == created["id"]
    assert resource["@odata.type"] == "#Microsoft.Graph.Message"
    assert set(resource) == {"@odata.type", "@odata.id", "@odata.etag", "id", "subject", "isRead"}  # $select only
    # validation tokens: one for our (app, tenant), signed with a key from the emulator's JWKS
    (token,) = post["validationTokens"]
    jwks_uri = graph.session.get(
        f"{graph.info['authority']}/v2.0/.well-known/openid-configuration", timeout=10
    ).json()["jwks_uri"]
    keys = graph.session.get(jwks_uri, timeout=10).json()["keys"]
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in keys if k["kid"] == kid]
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience=graph.info["client_id"],
        issuer=f"https://sts.windows.net/{graph.info['tenant_id']}/",
    )
    assert claims["appid"] == "0bf30f3b-4a52-48df-9a82-234910c4a086"


def test_every_resource_type_through_the_write_api(graph: EmulatorClient, receiver: Receiver) -> None:
    user = graph.create_user("wes")
    uid, upn = user["id"], user["userPrincipalName"]
    drive_id = graph.get(f"users/{uid}/drive").json()["id"]
    lists = graph.get(f"users/{uid}/todo/lists").json()["value"]
    list_id = lists[0]["id"]
    subscriptions = {
        "inbox": _subscribe(graph, receiver.url("inbox"), resource=f"users/{upn}/mailFolders('Inbox')/messages", changeType="created,updated,deleted"),
        "messages": _subscribe(graph, receiver.url("messages"), resource=f"/users/{uid}/messages", changeType="created"),
        "events": _subscribe(graph, receiver.url("events"), resource=f"users/{uid}/events", changeType="created"),
        "contacts": _subscribe(graph, receiver.url("contacts"), resource=f"users/{uid}/contacts", changeType="created"),
        "tasks": _subscribe(graph, receiver.url("tasks"), resource=f"users/{uid}/todo/lists/{list_id}/tasks", changeType="created"),
        "drive": _subscribe(graph, receiver.url("drive"), resource=f"drives/{drive_id}/root", changeType="updated"),
        "mydrive": _subscribe(graph, receiver.url("mydrive"), resource=f"users/{uid}/drive/root", changeType="updated"),
    }
    message = graph.post(f"users/{uid}/mailFolders/inbox/messages", json={"subject": "hello"}).json()
    assert graph.post(f"users/{uid}/mailFolders/drafts/messages", json={"subject": "draft"}).status_code == 201
    graph.patch(f"users/{uid}/messages/{message['id']}", json={"isRead": True})
    graph.delete(f"users/{uid}/messages/{message['id']}")
    graph.post(f"users/{uid}/events", json={
        "subject": "standup", "start": {"dateTime": "2026-12-01T09:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-01T09:15:00", "timeZone": "UTC"},
    })
    graph.post(f"users/{uid}/contacts", json={"givenName": "Ana"})
    graph.post(f"users/{uid}/todo/lists/{list_id}/tasks", json={"title": "t"})
    graph.post(f"drives/{drive_id}/root/children", json={"name": "docs", "folder": {}})
    assert _wait_idle(graph)

    inbox = receiver.items("inbox")
    # Graph does not promise the order of notifications, and two POSTs to one URL may be in flight at
    # once (https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks).
    assert sorted(i["changeType"] for i in inbox) == ["created", "deleted", "updated"]
    (created,) = [i for i in inbox if i["changeType"] == "created"]
    assert created["resource"] == f"Users/{uid}/Messages/{message['id']}"
    assert created["resourceData"]["@odata.type"] == "#Microsoft.Graph.Message"
    assert created["resourceData"]["id"] == message["id"] and "@odata.etag" in created["resourceData"]
    assert all(i["subscriptionId"] == subscriptions["inbox"]["id"] for i in inbox)
    assert len(receiver.items("messages")) == 2  # the whole mailbox: inbox and drafts
    (event,) = receiver.items("events")
    assert event["resource"].startswith(f"Users/{uid}/Events/")
    assert event["resourceData"]["@odata.type"] == "#Microsoft.Graph.Event"
    assert len(receiver.items("contacts")) == 1 and len(receiver.items("tasks")) == 1
    for path in ("drive", "mydrive"):
        (item,) = receiver.items(path)
        assert item["changeType"] == "updated" and item["resourceData"] is None
        assert item["resource"].lower() == f"drives/{drive_id}/root".lower()
    assert graph.post("subscriptions", json={
        "resource": "drives/b!nope/root", "changeType": "updated", "notificationUrl": receiver.url(),
        "expirationDateTime": _in(60)}).status_code == 404


def test_stop_is_clean_even_with_a_slow_receiver(receiver: Receiver, tmp_path: Any) -> None:
    emu = EmulatorServer(EmulatorConfig(seed=3, delivery_tick_s=0.005), workdir=tmp_path / "emu").start()
    graph = EmulatorClient(emu)
    _subscribe(graph, receiver.url())
    receiver.delay_s = 1.0
    graph.create_user("vic")
    assert receiver.wait_for(lambda: receiver.attempts == 1)
    started = time.monotonic()
    emu.stop()
    graph.close()
    assert time.monotonic() - started < 5
    names = {t.name for t in threading.enumerate()}
    assert not any(n.startswith(("emu-dispatcher", "emu-deliver")) for n in names)


def test_thousands_of_notifications_to_a_fast_receiver(graph: EmulatorClient, receiver: Receiver) -> None:
    count = 3000
    assert graph.admin("POST", "seed", json={"users": count}).status_code == 200
    _subscribe(graph, receiver.url(), changeType="updated")
    started = time.monotonic()
    burst = graph.admin("POST", "delivery/burst", json={"count": count})
    assert burst.json()["changed"] == count
    items = receiver.wait_items(count, timeout=20)
    elapsed = time.monotonic() - started
    assert len(items) == count
    assert len({i["resourceData"]["id"] for i in items}) == count
    assert count / elapsed > 1000, f"{count / elapsed:.0f} notifications/s"
    assert len(receiver.received) < count / 10  # batched
    assert graph.admin("POST", "delivery/burst", json={"count": -1}).status_code == 400


def test_https_receivers_must_present_a_trusted_certificate(tmp_path: Any) -> None:
    files = write_server_files(tmp_path / "receiver-tls")
    with Receiver(tls=(str(files.server_cert), str(files.server_key))) as rx:
        assert rx.url().startswith("https://")
        with EmulatorServer(EmulatorConfig(seed=5, delivery_tick_s=0.005), workdir=tmp_path / "a") as emu:
            graph = EmulatorClient(emu)
            # default: the system trust store, which does not know the receiver's private CA
            refused = graph.post("subscriptions", json={
                "resource": "users", "changeType": "updated", "notificationUrl": rx.url(), "expirationDateTime": _in(60)})
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "ValidationError"
            graph.close()
        config = EmulatorConfig(seed=5, delivery_tick_s=0.005, notification_tls_verify=str(files.ca_cert))
        with EmulatorServer(config, workdir=tmp_path / "b") as emu:
            graph = EmulatorClient(emu)
            _subscribe(graph, rx.url())
            graph.create_user("xena")
            assert len(rx.wait_items(1)) == 1
            graph.close()


def test_reset_forgets_subscriptions_and_delivery_state(graph: EmulatorClient, receiver: Receiver) -> None:
    _subscribe(graph, receiver.url())
    graph.create_user("yan")
    receiver.wait_items(1)
    assert _wait_idle(graph)  # the delivery is counted before the reset, not after it
    graph.admin("POST", "delivery/faults", json={"drop": 1})
    assert graph.admin("POST", "reset").status_code == 204
    assert graph.get("subscriptions").json()["value"] == []
    report = _report(graph)
    assert report["delivered"] == 0 and report["log"] == [] and report["faults"]["drop"] == 0


@pytest.mark.parametrize("emulator_config", [{"notification_url_app_id_as_audience": True}], indirect=True)
def test_notification_url_app_id_as_token_audience_when_configured(graph: EmulatorClient, receiver: Receiver) -> None:
    user = graph.create_user("zoe")
    _, cert = _certificate()
    _subscribe(
        graph, receiver.url(), resource=f"users/{user['id']}/messages?$select=subject", changeType="created",
        includeResourceData=True, encryptionCertificate=cert, encryptionCertificateId="c",
        notificationUrlAppId="11111111-2222-3333-4444-555555555555",
    )
    graph.post(f"users/{user['id']}/mailFolders/inbox/messages", json={"subject": "s"})
    receiver.wait_items(1)
    (token,) = receiver.received[0].body["validationTokens"]
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == "11111111-2222-3333-4444-555555555555"


def test_held_delivery_resumes_on_reauthorize(graph: EmulatorClient, receiver: Receiver, lifecycle: Receiver) -> None:
    sub = _subscribe(graph, receiver.url(), lifecycleNotificationUrl=lifecycle.url())
    held = graph.admin(
        "POST", f"subscriptions/{sub['id']}/lifecycle", json={"lifecycleEvent": "reauthorizationRequired", "hold": True}
    )
    assert held.json() == {"sent": True}
    assert [i["lifecycleEvent"] for i in lifecycle.wait_items(1)] == ["reauthorizationRequired"]
    user = graph.create_user("abe")
    assert _wait_idle(graph)
    assert receiver.items() == [] and _report(graph)["heldNow"] == {sub["id"]: 1}
    assert graph.admin("GET", "subscriptions").json()["value"][0]["heldSince"] is not None
    assert graph.post(f"subscriptions/{sub['id']}/reauthorize").status_code == 204
    (item,) = receiver.wait_items(1)
    assert item["resourceData"]["id"] == user["id"]
    assert _report(graph)["heldNow"] == {}


@pytest.mark.parametrize("emulator_config", [{"lifecycle_events_all_types": True, "missed_min_interval_s": 0}], indirect=True)
def test_revoked_permission_holds_delivery_until_the_app_can_reauthorize(
    graph: EmulatorClient, receiver: Receiver, lifecycle: Receiver
) -> None:
    app = graph.admin("POST", "apps", json={"roles": ["User.Read.All"], "secret": "s"}).json()
    client_id = app["clientId"]

    def client() -> EmulatorClient:
        other = EmulatorClient(graph.server)
        other._token = graph.admin("POST", "token", json={"clientId": client_id}).json()["access_token"]
        return other

    sub = _subscribe(client(), receiver.url(), lifecycleNotificationUrl=lifecycle.url())
    graph.admin("PATCH", f"apps/{client_id}", json={"roles": []})
    graph.create_user("bea")
    assert [i["lifecycleEvent"] for i in lifecycle.wait_items(1)] == ["reauthorizationRequired"]
    assert _wait_idle(graph) and receiver.items() == []
    refused = client().post(f"subscriptions/{sub['id']}/reauthorize")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "ExtensionError"
    assert "Operation: Reauthorize" in refused.json()["error"]["message"]
    graph.admin("PATCH", f"apps/{client_id}", json={"roles": ["User.Read.All"]})
    assert client().post(f"subscriptions/{sub['id']}/reauthorize").status_code == 204
    assert len(receiver.wait_items(1)) == 1

    # held longer than the retry window: lost, and the app hears `missed`
    graph.admin("PATCH", f"apps/{client_id}", json={"roles": []})
    graph.create_user("cy")
    lifecycle.wait_items(2)
    _clock(graph, advance=5)
    assert [i["lifecycleEvent"] for i in lifecycle.wait_items(3)][-1] == "missed"
    assert _report(graph)["droppedBy"] == {"heldTooLong": 1}


def test_syncers_receiver_core_accepts_what_the_emulator_sends(
    graph: EmulatorClient, emulator: EmulatorServer, receiver: Receiver
) -> None:
    """The emulator and syncer's receiver are independent readings of the docs: they must agree on the wire."""
    from syncer.receiver import checks, notifications

    key, cert = _certificate()
    user = graph.create_user("dee")
    plain = _subscribe(graph, receiver.url(), lifecycleNotificationUrl=receiver.url("lifecycle"))
    rich = _subscribe(
        graph, receiver.url(), resource=f"users/{user['id']}/messages?$select=subject", changeType="created",
        includeResourceData=True, encryptionCertificate=cert, encryptionCertificateId="c1",
    )
    graph.patch(f"users/{user['id']}", json={"jobTitle": "j"})
    message = graph.post(f"users/{user['id']}/mailFolders/inbox/messages", json={"subject": "hello"}).json()
    graph.admin("POST", f"subscriptions/{plain['id']}/lifecycle", json={"lifecycleEvent": "reauthorizationRequired"})
    assert _wait_idle(graph)

    subscriptions = {s["id"]: s for s in (plain, rich)}

    def lookup(ids: Any) -> dict[str, Any]:
        return {
            i: checks.SubscriptionInfo(i, emulator.config.tenant_id, "cs-1", "scope", subscriptions[i]["includeResourceData"])
            for i in ids
            if i in subscriptions
        }

    tokens = notifications.TokenValidator(
        notifications.StaticKeys({emulator.state.signing_kid: emulator.state.signing_key.public_key()}),
        app_ids=[graph.info["client_id"]],
    )
    keys = notifications.KeyRing([notifications.DecryptionKey("c1", key)])
    accepted = []
    for post in receiver.received:
        verdict = checks.check_collection(
            notifications.parse_collection(json.dumps(post.body)), lookup=lookup, tokens=tokens, keys=keys
        )
        assert verdict.rejected == ()
        accepted.extend(verdict.accepted)
    kinds = sorted((a.notification.kind, a.notification.event) for a in accepted)
    assert kinds == [("change", "created"), ("change", "updated"), ("lifecycle", "reauthorizationRequired")]
    (decrypted,) = [a.decrypted for a in accepted if a.decrypted is not None]
    assert decrypted["subject"] == "hello" and decrypted["id"] == message["id"]
