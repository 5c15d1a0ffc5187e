"""Chats (the ``chat`` type) end to end (issue 14): ``chats`` (the tenant's, application only), a user's chats
(``users/{user}/chats``) and one chat (``chats/{chat}``, updated only) declared and reconciled against the emulator;
chats created, renamed and deleted through Graph's write API; the notified chats fetched by id, the lists walked by a
pass (Graph lists no tenant's chats to an app: each user's are walked), and the mirror equal to Graph's truth. With
them, one chat's messages: a message soft-deleted there is a soft-deleted row (reason ``deleted``). SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import test_reconcile
from teams_e2e import delivered, make_chat, raw, rows, say_in_chat, to_inbox, worker_for
from test_reconcile import World

from syncer import mirror, verify
from syncer.worker.scheduler import sync_once

world = test_reconcile.world

SPEC = """
  - name: all-chats
    resource: chats
    lifetime: 1d
    mirror: {{table: all_chats, columns: [topic, chatType]}}
  - name: ada-chats
    resource: 'users/{{user}}/chats'
    for_each: {{users: [{ada}]}}
    lifetime: 1d
    mirror: {{table: ada_chats, columns: [topic, chatType]}}
  - name: one-chat
    resource: 'chats/{chat}'
    change_types: [updated]
    lifetime: 1d
    mirror: {{table: one_chat, columns: [topic, chatType]}}
  - name: chat-messages
    resource: 'chats/{chat}/messages'
    lifetime: 1d
    mirror: {{table: chat_messages, columns: [{{field: body.content, column: body_text}}]}}
"""

NAMES = ["all-chats", "ada-chats", "one-chat", "chat-messages"]


def _graph_chats(world: World, user: str) -> dict[str, dict[str, Any]]:
    """The user's chats as Graph lists them (the test's own read)."""
    found = world.graph.get(f"users/{user}/chats")
    assert found.status_code == 200, found.text
    return {c["id"]: c for c in found.json()["value"]}


def test_chats_tenant_user_and_one_end_to_end(world: World) -> None:
    graph = world.graph
    ada, alan, grace = world.users
    group = make_chat(graph, ada, alan, grace)
    pair = make_chat(graph, alan, grace)  # a chat Ada is not in
    spec = world.spec(SPEC.format(ada=ada, chat=group))
    mirror.upgrade(spec, engine=world.engine)
    outcome = world.run(spec)
    assert outcome.ok, [r.error for r in outcome.failed]
    assert sorted(s["resource"] for s in world.live()) == sorted(
        ["chats", f"users/{ada}/chats", f"chats/{group}", f"chats/{group}/messages"])

    def chats(table: str) -> dict[str, dict[str, Any]]:
        return rows(world, table, "id, topic, chat_type, _removed_reason, _raw")

    def live(table: str) -> dict[str, dict[str, Any]]:
        return {i: r for i, r in chats(table).items() if r["_removed_reason"] is None}

    with worker_for(world, spec) as (worker, graphs):
        assert worker.results and all(r.outcome == "ok" for r in worker.results), worker.results
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []
        # The tenant's chats: every user's, once each; Ada's: hers only; the one chat: itself.
        assert set(live("all_chats")) == {group, pair}
        assert set(live("ada_chats")) == set(_graph_chats(world, ada)) == {group}
        assert set(live("one_chat")) == {group}

        # A new group chat with Ada: created on the tenant's and Ada's chats, fetched by id.
        made = make_chat(graph, ada, grace, alan, world.graph.create_user("linus")["id"])
        created = delivered(world, lambda i: i["changeType"] == "created" and i["resource"] == f"chats('{made}')",
                            count=2)
        # The chat renamed: updated on all three.
        r = graph.patch(f"chats/{quote(group, safe='')}", json={"topic": "Launch"})
        assert r.status_code == 200, r.text
        renamed = delivered(world, lambda i: i["changeType"] == "updated" and i["resource"] == f"chats('{group}')",
                            count=3)
        # The rename is also a system message in the chat (chatRenamedEventMessageDetail), notified to its messages.
        system = delivered(world, lambda i: i["resource"].startswith(f"chats('{group}')/messages("))
        to_inbox(world, created + renamed + system)
        drained = worker.drain()
        worker.wait(timeout=60)
        # Chats fetched by id (2 created, 3 updated); the chat's messages (a cursor list) read past their cursor.
        assert drained.fetched == 5 and drained.started == (f"chats/{group}/messages",), drained
        assert set(live("all_chats")) == {group, pair, made}
        assert set(live("ada_chats")) == set(_graph_chats(world, ada)) == {group, made}
        for table in ("all_chats", "ada_chats", "one_chat"):
            assert chats(table)[group]["topic"] == "Launch"
            assert raw(chats(table)[group])["topic"] == _graph_chats(world, ada)[group]["topic"]
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []

        # A message soft-deleted in the one chat: a soft-deleted row, reason "deleted" (with Graph's deletedDateTime).
        said = say_in_chat(graph, group, alan, "to be deleted")
        kept = say_in_chat(graph, group, ada, "kept")
        assert graph.admin("DELETE", f"chats/{quote(group, safe='')}/messages/{said['id']}").status_code == 204
        notified = delivered(world, lambda i: i["resource"] == f"chats('{group}')/messages('{said['id']}')"
                             and i["changeType"] == "deleted")
        to_inbox(world, notified)
        worker.drain()
        worker.wait(timeout=60)
        messages = rows(world, "chat_messages", "id, body_text, _deleted_at, _removed_reason, _raw")
        assert messages[said["id"]]["_removed_reason"] == "deleted", messages[said["id"]]
        assert messages[said["id"]]["_deleted_at"] is not None
        assert raw(messages[said["id"]])["deletedDateTime"]
        assert messages[kept["id"]]["_removed_reason"] is None

        # A chat deleted: Graph notifies no deletion of chats ("created, updated"); the next pass sweeps it.
        assert graph.delete(f"chats/{quote(made, safe='')}").status_code == 204
        results = sync_once(spec, NAMES, clients=graphs, engine=world.engine)
        assert results and all(x.outcome == "ok" for x in results), results
        assert chats("all_chats")[made]["_removed_reason"] == "swept"
        assert chats("ada_chats")[made]["_removed_reason"] == "swept"
        messages = rows(world, "chat_messages", "id, _removed_reason")
        assert messages[said["id"]]["_removed_reason"] == "deleted"
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []
