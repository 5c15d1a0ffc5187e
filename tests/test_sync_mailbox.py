"""Per-mailbox declarations against the emulator: mail folder fan-out, calendarView window, To Do lists."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_sync_support import SyncEnv, make_env

from syncer import schema
from syncer.worker import scopes, sync
from syncer.worker.jobs import Worker
from syncer.worker.scheduler import sync_once
from syncer.worker.scopes import ScopeIndex

MAIL_SPEC = """
  - name: mail
    resource: users/{{user}}/messages
    for_each: {{users: [{user}]}}
    mirror:
      table: messages
      columns: [subject, {{field: receivedDateTime, column: received_at, type: datetime}}, isRead]
  - name: calendar
    resource: users/{{user}}/events
    for_each: {{users: [{user}]}}
    window: {{past: 30d, future: 90d}}
    mirror:
      table: events
      columns: [subject, {{field: start, column: starts_at, type: datetime}}]
"""


@pytest.fixture
def mailbox(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[tuple[SyncEnv, str]]:
    seeded = graph.admin("POST", "seed", json={"users": 3, "messagesPerUser": 6, "eventsPerUser": 4, "contentUsers": 1})
    assert seeded.status_code == 200, seeded.text
    user = seeded.json()["users"]["firstId"]
    for env in make_env(tmp_path, emulator_info, database_url, graph, MAIL_SPEC.format(user=user)):
        yield env, user


def folders_truth(env: SyncEnv, user: str) -> dict[str, str]:
    items, _ = env.graph.delta_all(f"users/{user}/mailFolders/delta")
    return {f["id"]: f.get("displayName", "") for f in items if "@removed" not in f}


def messages_truth(env: SyncEnv, user: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for folder in folders_truth(env, user):
        items, _ = env.graph.delta_all(f"users/{user}/mailFolders/{folder}/messages/delta?$select=id,subject,receivedDateTime,isRead")
        out.update({i["id"]: i for i in items if "@removed" not in i})
    return out


def scope_keys(env: SyncEnv) -> set[str]:
    s = schema.sync_state
    with env.engine.connect() as connection:
        return set(connection.execute(sa.select(s.c.scope_key)).scalars())


def test_a_mailbox_declaration_fans_out_over_its_folders(mailbox: tuple[SyncEnv, str]) -> None:
    env, user = mailbox
    declared = [s for s in scopes.declared_scopes(env.spec, names=["mail"])]
    assert [s.key for s in declared] == [f"users/{user}/mailFolders"] and declared[0].container
    results = sync_once(env.spec, ["mail"], clients={env.tenant_id: env.client}, engine=env.engine)
    assert all(r.outcome == "ok" for r in results), results
    folders = folders_truth(env, user)
    assert {f"users/{user}/mailFolders/{f}/messages" for f in folders} <= scope_keys(env)
    truth = messages_truth(env, user)
    rows = env.rows("messages")
    assert len(truth) >= 6 and set(rows) == set(truth)
    for item_id, item in truth.items():
        assert rows[item_id]["raw"] == item

    # A new folder with a message, and a new message in the inbox.
    created = env.graph.post(f"users/{user}/mailFolders", json={"displayName": "Projects"})
    assert created.status_code == 201, created.text
    projects = created.json()["id"]
    msg = env.graph.post(f"users/{user}/mailFolders/{projects}/messages", json={"subject": "kick-off"})
    assert msg.status_code == 201, msg.text
    inbox_msg = env.graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": "hello"})
    assert inbox_msg.status_code == 201, inbox_msg.text
    results = sync_once(env.spec, ["mail"], clients={env.tenant_id: env.client}, engine=env.engine)
    assert all(r.outcome == "ok" for r in results), results
    assert f"users/{user}/mailFolders/{projects}/messages" in scope_keys(env)
    rows = env.rows("messages")
    assert rows[msg.json()["id"]]["raw"]["subject"] == "kick-off"
    assert inbox_msg.json()["id"] in rows
    assert set(rows) == set(messages_truth(env, user))

    # The folder is deleted: its scope goes, its rows are marked deleted.
    assert env.graph.delete(f"users/{user}/mailFolders/{projects}").status_code == 204
    sync_once(env.spec, ["mail"], clients={env.tenant_id: env.client}, engine=env.engine)
    assert f"users/{user}/mailFolders/{projects}/messages" not in scope_keys(env)
    gone = env.rows("messages", live=False)[msg.json()["id"]]
    assert gone["deleted_at"] is not None and gone["reason"] == "deleted"
    assert set(env.rows("messages")) == set(messages_truth(env, user))


def test_a_deleted_message_is_removed_only_from_its_own_folder_scope(mailbox: tuple[SyncEnv, str]) -> None:
    env, user = mailbox
    sync_once(env.spec, ["mail"], clients={env.tenant_id: env.client}, engine=env.engine)
    victim = sorted(env.rows("messages"))[0]
    assert env.graph.delete(f"users/{user}/messages/{victim}").status_code == 204
    results = sync_once(env.spec, ["mail"], clients={env.tenant_id: env.client}, engine=env.engine)
    assert sum(r.deleted for r in results) == 1
    assert env.rows("messages", live=False)[victim]["reason"] == "deleted"
    assert set(env.rows("messages")) == set(messages_truth(env, user))


def test_events_follow_the_declared_calendar_window(mailbox: tuple[SyncEnv, str]) -> None:
    env, user = mailbox
    (scope,) = scopes.declared_scopes(env.spec, names=["calendar"])
    assert scope.key == f"users/{user}/events"
    assert "calendarView/delta?startDateTime=" in scope.initial_url and "$select" not in scope.initial_url
    result = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert result.outcome == "ok", result
    query = scope.initial_url.split("?", 1)[1]
    items, _ = env.graph.delta_all(f"users/{user}/calendarView/delta?{query}")
    truth = {i["id"]: i for i in items if "@removed" not in i}
    assert set(env.rows("events")) == set(truth)
    event = env.graph.post(f"users/{user}/events", json={
        "subject": "Review", "start": {"dateTime": "2030-01-01T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2030-01-01T11:00:00", "timeZone": "UTC"},
    })
    assert event.status_code == 201, event.text
    again = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert again.outcome == "ok"
    items, _ = env.graph.delta_all(f"users/{user}/calendarView/delta?{query}")
    truth = {i["id"]: i for i in items if "@removed" not in i}
    assert set(env.rows("events")) == set(truth)


DRIVE_SPEC = """
  - name: files
    resource: users/{{user}}/drive/root
    change_types: [updated]
    for_each: {{users: [{user}]}}
    mirror:
      table: files
      columns: [name, {{field: size, column: size, type: integer}}]
"""


@pytest.fixture
def drive_env(tmp_path: Path, emulator_info: dict[str, Any], sqlite_url: str, graph: Any) -> Iterator[tuple[SyncEnv, str]]:
    seeded = graph.admin("POST", "seed", json={"users": 2, "driveItemsPerUser": 3, "contentUsers": 1}).json()
    user = seeded["users"]["firstId"]
    for env in make_env(tmp_path, emulator_info, sqlite_url, graph, DRIVE_SPEC.format(user=user)):
        yield env, user


def test_drive_items_follow_the_drive_delta_and_its_deleted_facet(drive_env: tuple[SyncEnv, str]) -> None:
    env, user = drive_env
    (scope,) = scopes.declared_scopes(env.spec)
    assert scope.key == f"users/{user}/drive/root" and scope.strategy.deleted_facet
    assert sync.sync_scope(env.engine, env.client, scope, worker="w1").outcome == "ok"

    def truth() -> set[str]:
        items, _ = env.graph.delta_all(f"users/{user}/drive/root/delta")
        return {i["id"] for i in items if "deleted" not in i and "@removed" not in i}

    assert set(env.rows("files")) == truth() and len(truth()) >= 3
    drive = env.graph.get(f"users/{user}/drive").json()["id"]
    put = env.graph.request("PUT", f"drives/{drive}/root:/notes.txt:/content", data=b"hello",
                            headers={"Content-Type": "text/plain"})
    assert put.status_code in (200, 201), put.text
    root = env.graph.get(f"drives/{drive}/root").json()["id"]
    victim = next(i for i in sorted(env.rows("files")) if i != root)
    assert env.graph.delete(f"drives/{drive}/items/{victim}").status_code == 204
    result = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert result.outcome == "ok" and result.deleted == 1
    rows = env.rows("files", live=False)
    assert rows[victim]["reason"] == "deleted" and rows[put.json()["id"]]["raw"]["name"] == "notes.txt"
    assert set(env.rows("files")) == truth()


GROUP_MAIL_SPEC = """
  - name: team-mail
    resource: users/{{user}}/messages
    for_each: {{group: {group}}}
    mirror:
      table: team_messages
      columns: [subject]
"""


def test_fan_out_over_a_group_follows_its_membership(
    tmp_path: Path, emulator_info: dict[str, Any], sqlite_url: str, graph: Any
) -> None:
    graph.admin("POST", "seed", json={"users": 4, "groups": 1, "membersPerGroup": 1, "messagesPerUser": 2, "contentUsers": 2})
    group = graph.get("groups?$select=id").json()["value"][0]["id"]
    users = [u["id"] for u in graph.get("users?$select=id").json()["value"]]
    gen = make_env(tmp_path, emulator_info, sqlite_url, graph, GROUP_MAIL_SPEC.format(group=group))
    env = next(gen)
    try:
        index = ScopeIndex.of(scopes.declared_scopes(env.spec, clients={env.spec.tenants[0].name: env.client}))
        worker = Worker(env.engine, {env.tenant_id: env.client}, index, worker_id="w1", spec=env.spec)
        try:
            worker.register_scopes()
            assert len(worker.index.containers()) == 1
            newcomer = next(u for u in users if u not in {s.mailbox for s in worker.index.containers()})
            added = env.graph.post(f"groups/{group}/members/$ref", json={"@odata.id": f"{env.graph.graph}/directoryObjects/{newcomer}"})
            assert added.status_code == 204, added.text
            assert worker.refresh_scopes() == 1
            assert {s.mailbox for s in worker.index.containers()} >= {newcomer}
            assert f"users/{newcomer}/mailFolders" in scope_keys(env)
        finally:
            worker.close()
    finally:
        gen.close()



def test_a_member_who_leaves_the_group_leaves_the_mirror(
    tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any
) -> None:
    graph.admin("POST", "seed", json={"users": 3, "groups": 1, "membersPerGroup": 2, "messagesPerUser": 2, "contentUsers": 3})
    group = graph.get("groups?$select=id").json()["value"][0]["id"]
    members = sorted(m["id"] for m in graph.get(f"groups/{group}/members?$select=id").json()["value"])
    assert len(members) == 2
    leaver, stayer = members
    gen = make_env(tmp_path, emulator_info, database_url, graph, GROUP_MAIL_SPEC.format(group=group))
    env = next(gen)
    clients = {env.tenant_id: env.client}

    def mailbox_rows(user: str, *, live: bool = True) -> dict[str, str | None]:
        t = sa.table("team_messages", sa.column("id"), sa.column("_scope"), sa.column("_deleted_at"), sa.column("_removed_reason"))
        query = sa.select(t.c.id, t.c._removed_reason).where(t.c._scope.like(f"users/{user}/%"))
        if live:
            query = query.where(t.c._deleted_at.is_(None))
        with env.engine.connect() as connection:
            return {row.id: row._removed_reason for row in connection.execute(query)}

    try:
        index = ScopeIndex.of(scopes.declared_scopes(env.spec, clients={env.spec.tenants[0].name: env.client}))
        worker = Worker(env.engine, clients, index, worker_id="w1", spec=env.spec)
        try:
            worker.register_scopes()
            assert all(r.outcome == "ok" for r in sync_once(env.spec, clients=clients, engine=env.engine))
            assert len(mailbox_rows(leaver)) >= 2 and len(mailbox_rows(stayer)) >= 2
            kept = mailbox_rows(stayer)

            assert graph.delete(f"groups/{group}/members/{leaver}/$ref").status_code == 204
            # Another worker's pass is writing one of the leaver's folders: that scope waits for it.
            s = schema.sync_state
            busy = sorted(k for k in scope_keys(env) if k.startswith(f"users/{leaver}/mailFolders/"))[0]
            with env.engine.begin() as connection:
                connection.execute(sa.update(s).where(s.c.scope_key == busy).values(
                    leased_by="w2", lease_until=datetime.now(UTC) + timedelta(minutes=5)))
            assert worker.refresh_scopes() == 0
            assert {k for k in scope_keys(env) if k.startswith(f"users/{leaver}/")} == {busy}
            with env.engine.begin() as connection:
                connection.execute(sa.update(s).where(s.c.scope_key == busy).values(leased_by=None, lease_until=None))
            assert worker.retire_scopes() == 1
            # The leaver's mailbox is no longer followed: its scopes are forgotten and its rows leave
            # the live mirror (soft delete: kept, with the reason); the other member's stay as they were.
            assert not {k for k in scope_keys(env) if k.startswith(f"users/{leaver}/")}
            assert mailbox_rows(leaver) == {}
            gone = mailbox_rows(leaver, live=False)
            assert len(gone) >= 2 and set(gone.values()) == {"retired"}
            assert mailbox_rows(stayer) == kept
            assert worker.retire_scopes() == 0  # nothing left to retire

            # Back in the group: a new scope, enumerated in full, and the rows are live again.
            ref = {"@odata.id": f"{env.graph.graph}/directoryObjects/{leaver}"}
            assert graph.post(f"groups/{group}/members/$ref", json=ref).status_code == 204
            assert worker.refresh_scopes() == 1
            assert all(r.outcome == "ok" for r in sync_once(env.spec, clients=clients, engine=env.engine))
            assert set(mailbox_rows(leaver)) == set(gone)
        finally:
            worker.close()
    finally:
        gen.close()

TWO_MAILBOXES = """
  - name: mail
    resource: users/{{user}}/messages
    for_each: {{users: [{a}, {b}]}}
    mirror:
      table: messages
      columns: [subject]
"""


@pytest.fixture
def two_mailboxes(tmp_path: Path, emulator_info: dict[str, Any], sqlite_url: str, graph: Any) -> Iterator[tuple[SyncEnv, str, str]]:
    graph.admin("POST", "seed", json={"users": 2, "messagesPerUser": 3, "contentUsers": 2})
    a, b = sorted(u["id"] for u in graph.get("users?$select=id").json()["value"])
    for env in make_env(tmp_path, emulator_info, sqlite_url, graph, TWO_MAILBOXES.format(a=a, b=b)):
        yield env, a, b


def test_a_throttled_mailbox_does_not_hold_back_another(two_mailboxes: tuple[SyncEnv, str, str]) -> None:
    env, a, b = two_mailboxes
    rule = {"type": "status", "status": 429, "path": f"/users/{a}/", "retryAfter": 600, "count": 1000}
    assert env.graph.admin("POST", "faults", json=rule).status_code == 201
    index = ScopeIndex.of(scopes.declared_scopes(env.spec))
    worker = Worker(env.engine, {env.tenant_id: env.client}, index, worker_id="w1", spec=env.spec)
    try:
        worker.register_scopes()
        for _ in range(4):  # containers, then the folders they found
            worker.drain()
            worker.wait(timeout=60)
        by_mailbox: dict[str, set[str]] = {a: set(), b: set()}
        for result in worker.results:
            by_mailbox[a if f"users/{a}/" in result.scope + "/" else b].add(result.outcome)
        assert by_mailbox[a] == {"throttled"}
        assert by_mailbox[b] == {"ok"}
        assert len(env.rows("messages")) >= 3  # mailbox b is mirrored
        assert all(s.mailbox == a for s in worker.due_scopes()) or not worker.due_scopes()
    finally:
        worker.close()


TODO_SPEC = """
  - name: tasks
    resource: users/{{user}}/todo/lists/{todo_list}/tasks
    for_each: {{users: [{user}]}}
    mirror:
      table: tasks
      columns: [title, status]
"""


@pytest.fixture
def todo_env(tmp_path: Path, emulator_info: dict[str, Any], sqlite_url: str, graph: Any) -> Iterator[tuple[SyncEnv, str, str]]:
    seeded = graph.admin("POST", "seed", json={"users": 2, "tasksPerUser": 3, "contentUsers": 1}).json()
    user = seeded["users"]["firstId"]
    todo_list = graph.get(f"users/{user}/todo/lists").json()["value"][0]["id"]
    spec = TODO_SPEC.format(user=user, todo_list=todo_list)
    yield from ((env, user, todo_list) for env in make_env(tmp_path, emulator_info, sqlite_url, graph, spec))


def test_todo_tasks_are_synced_per_list(todo_env: tuple[SyncEnv, str, str]) -> None:
    env, user, todo_list = todo_env
    (scope,) = scopes.declared_scopes(env.spec)
    assert scope.key == f"users/{user}/todo/lists/{todo_list}/tasks" and not scope.container
    result = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert result.outcome == "ok", result
    task = env.graph.post(f"users/{user}/todo/lists/{todo_list}/tasks", json={"title": "milk"})
    assert task.status_code == 201, task.text
    assert sync.sync_scope(env.engine, env.client, scope, worker="w1").outcome == "ok"
    items, _ = env.graph.delta_all(f"users/{user}/todo/lists/{todo_list}/tasks/delta")
    truth = {i["id"] for i in items if "@removed" not in i}
    assert set(env.rows("tasks")) == truth and task.json()["id"] in truth and len(truth) >= 4


def test_the_calendar_window_is_moved_daily_by_a_full_round(mailbox: tuple[SyncEnv, str]) -> None:
    from datetime import timedelta

    from test_sync_support import Clock

    env, user = mailbox
    clock = Clock()
    index = ScopeIndex.of(scopes.declared_scopes(env.spec, names=["calendar"]))
    worker = Worker(env.engine, {env.tenant_id: env.client}, index, worker_id="w1", spec=None, clock=clock)
    try:
        worker.register_scopes()
        worker.drain()
        worker.wait(timeout=60)
        key = f"users/{user}/events"
        assert not env.state(key).resync_requested
        worker.safety_net()
        assert not env.state(key).resync_requested
        clock.advance(timedelta(days=1, seconds=1))
        worker.safety_net()
        assert env.state(key).resync_requested
    finally:
        worker.close()
