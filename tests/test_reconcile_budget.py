"""Reconcile at scale shares the tenant's budget with sync: envelopes a quarter of it at a time, 429s felt by both.

Against the emulator over HTTPS, on SQLite and PostgreSQL (our rows are written as each envelope returns).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from emulator_fixtures import EmulatorClient
from test_reconcile import World
from webhook_receiver import Receiver

from syncer.database import create_engine
from syncer.migrate import upgrade_core
from syncer.reconcile import graphs_for, reconcile
from syncer.reconcile.envelopes import envelopes_in_flight
from syncer.worker.scheduler import clients_for


@pytest.fixture
def world(graph: EmulatorClient, database_url: str, tmp_path: Path) -> Iterator[World]:
    upgrade_core(database_url)
    engine = create_engine(database_url)
    with Receiver() as receiver:
        yield World(graph, receiver, engine, database_url, tmp_path, [])
    engine.dispose()


def fan_out(users: list[str]) -> str:
    return f"""
  - name: mail
    resource: users/{{user}}/messages
    change_types: [created, updated]
    lifetime: 1d
    renew_before: 30m
    for_each: {{users: [{", ".join(users)}]}}
  - name: events
    resource: users/{{user}}/events
    change_types: [created, updated]
    lifetime: 1d
    renew_before: 30m
    for_each: {{users: [{", ".join(users)}]}}
"""


def users(world: World, count: int) -> list[str]:
    world.graph.admin("POST", "seed", json={"users": count, "contentUsers": 0})
    listed = world.graph.get(f"users?$select=id&$top={count + 10}").json()["value"]
    return [u["id"] for u in listed][:count]


def test_envelopes_take_a_quarter_of_the_tenant_budget_and_each_is_recorded(world: World) -> None:
    ids = users(world, 40)  # 80 creates: 4 envelopes of 20
    spec = world.spec(fan_out(ids)).with_concurrency(8)
    world.graph.admin("POST", "faults", json={"type": "latency", "ms": 500, "path": r"^/v1\.0/\$batch"})
    graphs = graphs_for(spec)
    graph = next(iter(graphs.values()))
    assert graph.max_in_flight_per_tenant == 8 and envelopes_in_flight(graph) == 2
    budget = graph.budget
    peak = 0
    running = True

    def watch() -> None:
        nonlocal peak
        while running:
            peak = max(peak, budget.in_flight)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        outcome = reconcile(spec, graphs=graphs, engine=world.engine, clock=world.now)
    finally:
        running = False
        watcher.join()
        for g in graphs.values():
            g.close()
    assert outcome.ok and outcome.plan.counts()["create"] == 80, [r.error for r in outcome.failed]
    assert peak == 2, peak  # two envelopes at a time: six of the eight slots stay with the mirror
    log = world.graph.admin("GET", "requests", params={"limit": 100000}).json()["requests"]
    assert sum(1 for e in log if e["path"].startswith("/v1.0/$batch")) == 4
    rows = world.rows()
    assert len(rows) == 80 and len({r.client_state for r in rows}) == 80


def test_an_item_throttled_during_reconcile_pauses_the_budget_sync_uses(world: World) -> None:
    ids = users(world, 15)  # 30 renewals: 2 envelopes
    spec = world.spec(fan_out(ids))
    first = world.run(spec)
    assert first.ok and first.plan.counts()["create"] == 30
    world.advance(timedelta(hours=23, minutes=45))  # every subscription inside its renew_before
    # The worker's clients for this spec: the ones its sync passes use, in the same process.
    syncing = next(iter(clients_for(spec).values()))
    budget = syncing.budget
    world.graph.admin("POST", "faults", json={"type": "status", "status": 429, "retryAfter": 2, "count": 1,
                                              "method": "PATCH", "path": r"^/v1\.0/subscriptions/"})
    graphs = graphs_for(spec)
    try:
        renewed = reconcile(spec, graphs=graphs, engine=world.engine, clock=world.now)
    finally:
        for g in graphs.values():
            g.close()
    assert renewed.ok and renewed.plan.counts()["renew"] == 30, [r.error for r in renewed.failed]
    assert budget.throttles == 1 and budget.limit == budget.cap // 2  # the mirror's budget heard reconcile's 429
    # Graph's view: all renewed (the throttled PATCH was resent: setting an expiry is idempotent).
    horizon = world.now() + timedelta(hours=12)
    live = world.live()
    assert len(live) == 30
    assert all(r.expires_at is not None and r.expires_at > horizon for r in renewed.results)
    rows = world.rows()
    assert all(row.expires_at.replace(tzinfo=horizon.tzinfo) > horizon for row in rows)
