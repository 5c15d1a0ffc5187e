"""U+0000 in Graph data, on SQLite and PostgreSQL: stored as U+FFFD everywhere (syncer.storable).

PostgreSQL cannot store U+0000 in text, nor turn a json ``\\u0000`` into text: before the rule, a
notification carrying one was answered 503 on every retry, and a message whose subject held one
stopped its folder's sync for good.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import notification_builders as nb
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from test_receiver import RICH_SUB, SUB, Server, add_subscription, inbox_rows, make_receiver
from test_sync_support import USERS_SPEC, SyncEnv, make_env

from syncer import database, mirror, schema, verify
from syncer.inbox import Inbox, NewItem
from syncer.receiver.notifications import parse_collection
from syncer.spec import Column, Mirror
from syncer.storable import REPLACEMENT, storable
from syncer.worker import scopestate, sync
from syncer.worker.scheduler import sync_once
from syncer.worker.scopes import Scope, Strategy
from syncer.worker.writer import RowWriter, apply_items

NUL = "\x00"
FFFD = REPLACEMENT


def test_the_rule_replaces_every_nul_at_any_depth_and_keeps_clean_values() -> None:
    value = {"a\x00": ["x\x00y", {"n": "\x00\x00"}, 1, None, True], "b": ("t\x00",)}
    assert storable(value) == {"a\ufffd": ["x\ufffdy", {"n": "\ufffd\ufffd"}, 1, None, True], "b": ("t\ufffd",)}
    escaped = {"a": ["\\u0000 is six characters", {"n": 1}]}  # a backslash, not a NUL: kept as it is
    assert storable(escaped) == escaped
    clean = {"a": ["x", {"n": 1}]}
    assert storable(clean) is clean
    assert storable("plain") == "plain" and storable(None) is None


# --- the receiver and the inbox ------------------------------------------------------------------


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = database.create_engine(database_url)
    schema.metadata.create_all(engine)
    add_subscription(engine, SUB)
    yield engine
    engine.dispose()


@pytest.fixture
def receiver(engine: Engine) -> Iterator[Server]:
    server = make_receiver(engine)
    yield server
    server.close()


def _with_nul(where: str) -> dict[str, Any]:
    item = nb.change_item(SUB, user_id="u-1", etag='W/"1"', notification_id="n-1")
    if where == "payload":
        item["extra"] = {"deep": ["a\x00b"], "key\x00": 1}
    elif where == "resource":
        item["resource"] = "Users/u-1\x00"
    elif where == "resourceData.id":
        item["resourceData"]["id"] = "u-1\x00"
    elif where == "etag":
        item["resourceData"]["@odata.etag"] = 'W/"1\x00"'
    return item


@pytest.mark.parametrize("where", ["payload", "resource", "resourceData.id", "etag"])
def test_a_nul_in_an_authenticated_notification_is_stored_as_fffd(receiver: Server, engine: Engine, where: str) -> None:
    response = receiver.post("/notifications", nb.body(_with_nul(where)))
    assert response.status_code == 202, response.text
    (row,) = inbox_rows(engine)
    assert NUL not in repr(tuple(row)) and NUL not in repr(row.payload)
    if where == "payload":
        assert row.payload["extra"] == {"deep": [f"a{FFFD}b"], f"key{FFFD}": 1}
    elif where == "resource":
        assert row.resource == row.payload["resource"] == f"Users/u-1{FFFD}"
    elif where == "resourceData.id":
        assert row.resource_id == row.payload["resourceData"]["id"] == f"u-1{FFFD}"
    else:
        assert row.payload["resourceData"]["@odata.etag"] == f'W/"1{FFFD}"'
    # The row is readable as text on PostgreSQL too (->> fails on a json \u0000).
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            text = connection.execute(sa.text("SELECT payload::jsonb ->> 'resource' FROM syncer_inbox")).scalar_one()
            assert text == row.payload["resource"]


@pytest.mark.parametrize("where", ["subscriptionId", "tenantId", "clientState"])
def test_a_nul_in_an_id_or_secret_is_refused_without_a_503_or_an_error_line(
    receiver: Server, engine: Engine, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    item = nb.change_item(SUB, user_id="u-1")
    item[where] = ("\x00" if where == "subscriptionId" else item[where] + "\x00")
    with caplog.at_level(logging.WARNING):
        response = receiver.post("/notifications", nb.body(item, nb.change_item(SUB, user_id="u-2")))
    assert response.status_code == 202, response.text
    assert [r.resource_id for r in inbox_rows(engine)] == ["u-2"]  # its clean neighbour is stored
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_id_with_nul_is_malformed_at_parse_time() -> None:
    bad_sub = nb.change_item("\x00")
    bad_tenant = nb.change_item(SUB, tenant=nb.TENANT + "\x00")
    parsed = parse_collection(nb.body(bad_sub, bad_tenant, nb.change_item(SUB)))
    assert [(r.index, r.reason, r.subscription_id) for r in parsed.rejected] == [
        (0, "malformed_item", None), (1, "malformed_item", SUB)
    ]
    assert [n.index for n in parsed.notifications] == [2]


def test_the_inbox_stores_any_callers_row_under_the_rule(engine: Engine) -> None:
    inbox = Inbox(engine)
    item = NewItem("t", SUB, "change", "updated", "Users/a\x00", "a\x00", "k", {"resource": "Users/a\x00"})
    assert inbox.put([item]) == 1
    (claimed,) = inbox.claim("w")
    assert (claimed.resource, claimed.resource_id, claimed.payload) == (
        f"Users/a{FFFD}", f"a{FFFD}", {"resource": f"Users/a{FFFD}"}
    )


# --- the mirror writer ------------------------------------------------------------------------------


def test_the_writer_stores_nul_in_every_column_and_id_as_fffd(database_url: str) -> None:
    columns = (
        Column("displayName", "name", "text"), Column("tags", "tags", "json"), Column("owner.name", "owner", "text"),
        Column("odd", "odd", "text"),
    )
    m = Mirror(table="nul_items", columns=columns)
    scope = Scope(tenant_id="t", key="things", name="things", parent_key="things", table="nul_items",
                  strategy=Strategy("thing", "delta", "things/delta"), initial_url="things/delta", mirror=m)
    items: list[dict[str, Any]] = [
        {"id": "a", "displayName": "A\x00da", "tags": ["x\x00", {"k\x00": "v\x00"}], "owner": {"name": "\x00"},
         "odd": {"n": "\x00"}},
        {"id": "b\x00", "displayName": "plain"},
        {"id": "c", "displayName": "gone soon"},
    ]
    engine = database.create_engine(database_url)
    try:
        mirror.build_table(m).create(engine)
        for _ in range(2):  # on PostgreSQL: COPY straight into the new table, then the staged merge
            with engine.begin() as connection:
                apply_items(connection, RowWriter(engine, scope), items, now=scopestate.utcnow(), run_id=1)
        with engine.begin() as connection:
            removed = [{"id": "c\x00", "@removed": {"reason": "deleted\x00"}}, {"id": "c", "@removed": {"reason": "x\x00"}}]
            apply_items(connection, RowWriter(engine, scope), removed, now=scopestate.utcnow(), run_id=2)
        table = mirror.build_table(m)
        with engine.connect() as connection:
            stored = {r.id: r for r in connection.execute(sa.select(table))}
    finally:
        engine.dispose()
    assert set(stored) == {"a", f"b{FFFD}", "c"}
    a = stored["a"]
    assert (a.name, a.tags, a.owner, a.odd) == (f"A{FFFD}da", [f"x{FFFD}", {f"k{FFFD}": f"v{FFFD}"}], FFFD, f'{{"n":"{FFFD}"}}')
    assert a._raw == storable(items[0]) and stored[f"b{FFFD}"]._raw == {"id": f"b{FFFD}", "displayName": "plain"}
    assert stored["c"]._removed_reason == f"x{FFFD}"
    for row in stored.values():
        assert NUL not in repr(tuple(row))


def test_group_members_with_nul_are_stored_as_fffd(database_url: str) -> None:
    m = Mirror(table="nul_groups", columns=(Column("displayName", "name", "text"),))
    scope = Scope(tenant_id="t", key="groups", name="groups", parent_key="groups", table="nul_groups",
                  strategy=Strategy("group", "delta", "groups/delta", members=True), initial_url="groups/delta", mirror=m)
    members = [{"@odata.type": "#microsoft.graph.user\x00", "id": "m\x00"}, {"@odata.type": "#microsoft.graph.user", "id": "n"}]
    engine = database.create_engine(database_url)
    try:
        mirror.build_table(m).create(engine)
        mirror.build_members_table(m).create(engine)
        with engine.begin() as connection:
            group = {"id": "g\x00", "displayName": "G", "members@delta": members}
            apply_items(connection, RowWriter(engine, scope), [group], now=scopestate.utcnow(), run_id=1)
        with engine.begin() as connection:
            gone = {"id": "g\x00", "members@delta": [{"id": "n", "@removed": {"reason": "deleted"}}]}
            apply_items(connection, RowWriter(engine, scope), [gone], now=scopestate.utcnow(), run_id=2)
        table = mirror.build_members_table(m)
        with engine.connect() as connection:
            stored = connection.execute(sa.select(table.c.group_id, table.c.member_id, table.c.member_type)).all()
    finally:
        engine.dispose()
    assert [tuple(r) for r in stored] == [(f"g{FFFD}", f"m{FFFD}", f"#microsoft.graph.user{FFFD}")]


def test_decrypted_resource_data_with_nul_is_stored_as_fffd(engine: Engine) -> None:
    add_subscription(engine, RICH_SUB, rich=True)
    server = make_receiver(engine)
    try:
        item = nb.rich_item(RICH_SUB, public_key=nb.rsa_key("cert-new").public_key(), certificate_id="cert-2026-02",
                            resource={"id": "m-1", "body": {"content": "hel\x00lo"}})
        response = server.post("/notifications", nb.body(item, tokens=[nb.validation_token()]))
    finally:
        server.close()
    assert response.status_code == 202, response.text
    (row,) = inbox_rows(engine)
    assert row.payload["decryptedContent"]["body"]["content"] == f"hel{FFFD}lo"


# --- through the emulator: a subject / displayName with U+0000 syncs, and verify agrees --------------

MAIL_SPEC = """
  - name: mail
    resource: users/{{user}}/messages
    for_each: {{users: [{user}]}}
    mirror:
      table: messages
      columns: [subject, {{field: from, column: sender, type: json}}]
"""


@pytest.fixture
def mailbox(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[tuple[SyncEnv, str]]:
    seeded = graph.admin("POST", "seed", json={"users": 1, "messagesPerUser": 2})
    assert seeded.status_code == 200, seeded.text
    user = seeded.json()["users"]["firstId"]
    for env in make_env(tmp_path, emulator_info, database_url, graph, MAIL_SPEC.format(user=user)):
        yield env, user


def test_a_message_whose_subject_holds_nul_syncs_and_verifies(mailbox: tuple[SyncEnv, str]) -> None:
    env, user = mailbox
    created = env.graph.post(
        f"users/{user}/mailFolders/inbox/messages",
        json={"subject": "re\x00port", "from": {"emailAddress": {"name": "N\x00ul", "address": "n@example.test"}}},
    )
    assert created.status_code == 201, created.text
    assert created.json()["subject"] == "re\x00port"  # Graph (the emulator) keeps it
    clients = {env.tenant_id: env.client}
    message = created.json()["id"]
    # The first enumeration (COPY straight into the table), then an incremental pass (the merge).
    for subject in (f"re{FFFD}port", f"{FFFD}again"):
        results = sync_once(env.spec, ["mail"], clients=clients, engine=env.engine)
        assert all(r.outcome == "ok" for r in results), results
        row = env.rows("messages")[message]
        assert row["raw"]["subject"] == subject
        assert row["raw"]["from"]["emailAddress"]["name"] == f"N{FFFD}ul"
        assert verify.compare(env.engine, clients, verify.declared(env.spec, clients)) == []
        updated = env.graph.patch(f"users/{user}/messages/{message}", json={"subject": "\x00again"})
        assert updated.status_code == 200, updated.text
    with env.engine.connect() as connection:
        subject = connection.execute(sa.text("SELECT subject FROM messages WHERE id = :i"), {"i": message})
        assert subject.scalar_one() == f"{FFFD}again"


def test_a_user_whose_display_name_holds_nul_syncs_and_verifies(
    tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any
) -> None:
    for env in make_env(tmp_path, emulator_info, database_url, graph, USERS_SPEC.format(delete="soft")):
        user = env.graph.create_user("nul", displayName="Nul\x00Person")
        clients = {env.tenant_id: env.client}
        result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
        assert result.outcome == "ok", result
        assert env.rows("users")[user["id"]]["raw"]["displayName"] == f"Nul{FFFD}Person"
        assert verify.compare(env.engine, clients, verify.declared(env.spec, clients)) == []
