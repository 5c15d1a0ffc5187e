"""Owner columns from the scope: every row of a per-owner resource says whose it is (user, folder, list, drive).

Against the emulator over HTTP, on SQLite and PostgreSQL: one user declared by id and one by UPN; the rows'
``user_id`` is the user's id either way, looked up once per scope and kept in the scope's state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_sync_support import SyncEnv, make_env

from syncer import mirror, owners, resources, schema, verify
from syncer.worker.scheduler import sync_once

SPEC = """
  - name: mail
    resource: users/{{user}}/messages
    for_each: {{users: [{first}, {upn}]}}
    mirror: {{table: messages, columns: [subject, isRead]}}
  - name: inbox
    resource: users/{{user}}/mailFolders/inbox/messages
    for_each: {{users: [{first}, {upn}]}}
    mirror: {{table: inbox, columns: [subject]}}
  - name: calendar
    resource: users/{{user}}/events
    for_each: {{users: [{first}, {upn}]}}
    mirror: {{table: events, columns: [subject]}}
  - name: contacts
    resource: users/{{user}}/contacts
    for_each: {{users: [{first}, {upn}]}}
    mirror: {{table: contacts, columns: [displayName]}}
  - name: tasks
    resource: users/{first}/todo/lists/{first_list}/tasks
    mirror: {{table: tasks, columns: [title]}}
  - name: tasks-upn
    resource: users/{upn}/todo/lists/{upn_list}/tasks
    mirror: {{table: tasks_upn, columns: [title]}}
  - name: files
    resource: users/{{user}}/drive/root
    for_each: {{users: [{first}, {upn}]}}
    mirror: {{table: files, columns: [name]}}
"""

TABLES = ("messages", "inbox", "events", "contacts", "tasks", "files")
# One To Do list per user (the fan-out over each user's lists is issue 16's To Do part): both users' tasks.


@pytest.fixture
def people(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[tuple[SyncEnv, dict[str, str]]]:
    seeded = graph.admin(
        "POST", "seed",
        json={"users": 2, "messagesPerUser": 3, "eventsPerUser": 2, "contactsPerUser": 2, "tasksPerUser": 2,
              "driveItemsPerUser": 2, "contentUsers": 2},
    )
    assert seeded.status_code == 200, seeded.text
    listed = graph.get("users?$select=id,userPrincipalName").json()["value"]
    ids = sorted(u["id"] for u in listed)[:2]
    upns = {u["id"]: u["userPrincipalName"] for u in listed}
    first, second = ids
    lists = {u: graph.get(f"users/{u}/todo/lists").json()["value"][0]["id"] for u in ids}
    spec = SPEC.format(first=first, upn=upns[second], first_list=lists[first], upn_list=lists[second])
    for env in make_env(tmp_path, emulator_info, database_url, graph, spec):
        yield env, {"first": first, "second": second, "upn": upns[second]}


def owner_rows(env: SyncEnv, table: str, *columns: str) -> dict[str, tuple[Any, ...]]:
    t = sa.table(table, sa.column("id"), sa.column("_deleted_at"), *(sa.column(c) for c in columns))
    with env.engine.connect() as connection:
        rows = connection.execute(sa.select(t.c.id, *(t.c[c] for c in columns)).where(t.c._deleted_at.is_(None)))
        return {r[0]: tuple(r[1:]) for r in rows}


def truth(env: SyncEnv, users: list[str]) -> dict[str, dict[str, tuple[Any, ...]]]:
    """For each table, item id -> its owners, read from Graph folder by folder (the emulator's truth)."""
    g = env.graph
    out: dict[str, dict[str, tuple[Any, ...]]] = {t: {} for t in TABLES}
    for user in users:
        for folder in (f["id"] for f in g.delta_all(f"users/{user}/mailFolders/delta")[0] if "@removed" not in f):
            for m in env.truth(f"users/{user}/mailFolders/{folder}/messages/delta"):
                out["messages"][m] = (user, folder)
        inbox = g.get(f"users/{user}/mailFolders/inbox").json()["id"]
        out["inbox"].update((m, (user, inbox)) for m in env.truth(f"users/{user}/mailFolders/inbox/messages/delta"))
        window = "startDateTime=2000-01-01T00:00:00Z&endDateTime=2100-01-01T00:00:00Z"
        out["events"].update((e, (user,)) for e in env.truth(f"users/{user}/calendarView/delta?{window}"))
        for folder in (f["id"] for f in g.delta_all(f"users/{user}/contactFolders/delta")[0] if "@removed" not in f):
            out["contacts"].update((c, (user, folder)) for c in env.truth(f"users/{user}/contactFolders/{folder}/contacts/delta"))
        todo = g.get(f"users/{user}/todo/lists").json()["value"][0]["id"]
        out["tasks"].update((t, (user, todo)) for t in env.truth(f"users/{user}/todo/lists/{todo}/tasks/delta"))
        drive = g.get(f"users/{user}/drive").json()["id"]
        items, _ = g.delta_all(f"users/{user}/drive/root/delta")
        out["files"].update((i["id"], (drive, user)) for i in items if "deleted" not in i and "@removed" not in i)
    return out


COLUMNS = {
    "messages": ("user_id", "folder_id"),
    "inbox": ("user_id", "folder_id"),
    "events": ("user_id",),
    "contacts": ("user_id", "folder_id"),
    "tasks": ("user_id", "list_id"),
    "files": ("drive_id", "user_id"),
}


def assert_mirror_equals_truth(env: SyncEnv, users: list[str]) -> None:
    expected = truth(env, users)
    for table, columns in COLUMNS.items():
        found = owner_rows(env, table, *columns)
        if table == "tasks":
            found |= owner_rows(env, "tasks_upn", *columns)
        assert found == expected[table], table
        assert found, f"{table}: the seed gave it rows"


def test_every_row_of_a_per_owner_resource_carries_its_owners_whatever_the_declaration_named(
    people: tuple[SyncEnv, dict[str, str]],
) -> None:
    env, who = people
    users = [who["first"], who["second"]]
    clients = {env.tenant_id: env.client}
    env.graph.admin("DELETE", "requests")
    results = sync_once(env.spec, (), clients=clients, engine=env.engine)
    assert all(r.outcome == "ok" for r in results), results
    assert_mirror_equals_truth(env, users)
    asked = [r["path"] for r in env.graph.admin("GET", "requests?limit=5000").json()["requests"]]
    # The UPN is looked up once per declaration (the folders of a mailbox share the answer), never per row,
    # and the user given by id is not looked up at all.
    upn_lookups = [p for p in asked if p.lower() == f"/v1.0/users/{who['upn'].lower()}?$select=id"]
    assert 1 <= len(upn_lookups) <= 6, upn_lookups
    assert not [p for p in asked if p.startswith(f"/v1.0/users/{who['first']}?")]

    # The ids stay in the scope's state: later passes ask nothing again.
    s = schema.sync_state
    with env.engine.connect() as connection:
        kept = dict(connection.execute(
            sa.select(s.c.scope_key, s.c.owner_ids).where(s.c.scope_key == f"users/{who['upn']}/events")
        ).one()._mapping)
    assert kept["owner_ids"] == {"ids": {f"users/{who['upn']}": who["second"]}, "rows": {"user_id": who["second"]}}

    # Changes through Graph's API: a new message in the UPN user's inbox, a task, a file, a contact.
    g = env.graph
    upn = who["upn"]
    assert g.post(f"users/{upn}/mailFolders/inbox/messages", json={"subject": "new"}).status_code == 201
    todo = g.get(f"users/{upn}/todo/lists").json()["value"][0]["id"]
    assert g.post(f"users/{upn}/todo/lists/{todo}/tasks", json={"title": "new"}).status_code == 201
    assert g.post(f"users/{upn}/drive/root/children", json={"name": "new", "folder": {}}).status_code == 201
    assert g.post(f"users/{upn}/contacts", json={"displayName": "New"}).status_code == 201
    g.admin("DELETE", "requests")
    results = sync_once(env.spec, (), clients=clients, engine=env.engine)
    assert all(r.outcome == "ok" for r in results), results
    assert_mirror_equals_truth(env, users)
    asked = [r["path"] for r in g.admin("GET", "requests?limit=5000").json()["requests"]]
    assert not [p for p in asked if "?$select=id" in p and "delta" not in p], asked

    # syncer verify compares the owner columns too, asking Graph for the ids itself.
    by_tenant = {t.tenant_id: env.client for t in env.spec.tenants}
    assert verify.compare(env.engine, by_tenant, verify.declared(env.spec, by_tenant)) == []
    t = sa.table("events", sa.column("user_id"), sa.column("_scope"))
    with env.engine.begin() as connection:
        connection.execute(sa.update(t).where(t.c._scope == f"users/{upn}/events").values(user_id=who["first"]))
    differences = verify.compare(env.engine, by_tenant, verify.declared(env.spec, by_tenant))
    assert [(d.table, d.kind) for d in differences] == [("events", "changed")], differences
    assert "user_id" in differences[0].detail


def test_the_owner_columns_a_declaration_gets() -> None:
    """From the path and its delta path: a whole mailbox has folders; a user's drive needs its id looked up."""
    rt = resources.BY_KEY
    assert owners.columns_for(rt["message"], "users/{user}/messages") == ("user_id", "folder_id")
    assert owners.columns_for(rt["event"], "users/{user}/events") == ("user_id",)
    assert owners.columns_for(rt["driveItem"], "drives/b!x/root") == ("drive_id",)
    assert owners.columns_for(rt["driveItem"], "users/{user}/drive/root") == ("drive_id", "user_id")
    assert owners.columns_for(rt["user"], "users") == ()
    # An id is used as it is, a name is looked up (users/me as Graph writes it: me).
    guid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    values, lookups = owners.plan(rt["message"], ("user_id", "folder_id"), f"users/{guid}/mailFolders/AAMkAD%3D/messages")
    assert values == {"user_id": guid, "folder_id": "AAMkAD="} and lookups == {}
    values, lookups = owners.plan(rt["message"], ("user_id", "folder_id"), "me/mailFolders/Inbox/messages")
    assert lookups == {"user_id": "me", "folder_id": "me/mailFolders/Inbox"}
    assert owners.plan(rt["driveItem"], ("drive_id", "user_id"), "users/a@b.c/drive/root")[1] == {
        "drive_id": "users/a@b.c/drive", "user_id": "users/a@b.c",
    }


def without_owners(spec: Any) -> Any:
    """*spec* as the code before owner columns read it: no table has any."""
    subs = tuple(replace(sub, mirror=replace(sub.mirror, owners=(), indexed=())) for sub in spec.subscriptions)
    return replace(spec, subscriptions=subs)


def test_db_upgrade_adds_and_fills_the_owner_columns_of_a_mirror_made_before_them(
    people: tuple[SyncEnv, dict[str, str]],
) -> None:
    """A mirror written without owner columns gets them from its rows' _scope; what only Graph can tell (a UPN,
    the inbox's id, a OneDrive's id) waits for the next pass, which fills the rows it already has."""
    env, who = people
    users = [who["first"], who["second"]]
    clients = {env.tenant_id: env.client}
    old = without_owners(env.spec)
    engine = env.engine
    with engine.begin() as connection:  # the tables as the old code made them
        for table in ("messages", "inbox", "events", "contacts", "tasks", "tasks_upn", "files"):
            connection.execute(sa.text(f"DROP TABLE {table}"))
        connection.execute(sa.delete(schema.mirror_tables))
    mirror.upgrade(old, engine=engine)
    results = sync_once(old, (), clients=clients, engine=engine)
    assert all(r.outcome == "ok" for r in results), results
    assert "user_id" not in {c["name"] for c in sa.inspect(engine).get_columns("messages")}
    before = {t: set(owner_rows_raw(env, t)) for t in TABLES}

    changes = mirror.upgrade(env.spec, engine=engine)
    lines = {line.split(" (")[0]: line for line in changes if line.startswith("added owner columns")}
    assert set(lines) == {
        "added owner columns messages.user_id, folder_id", "added owner columns inbox.user_id, folder_id",
        "added owner columns events.user_id", "added owner columns contacts.user_id, folder_id",
        "added owner columns tasks.user_id, list_id", "added owner columns tasks_upn.user_id, list_id",
        "added owner columns files.drive_id, user_id",
    }, changes
    assert "created index ix_messages_user_id" in changes
    # The user given by id: filled at once. The user given by UPN, the inbox, a OneDrive: named, not filled.
    assert "wait for their scope's next pass" in lines["added owner columns messages.user_id, folder_id"]
    assert f"users/{who['upn']}" in lines["added owner columns messages.user_id, folder_id"]
    assert "wait" not in lines["added owner columns tasks.user_id, list_id"]
    first = owner_rows(env, "events", "user_id")
    assert {v for (v,) in first.values()} == {who["first"], None}
    assert mirror.upgrade(env.spec, engine=engine) == []  # nothing left to do

    # The next pass is incremental (no resync: the rows were not read again) and fills what waited.
    results = sync_once(env.spec, (), clients=clients, engine=engine)
    assert all(r.outcome == "ok" and not r.full for r in results), results
    assert {t: set(owner_rows_raw(env, t)) for t in TABLES} == before
    assert_mirror_equals_truth(env, users)


def owner_rows_raw(env: SyncEnv, table: str) -> dict[str, Any]:
    return {k: v["raw"].get("@odata.etag") for k, v in env.rows(table).items()}


def test_a_lookup_graph_refuses_leaves_the_column_empty_and_the_next_pass_fills_it(
    people: tuple[SyncEnv, dict[str, str]],
) -> None:
    """403 on GET users/{upn} (an app that may read mail but not users): the mail is mirrored all the same,
    user_id stays empty; once Graph answers, the next pass fills the rows it already has."""
    env, who = people
    upn, clients = who["upn"], {env.tenant_id: env.client}
    rule = {"type": "status", "status": 403, "code": "Authorization_RequestDenied",
            "path": "^/v1.0/users/[^/]+@[^/]+$", "method": "GET"}
    added = env.graph.admin("POST", "faults", json=rule)
    assert added.status_code in (200, 201), added.text
    results = sync_once(env.spec, ["calendar"], clients=clients, engine=env.engine)
    assert all(r.outcome == "ok" for r in results), results
    rows = owner_rows(env, "events", "user_id", "_scope")
    upn_rows = [v for v in rows.values() if v[1] == f"users/{upn}/events"]
    assert upn_rows and all(user_id is None for user_id, _ in upn_rows)
    assert all(user_id == who["first"] for user_id, key in rows.values() if key == f"users/{who['first']}/events")

    assert env.graph.admin("DELETE", "faults").status_code in (200, 204)
    results = sync_once(env.spec, ["calendar"], clients=clients, engine=env.engine)
    assert all(r.outcome == "ok" and not r.full for r in results), results
    rows = owner_rows(env, "events", "user_id", "_scope")
    assert {user_id for user_id, key in rows.values() if key == f"users/{upn}/events"} == {who["second"]}
