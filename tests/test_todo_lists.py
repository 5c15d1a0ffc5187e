"""To Do for many users (issue 16): ``users/{user}/todo/lists/{list}/tasks`` with ``{list}`` fanned out over each
user's lists. Reconcile makes one Graph subscription per list; the worker follows each user's lists by their delta
(a list that appears becomes a scope, a deleted one is retired with its rows), a notification on one list's
subscription syncs that list; the mirror equals Graph's truth (syncer.verify), on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import orjson
import sqlalchemy as sa
import test_reconcile
from test_reconcile import World

from syncer import mirror, verify
from syncer.inbox import Inbox, NewItem
from syncer.receiver.notifications import parse_collection
from syncer.reconcile import graphs_for
from syncer.worker import scopes
from syncer.worker.jobs import Worker
from syncer.worker.scheduler import sync_once
from syncer.worker.scopes import ScopeIndex

SPEC = """
  - name: tasks
    resource: users/{{user}}/todo/lists/{{list}}/tasks
    for_each: {{users: [{users}]}}
    lifetime: 1d
    mirror:
      table: tasks
      columns: [title, status]
"""

world = test_reconcile.world  # the fixture: emulator, test receiver, migrated database, three users


def _lists(world: World, user: str) -> dict[str, str]:
    r = world.graph.get(f"users/{user}/todo/lists")
    assert r.status_code == 200, r.text
    return {x["id"]: x["displayName"] for x in r.json()["value"]}


def _new_list(world: World, user: str, name: str, *titles: str) -> tuple[str, list[str]]:
    r = world.graph.post(f"users/{user}/todo/lists", json={"displayName": name})
    assert r.status_code == 201, r.text
    list_id = r.json()["id"]
    tasks = []
    for title in titles:
        t = world.graph.post(f"users/{user}/todo/lists/{list_id}/tasks", json={"title": title})
        assert t.status_code == 201, t.text
        tasks.append(t.json()["id"])
    return list_id, tasks


def _rows(world: World) -> dict[str, dict[str, Any]]:
    with world.engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT id, title, _scope, _deleted_at, _removed_reason FROM tasks")).mappings()
        return {r["id"]: dict(r) for r in rows}


def _state_keys(world: World) -> set[str]:
    with world.engine.connect() as connection:
        return set(connection.execute(sa.text("SELECT scope_key FROM syncer_sync_state")).scalars())


def test_todo_lists_of_many_users_end_to_end(world: World) -> None:
    ada, alan, _grace = world.users
    groceries, (milk, _eggs) = _new_list(world, ada, "Groceries", "milk", "eggs")
    _work, _ = _new_list(world, alan, "Work", "report")
    spec = world.spec(SPEC.format(users=f"{ada}, {alan}"))
    mirror.upgrade(spec, engine=world.engine)

    # One Graph subscription per list of each user.
    outcome = world.run(spec)
    assert outcome.ok, [r.error for r in outcome.failed]
    expected = {f"users/{u}/todo/lists/{lst}/tasks" for u in (ada, alan) for lst in _lists(world, u)}
    assert len(expected) >= 4  # each user's default list and the one made above
    assert {s["resource"] for s in world.live()} == expected
    (expansion,) = outcome.plan.expansions  # what the plan prints: one line per declaration
    assert expansion.noun == "lists" and len(expansion.users) == len(expected)
    assert expansion.source == "each user's To Do lists; users: listed in the spec"

    graphs = graphs_for(spec)
    try:
        def sync_and_verify() -> None:
            results = sync_once(spec, ["tasks"], clients=graphs, engine=world.engine)
            assert results and all(r.outcome == "ok" for r in results), results
            assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []

        sync_and_verify()
        # The declaration is a container per user, its lists child scopes.
        declared = scopes.declared_scopes(spec, clients={spec.tenants[0].name: next(iter(graphs.values()))})
        assert sorted(s.key for s in declared) == sorted(f"users/{u}/todo/lists" for u in (ada, alan))
        assert all(s.container for s in declared)
        assert expected <= _state_keys(world)
        rows = _rows(world)
        assert rows[milk]["title"] == "milk" and rows[milk]["_scope"] == f"users/{ada}/todo/lists/{groceries}/tasks"

        # A list appears (with a task), another is deleted: a scope comes, one goes with its rows.
        chores, (dishes,) = _new_list(world, alan, "Chores", "dishes")
        assert world.graph.delete(f"users/{ada}/todo/lists/{groceries}").status_code == 204
        sync_and_verify()
        keys = _state_keys(world)
        assert f"users/{alan}/todo/lists/{chores}/tasks" in keys
        assert f"users/{ada}/todo/lists/{groceries}/tasks" not in keys
        rows = _rows(world)
        assert rows[dishes]["_deleted_at"] is None
        assert rows[milk]["_deleted_at"] is not None and rows[milk]["_removed_reason"] == "deleted"

        # The next reconcile follows the lists: the new one gets its subscription, the deleted one's is pruned.
        outcome = world.run(spec, prune=True)
        assert outcome.ok, [r.error for r in outcome.failed]
        expected = {f"users/{u}/todo/lists/{lst}/tasks" for u in (ada, alan) for lst in _lists(world, u)}
        assert {s["resource"] for s in world.live()} == expected
    finally:
        for g in graphs.values():
            g.close()


def test_a_notification_on_one_list_syncs_that_list(world: World) -> None:
    """Graph's notification for a task of one list marks that list's scope (and the container, one lists delta)
    dirty, not every list of the user."""
    ada, _alan, _grace = world.users
    groceries, _ = _new_list(world, ada, "Groceries", "milk")
    spec = world.spec(SPEC.format(users=ada))
    mirror.upgrade(spec, engine=world.engine)
    assert world.run(spec).ok
    graphs = graphs_for(spec)
    tenant = spec.tenants[0].tenant_id
    try:
        index = ScopeIndex.of(scopes.declared_scopes(spec, clients={spec.tenants[0].name: graphs[tenant]}))
        worker = Worker(world.engine, graphs, index, worker_id="w1", spec=spec)
        try:
            worker.register_scopes()
            for _ in range(3):  # the container, then the lists it found
                worker.drain()
                worker.wait(timeout=60)
            assert worker.drain().started == ()
            world.receiver.received.clear()
            task = world.graph.post(f"users/{ada}/todo/lists/{groceries}/tasks", json={"title": "bread"}).json()
            deadline = time.monotonic() + 20
            while not world.receiver.received and time.monotonic() < deadline:
                time.sleep(0.05)
            assert world.receiver.received, "the emulator delivered no notification"
            note = world.receiver.received[0].body["value"][0]
            (parsed,) = parse_collection(orjson.dumps({"value": [note]})).notifications  # as syncer's receiver reads it
            Inbox(world.engine).put([NewItem(
                tenant_id=tenant, subscription_id=parsed.subscription_id, kind=parsed.kind, event=parsed.event,
                resource=parsed.resource, resource_id=parsed.resource_id, dedupe_key=parsed.dedupe_key,
                payload=parsed.payload())])
            drained = worker.drain()
            worker.wait(timeout=60)
            assert sorted(drained.started) == sorted([f"users/{ada}/todo/lists", f"users/{ada}/todo/lists/{groceries}/tasks"])
            assert _rows(world)[task["id"]]["title"] == "bread"

            # missed: that list is enumerated again from scratch; subscriptionRemoved: its subscription is
            # made again for the same list.
            key = f"users/{ada}/todo/lists/{groceries}/tasks"
            Inbox(world.engine).put([NewItem(
                tenant_id=tenant, subscription_id=note["subscriptionId"], kind="lifecycle", event="missed",
                resource=None, resource_id=None, dedupe_key="k2", payload={"lifecycleEvent": "missed"})])
            worker.drain(start=False)
            with world.engine.connect() as connection:
                resync = dict(connection.execute(sa.text(
                    "SELECT scope_key, resync_requested FROM syncer_sync_state")).all())
            assert resync[key] and resync[f"users/{ada}/todo/lists"]
            assert sum(bool(v) for v in resync.values()) == 2, resync
            assert world.graph.delete(f"subscriptions/{note['subscriptionId']}").status_code == 204
            Inbox(world.engine).put([NewItem(
                tenant_id=tenant, subscription_id=note["subscriptionId"], kind="lifecycle", event="subscriptionRemoved",
                resource=None, resource_id=None, dedupe_key="k3", payload={"lifecycleEvent": "subscriptionRemoved"})])
            worker.drain(start=False)
            remade = [s for s in world.live() if s["resource"] == key]
            assert len(remade) == 1 and remade[0]["id"] != note["subscriptionId"]
        finally:
            worker.close()
    finally:
        for g in graphs.values():
            g.close()
