"""Concurrency across scopes: a tenant's shared budget of requests in flight, and Outlook's 4 per mailbox.

- TenantBudget alone (a fake clock): a 429 halves the budget and pauses it, successes grow it back.
- Over real HTTP: a 429 on one mailbox holds back the next call to *another* mailbox of the tenant.
- A worker at high concurrency (more pass threads than request slots) mirrors several mailboxes
  without ever having a fifth request in flight to one of them (the emulator enforces 4 and counts
  refusals), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from graph_fixtures import Harness
from test_sync_support import SyncEnv, make_env

from syncer.graph import limits
from syncer.graph.budget import TenantBudget
from syncer.graph.retry import RetryPolicy
from syncer.worker import scopes
from syncer.worker.jobs import Worker
from syncer.worker.scheduler import passes_for
from syncer.worker.scopes import ScopeIndex


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_429_halves_the_budget_and_successes_grow_it_back() -> None:
    clock = FakeClock()
    budget = TenantBudget(8, clock=clock)
    budget.throttled(None)
    assert budget.limit == 4 and budget.paused_until == 0.0
    budget.throttled(None)
    budget.throttled(None)
    budget.throttled(None)
    assert budget.limit == 1  # never below one
    for expected in (2, 3, 4):
        for _ in range(budget.limit):
            budget.succeeded()
        assert budget.limit == expected
    for _ in range(100):
        budget.succeeded()
    assert budget.limit == 8  # back to the cap, never above


def test_a_paused_budget_holds_new_requests_until_retry_after() -> None:
    clock = FakeClock()
    budget = TenantBudget(4, clock=clock)
    budget.throttled(5.0)
    entered = threading.Event()

    def take() -> None:
        with budget:
            entered.set()

    thread = threading.Thread(target=take)
    thread.start()
    assert not entered.wait(0.2)  # paused: nobody starts
    clock.now += 5.0
    assert entered.wait(5.0)  # the waiter wakes by itself once the pause is over
    thread.join()
    assert budget.in_flight == 0


def test_the_budget_caps_requests_in_flight() -> None:
    budget = TenantBudget(3)
    peak = 0
    lock = threading.Lock()
    inside = 0

    def work() -> None:
        nonlocal peak, inside
        with budget:
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.02)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3


def test_a_429_on_one_mailbox_slows_the_whole_tenant(harness: Harness) -> None:
    seeded = harness.admin("POST", "seed", json={"users": 2, "messagesPerUser": 2, "contentUsers": 2})["users"]
    first = seeded["firstId"]
    listed = harness.client().get_json("users?$select=id")["value"]
    other = next(u["id"] for u in listed if u["id"] != first)
    harness.fault(type="status", status=429, retryAfter=2, count=1, path=f"^/v1.0/users/{first}/messages")
    # A cap of its own (7): the budget is per (tenant, cap) and process-wide, so no other test shares it.
    client = harness.client(real_sleep=True, max_in_flight_per_tenant=7, retry=RetryPolicy(max_attempts=3))
    budget = limits.tenant_semaphore(client.tenant, 7)
    throttles = budget.throttles
    thread = threading.Thread(target=lambda: client.get_json(f"users/{first}/messages"))
    thread.start()
    deadline = time.monotonic() + 10
    while budget.throttles == throttles and time.monotonic() < deadline:
        time.sleep(0.01)
    assert budget.throttles == throttles + 1 and budget.limit == 3
    started = time.monotonic()
    assert len(client.get_json(f"users/{other}/messages")["value"]) == 2  # another mailbox, same tenant
    waited = time.monotonic() - started
    thread.join()
    assert waited >= 1.5, f"the other mailbox's call went out {waited:.2f}s after the 429 (Retry-After 2)"
    calls = [e for e in harness.requests_log("/messages") if e["status"] != 429]
    assert len(calls) == 2


MAILBOXES_SPEC = """
  - name: mail
    resource: users/{{user}}/messages
    for_each: {{users: all}}
    mirror: {{table: messages, columns: [subject]}}
  - name: contacts
    resource: users/{{user}}/contacts
    for_each: {{users: all}}
    mirror: {{table: contacts, columns: [givenName]}}
"""


@pytest.fixture
def tenant(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    seeded = graph.admin("POST", "seed", json={"users": 3, "messagesPerUser": 12, "contactsPerUser": 5,
                                               "contentUsers": 3})
    assert seeded.status_code == 200, seeded.text
    yield from make_env(tmp_path, emulator_info, database_url, graph, MAILBOXES_SPEC.format())


def test_many_passes_never_put_a_fifth_request_in_flight_to_a_mailbox(tenant: SyncEnv) -> None:
    env = tenant
    # Every mailbox call is slow, so that passes of one mailbox's folders overlap.
    assert env.graph.admin("POST", "faults", json={"type": "latency", "ms": 60, "path": "^/v1.0/users/[^/]+/"}).status_code < 300
    index = ScopeIndex.of(scopes.declared_scopes(env.spec, clients={env.spec.tenants[0].name: env.client}))
    worker = Worker(env.engine, {env.tenant_id: env.client}, index, max_passes=passes_for(16))
    worker.register_scopes()
    try:
        for _ in range(10):
            worker.start_due()
            worker.wait(timeout=60)
            if not worker.due_scopes():
                break
    finally:
        worker.close()
    assert worker.results and all(r.outcome == "ok" for r in worker.results), worker.results
    assert len(env.rows("messages")) == 3 * 12 and len(env.rows("contacts")) == 3 * 5
    assert env.graph.admin("GET", "faults").json()["mailboxRejections"] == 0
    # Several folders of each mailbox were passed at once: the cap, not a lack of overlap, kept us at 4.
    assert sum(1 for r in worker.results if "/mailFolders/" in r.scope) >= 3 * 5
