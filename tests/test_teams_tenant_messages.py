"""Tenant-wide chatMessage subscriptions end to end (issue 14): ``teams/getAllMessages`` (model A) and
``chats/getAllMessages`` (model B) are declared and reconciled against the emulator. Each message the emulator notifies
(a channel root, a reply, a chat message, an edit, a soft delete) is fetched by id into the mirror, with its owners as
columns; a message whose notification was lost comes with the next pass, which walks every team's (every user's)
getAllMessages list; a chat several users share is one row per message. On SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import test_reconcile
from teams_e2e import (
    delivered,
    make_chat,
    make_team,
    raw,
    rows,
    say_in_channel,
    say_in_chat,
    to_inbox,
    worker_for,
)
from test_reconcile import World

from syncer import mirror
from syncer.worker.scheduler import sync_once

world = test_reconcile.world

SPEC = """
  - name: all-channel-messages
    resource: teams/getAllMessages
    model: A
    lifetime: 1d
    mirror: {table: tenant_channel_messages, columns: [{field: body.content, column: body_text}]}
  - name: all-chat-messages
    resource: chats/getAllMessages
    model: B
    lifetime: 1d
    mirror: {table: tenant_chat_messages, columns: [{field: body.content, column: body_text}]}
"""

COLUMNS = "id, team_id, channel_id, chat_id, reply_to_id, from_user_id, body_text, _removed_reason, _scope, _raw"


def _graph_item(world: World, row: dict[str, Any]) -> dict[str, Any]:
    """The message as Graph returns it now, found through the owner ids of its row."""
    if row["chat_id"]:
        path = f"chats/{quote(row['chat_id'], safe='')}/messages/{row['id']}"
    else:
        path = f"teams/{row['team_id']}/channels/{quote(row['channel_id'], safe='')}/messages/"
        path += f"{row['reply_to_id']}/replies/{row['id']}" if row["reply_to_id"] else row["id"]
    r = world.graph.get(path)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    body.pop("@odata.context", None)
    return body


def test_tenant_wide_messages_are_fetched_by_id_when_notified(world: World) -> None:
    graph = world.graph
    ada, alan, grace = world.users
    team = make_team(graph, ada, alan)
    general = graph.get(f"teams/{team}/channels").json()["value"][0]["id"]
    chat = make_chat(graph, ada, alan, grace)
    spec = world.spec(SPEC)
    mirror.upgrade(spec, engine=world.engine)
    outcome = world.run(spec)
    assert outcome.ok, [r.error for r in outcome.failed]
    assert sorted(s["resource"] for s in world.live()) == ["chats/getAllMessages?model=B", "teams/getAllMessages?model=A"]

    with worker_for(world, spec) as (worker, _graphs):
        assert worker.results and all(r.outcome == "ok" for r in worker.results), worker.results
        root = say_in_channel(graph, team, general, ada, "<p>root</p>")
        reply = say_in_channel(graph, team, general, alan, "a reply", reply_to=root["id"])
        said = say_in_chat(graph, chat, grace, "hello chat")
        r = graph.admin("PATCH", f"chats/{quote(chat, safe='')}/messages/{said['id']}",
                        json={"body": {"content": "hello chat, edited"}})
        assert r.status_code == 200, r.text
        enc = quote(general, safe="")
        assert graph.admin("DELETE", f"teams/{team}/channels/{enc}/messages/{root['id']}").status_code == 204

        mine = {s["id"] for s in world.live()}
        notified = delivered(world, lambda i: i["subscriptionId"] in mine, count=5)
        assert {i["resource"] for i in notified} == {
            f"teams('{team}')/channels('{general}')/messages('{root['id']}')",
            f"teams('{team}')/channels('{general}')/messages('{root['id']}')/replies('{reply['id']}')",
            f"chats('{chat}')/messages('{said['id']}')",
        }
        to_inbox(world, notified)
        drained = worker.drain()
        worker.wait(timeout=60)
        assert drained.claimed == 5 and drained.started == (), drained  # fetched by id, nothing listed

        channel_rows = rows(world, "tenant_channel_messages", COLUMNS)
        chat_rows = rows(world, "tenant_chat_messages", COLUMNS)
        assert set(channel_rows) == {root["id"], reply["id"]} and set(chat_rows) == {said["id"]}
        assert channel_rows[reply["id"]]["reply_to_id"] == root["id"]
        assert channel_rows[reply["id"]]["team_id"] == team and channel_rows[reply["id"]]["channel_id"] == general
        assert channel_rows[root["id"]]["_removed_reason"] == "deleted"  # soft-deleted in Graph
        assert channel_rows[reply["id"]]["_removed_reason"] is None
        assert chat_rows[said["id"]]["chat_id"] == chat and chat_rows[said["id"]]["from_user_id"] == grace
        assert chat_rows[said["id"]]["body_text"] == "hello chat, edited"
        assert {r["_scope"] for r in channel_rows.values()} == {"teams/getAllMessages"}
        for row in (*channel_rows.values(), *chat_rows.values()):
            stored = {k: v for k, v in raw(row).items() if k != "@odata.context"}
            assert stored == _graph_item(world, row), row["id"]

        # Lost notifications: a chat message everyone in the group chat sees, one in a oneOnOne chat, a channel
        # reply; nothing reaches the inbox. The next pass walks each team's and each user's list.
        pair = make_chat(graph, ada, alan)
        quiet = [say_in_chat(graph, chat, alan, "nobody told"), say_in_chat(graph, pair, ada, "just us"),
                 say_in_channel(graph, team, general, alan, "quiet reply", reply_to=root["id"])]
        results = sync_once(spec, ["all-channel-messages", "all-chat-messages"], clients=_graphs, engine=world.engine)
        assert [r.outcome for r in results] == ["ok", "ok"] and all(r.full for r in results), results
        channel_rows = rows(world, "tenant_channel_messages", COLUMNS)
        chat_rows = rows(world, "tenant_chat_messages", COLUMNS)
        live = {i for i, r in {**channel_rows, **chat_rows}.items() if r["_removed_reason"] is None}
        assert {m["id"] for m in quiet} <= live
        assert _live_in_graph(world, f"teams/{team}/channels/getAllMessages?model=A") == \
            {i for i, r in channel_rows.items() if r["_removed_reason"] is None}
        everyone = set().union(*(_live_in_graph(world, f"users/{u}/chats/getAllMessages?model=B") for u in world.users))
        assert everyone == {i for i, r in chat_rows.items() if r["_removed_reason"] is None}
        for row in (*channel_rows.values(), *chat_rows.values()):
            stored = {k: v for k, v in raw(row).items() if k != "@odata.context"}
            assert stored == _graph_item(world, row), row["id"]


def _live_in_graph(world: World, url: str) -> set[str]:
    found: set[str] = set()
    while url:
        r = world.graph.get(url)
        assert r.status_code == 200, r.text
        found |= {m["id"] for m in r.json()["value"] if m["deletedDateTime"] is None}
        url = r.json().get("@odata.nextLink")
    return found
