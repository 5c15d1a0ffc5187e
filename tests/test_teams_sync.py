"""Teams channel messages end to end (issue 14): declared over a team's channels, reconciled against the
emulator (one Graph subscription per channel), synced by channel-message delta, then changed through the
emulator's admin API (post, edit, soft delete, undo) and compared with Graph's truth (syncer.verify), on
SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
import test_reconcile
from emulator_fixtures import EmulatorClient
from test_reconcile import World

from syncer import mirror, verify
from syncer.graph.times import parse_datetime
from syncer.inbox import Inbox, NewItem
from syncer.reconcile import graphs_for
from syncer.worker import scopes
from syncer.worker.jobs import Worker
from syncer.worker.scheduler import sync_once
from syncer.worker.scopes import ScopeIndex

SPEC = """
  - name: channel-messages
    resource: 'teams/{{team}}/channels/{{channel}}/messages'
    for_each: {{teams: [{team}]}}
    lifetime: 1d
    mirror:
      table: channel_messages
      columns: [subject, {{field: body.content, column: body_text}}, lastModifiedDateTime]
"""


world = test_reconcile.world  # the fixture: emulator, test receiver, migrated database, three users


def _team(graph: EmulatorClient, owner: str, *members: str) -> str:
    people = [{"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"] if u == owner else [],
               "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{u}')"} for u in (owner, *members)]
    r = graph.post("teams", json={"template@odata.bind": "https://graph.microsoft.com/v1.0/teamsTemplates('standard')",
                                  "displayName": "Project X", "members": people})
    assert r.status_code == 202, r.text
    team_id = r.headers["Content-Location"].split("'")[1]
    graph.admin("POST", "clock", json={"advance": 5})
    graph._token = None  # the clock moved: the helper's token may have expired
    assert graph.get(f"teams/{team_id}").status_code == 200
    return team_id


def _say(graph: EmulatorClient, team: str, channel: str, sender: str, text: str) -> dict[str, Any]:
    r = graph.admin("POST", f"teams/{team}/channels/{quote(channel, safe='')}/messages",
                    json={"from": sender, "body": {"contentType": "html", "content": text}})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _rows(world: World) -> dict[str, dict[str, Any]]:
    with world.engine.connect() as connection:
        rows = connection.execute(sa.text(
            "SELECT id, channel_id, team_id, from_user_id, reply_to_id, body_text, deleted_date_time, _deleted_at, _removed_reason, _raw "
            "FROM channel_messages")).mappings()
        return {r["id"]: dict(r) for r in rows}


def _raw(row: dict[str, Any]) -> dict[str, Any]:
    raw = row["_raw"]
    return raw if isinstance(raw, dict) else json.loads(raw)  # type: ignore[no-any-return]


def test_channel_messages_end_to_end(world: World) -> None:
    graph = world.graph
    ada, alan, _grace = world.users
    team = _team(graph, ada, alan)
    r = graph.post(f"teams/{team}/channels", json={"displayName": "Design", "membershipType": "standard"})
    assert r.status_code == 201, r.text
    design = r.json()["id"]
    general = next(c["id"] for c in graph.get(f"teams/{team}/channels").json()["value"] if c["displayName"] == "General")
    first = _say(graph, team, general, ada, "<p>hello</p>")
    _say(graph, team, general, alan, "<p>hi ada</p>")
    early = graph.admin("POST", f"teams/{team}/channels/{quote(general, safe='')}/messages/{first['id']}/replies",
                        json={"from": alan, "body": {"content": "an early reply"}}).json()
    _say(graph, team, design, ada, "<p>sketch</p>")

    spec = world.spec(SPEC.format(team=team))
    mirror.upgrade(spec, engine=world.engine)
    # Reconcile: the declaration expands over the team's channels, one Graph subscription each.
    outcome = world.run(spec)
    assert outcome.ok, [r.error for r in outcome.failed]
    live = sorted(s["resource"] for s in world.live())
    assert live == sorted(f"teams/{team}/channels/{c}/messages" for c in (general, design)), live
    assert all(s["lifecycleNotificationUrl"] for s in world.live())

    graphs = graphs_for(spec)
    try:
        def sync_and_verify() -> None:
            results = sync_once(spec, ["channel-messages"], clients=graphs, engine=world.engine)
            assert results and all(r.outcome == "ok" for r in results), results
            assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []

        sync_and_verify()
        rows = _rows(world)
        said = {i: r for i, r in rows.items() if _raw(r)["messageType"] == "message" and not r["reply_to_id"]}
        assert len(said) == 3, rows  # besides the system messages (channel added...) Graph lists too
        # Replies come inline with their root ($expand=replies) and are rows of their own.
        assert rows[early["id"]]["reply_to_id"] == first["id"] and rows[early["id"]]["channel_id"] == general
        assert "replies" not in _raw(rows[first["id"]])  # the root's row holds the root only
        assert rows[first["id"]]["channel_id"] == general and rows[first["id"]]["team_id"] == team
        assert rows[first["id"]]["from_user_id"] == ada

        # Post, edit, soft delete through the emulator's admin API; the next pass brings each.
        third = _say(graph, team, design, alan, "<p>new</p>")
        enc = quote(general, safe="")
        r = graph.admin("PATCH", f"teams/{team}/channels/{enc}/messages/{first['id']}",
                        json={"body": {"contentType": "html", "content": "<p>hello, edited</p>"}})
        assert r.status_code == 200, r.text
        victim = next(i for i, row in said.items() if row["from_user_id"] == alan)
        assert graph.admin("DELETE", f"teams/{team}/channels/{enc}/messages/{victim}").status_code == 204
        sync_and_verify()
        rows = _rows(world)
        assert rows[third["id"]]["_deleted_at"] is None
        assert rows[first["id"]]["body_text"] == "<p>hello, edited</p>"
        gone = rows[victim]
        raw = _raw(gone)
        graph_deleted = parse_datetime(raw["deletedDateTime"])
        assert gone["_removed_reason"] == "deleted"
        for stored in (gone["_deleted_at"], gone["deleted_date_time"]):
            assert stored is not None
            stored = datetime.fromisoformat(stored) if isinstance(stored, str) else stored  # SQLite's text
            stored = stored if stored.tzinfo else stored.replace(tzinfo=graph_deleted.tzinfo)
            assert abs(stored - graph_deleted) < timedelta(milliseconds=1)

        # "Messages in channel X by user Y" is one query on the indexed owner columns.
        with world.engine.connect() as connection:
            found = connection.execute(sa.text(
                "SELECT id FROM channel_messages WHERE channel_id = :c AND from_user_id = :u AND _deleted_at IS NULL"
            ), {"c": design, "u": alan}).scalars().all()
        assert found == [third["id"]]

        # Undo the soft delete: the row is live again.
        r = graph.admin("POST", f"teams/{team}/channels/{enc}/messages/{victim}/undoSoftDelete")
        assert r.status_code == 204, r.text
        sync_and_verify()
        assert _rows(world)[victim]["_deleted_at"] is None
    finally:
        for g in graphs.values():
            g.close()


def test_a_channel_message_notification_syncs_its_channel(world: World) -> None:
    """Graph's notification names the message in key syntax: a root marks its channel's scope dirty (the delta
    pass brings it); a reply, which the roots-only delta may not bring, is fetched by id."""
    graph = world.graph
    ada, alan, _grace = world.users
    team = _team(graph, ada, alan)
    general = graph.get(f"teams/{team}/channels").json()["value"][0]["id"]
    spec = world.spec(SPEC.format(team=team))
    mirror.upgrade(spec, engine=world.engine)
    assert world.run(spec).ok
    (subscription,) = world.live()
    graphs = graphs_for(spec)
    tenant = spec.tenants[0].tenant_id
    try:
        index = ScopeIndex.of(scopes.declared_scopes(spec, clients={spec.tenants[0].name: graphs[tenant]}))
        worker = Worker(world.engine, graphs, index, worker_id="w1", spec=spec)
        worker.register_scopes()
        worker.drain()
        worker.wait(timeout=60)
        assert worker.drain().started == ()
        def notify(resource: str, item_id: str, key: str) -> Any:
            Inbox(world.engine).put([NewItem(
                tenant_id=tenant, subscription_id=subscription["id"], kind="change", event="created",
                resource=resource, resource_id=item_id, dedupe_key=key, payload={"resource": resource})])
            drained = worker.drain()
            worker.wait(timeout=60)
            return drained

        # A root: its channel's scope is marked dirty and the delta pass brings it.
        root = _say(graph, team, general, alan, "<p>root</p>")
        drained = notify(f"teams('{team}')/channels('{general}')/messages('{root['id']}')", root["id"], "k1")
        assert drained.claimed == 1 and drained.started == (f"teams/{team}/channels/{general}/messages",), drained
        assert root["id"] in _rows(world)
        # A reply: the delta lists roots only (and its root did not change), so it is fetched by id.
        enc = quote(general, safe="")
        reply = graph.admin("POST", f"teams/{team}/channels/{enc}/messages/{root['id']}/replies",
                            json={"from": ada, "body": {"content": "a reply"}}).json()
        reply_resource = f"teams('{team}')/channels('{general}')/messages('{root['id']}')/replies('{reply['id']}')"
        drained = notify(reply_resource, reply["id"], "k2")
        assert drained.claimed == 1 and drained.started == () and drained.fetched == 1, drained
        rows = _rows(world)
        assert rows[reply["id"]]["reply_to_id"] == root["id"] and rows[reply["id"]]["_deleted_at"] is None
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []
        # Its soft delete, notified the same way: a soft-deleted row.
        r = graph.admin("DELETE", f"teams/{team}/channels/{enc}/messages/{root['id']}/replies/{reply['id']}")
        assert r.status_code == 204, r.text
        notify(reply_resource, reply["id"], "k3")
        assert _rows(world)[reply["id"]]["_removed_reason"] == "deleted"
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []
    finally:
        for g in graphs.values():
            g.close()


CHATS_SPEC = """
  - name: chat-messages
    resource: 'users/{{user}}/chats/getAllMessages'
    for_each: {{users: [{user}]}}
    model: B
    lifetime: 1d
    mirror:
      table: chat_messages
      columns: [{{field: body.content, column: body_text}}]
"""


def test_a_users_chat_messages_end_to_end(world: World) -> None:
    """users/{id}/chats/getAllMessages, synced by its delta: every chat of the user, soft deletes included."""
    graph = world.graph
    ada, alan, grace = world.users
    chats = []
    for people in ((ada, alan), (ada, alan, grace)):
        r = graph.post("chats", json={"chatType": "oneOnOne" if len(people) == 2 else "group", "members": [
            {"roles": ["owner"], "user@odata.bind": f"users('{p}')"} for p in people]})
        assert r.status_code == 201, r.text
        chats.append(r.json()["id"])

    def say(chat: str, sender: str, text: str) -> dict[str, Any]:
        r = graph.admin("POST", f"chats/{quote(chat, safe='')}/messages", json={"from": sender, "body": {"content": text}})
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    one = say(chats[0], alan, "one")
    say(chats[1], grace, "two")
    spec = world.spec(CHATS_SPEC.format(user=ada))
    mirror.upgrade(spec, engine=world.engine)
    assert world.run(spec).ok
    assert [s["resource"] for s in world.live()] == [f"users/{ada}/chats/getAllMessages?model=B"]
    graphs = graphs_for(spec)
    try:
        def sync_and_verify() -> dict[str, dict[str, Any]]:
            results = sync_once(spec, ["chat-messages"], clients=graphs, engine=world.engine)
            assert results and all(r.outcome == "ok" for r in results), results
            assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []
            with world.engine.connect() as connection:
                rows = connection.execute(sa.text(
                    "SELECT id, chat_id, from_user_id, body_text, _removed_reason FROM chat_messages")).mappings()
                return {r["id"]: dict(r) for r in rows}

        rows = sync_and_verify()
        assert {r["chat_id"] for r in rows.values()} == set(chats)
        assert rows[one["id"]]["from_user_id"] == alan
        three = say(chats[1], ada, "three")
        assert graph.admin("DELETE", f"chats/{quote(chats[0], safe='')}/messages/{one['id']}").status_code == 204
        rows = sync_and_verify()
        assert rows[three["id"]]["_removed_reason"] is None
        assert rows[one["id"]]["_removed_reason"] == "deleted"
    finally:
        for g in graphs.values():
            g.close()


TEAMS_SPEC = """
  - name: teams
    resource: teams
    lifetime: 1d
    mirror: {table: teams, columns: [displayName, visibility]}
  - name: channels
    resource: 'teams/{team}/channels'
    for_each: {teams: all}
    lifetime: 1d
    mirror: {table: channels, columns: [displayName, membershipType]}
"""


def test_teams_and_their_channels_are_listed_into_the_mirror(world: World) -> None:
    """Teams and channels have no delta in Graph: each pass lists them (mark and sweep)."""
    graph = world.graph
    ada, alan, _grace = world.users
    team = _team(graph, ada, alan)
    spec = world.spec(TEAMS_SPEC)
    mirror.upgrade(spec, engine=world.engine)
    assert world.run(spec).ok
    assert sorted(s["resource"] for s in world.live()) == ["teams", f"teams/{team}/channels"]
    graphs = graphs_for(spec)
    try:
        def sync_and_verify() -> None:
            results = sync_once(spec, ["teams", "channels"], clients=graphs, engine=world.engine)
            assert results and all(r.outcome == "ok" for r in results), results
            assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []

        sync_and_verify()
        r = graph.post(f"teams/{team}/channels", json={"displayName": "Design", "membershipType": "standard"})
        assert r.status_code == 201, r.text
        sync_and_verify()
        with world.engine.connect() as connection:
            names = connection.execute(sa.text(
                "SELECT display_name FROM channels WHERE _deleted_at IS NULL ORDER BY display_name")).scalars().all()
            teams = connection.execute(sa.text("SELECT id, display_name FROM teams")).all()
        assert names == ["Design", "General"]
        assert [tuple(t) for t in teams] == [(team, "Project X")]
        assert graph.delete(f"teams/{team}/channels/{quote(r.json()['id'], safe='')}").status_code == 204
        sync_and_verify()

        # A notification names the channel in key syntax: the worker brings it (teams and channels: fetch by id).
        tenant = spec.tenants[0].tenant_id
        index = ScopeIndex.of(scopes.declared_scopes(spec, clients={spec.tenants[0].name: graphs[tenant]}))
        worker = Worker(world.engine, graphs, index, worker_id="w1", spec=spec)
        worker.register_scopes()
        worker.drain()
        worker.wait(timeout=60)
        made = graph.post(f"teams/{team}/channels", json={"displayName": "Ops", "membershipType": "standard"}).json()
        subscription = next(s["id"] for s in world.live() if s["resource"].endswith("/channels"))
        resource = f"teams('{team}')/channels('{made['id']}')"
        Inbox(world.engine).put([NewItem(
            tenant_id=tenant, subscription_id=subscription, kind="change", event="created",
            resource=resource, resource_id=made["id"], dedupe_key="ops", payload={"resource": resource})])
        assert worker.drain().claimed == 1
        worker.wait(timeout=60)
        with world.engine.connect() as connection:
            found = connection.execute(sa.text("SELECT display_name FROM channels WHERE id = :i"), {"i": made["id"]})
            assert found.scalar_one() == "Ops"
    finally:
        for g in graphs.values():
            g.close()
