"""Teams and chat memberships (conversationMember) end to end (issue 14): declared, reconciled against the emulator,
listed into a members table with the team or chat as a column, then changed through Graph's write API (a member
added, one made owner, one removed); the emulator's notifications are fetched by id, and the mirror equals Graph's truth, on
SQLite and PostgreSQL."""

from __future__ import annotations

from urllib.parse import quote

import test_reconcile
from teams_e2e import delivered, make_chat, make_team, raw, rows, to_inbox, worker_for
from test_reconcile import World

from syncer import mirror, verify
from syncer.worker.scheduler import sync_once

world = test_reconcile.world

SPEC = """
  - name: team-members
    resource: 'teams/{{team}}/members'
    for_each: {{teams: [{team}]}}
    lifetime: 1d
    mirror: {{table: team_members, columns: [displayName, roles]}}
  - name: chat-members
    resource: 'chats/{chat}/members'
    change_types: [created, deleted]
    lifetime: 1d
    mirror: {{table: chat_members, columns: [displayName, roles]}}
"""


def test_team_and_chat_members_end_to_end(world: World) -> None:
    graph = world.graph
    ada, alan, grace = world.users
    team = make_team(graph, ada, alan)
    chat = make_chat(graph, ada, alan, grace)
    spec = world.spec(SPEC.format(team=team, chat=chat))
    mirror.upgrade(spec, engine=world.engine)
    outcome = world.run(spec)
    assert outcome.ok, [r.error for r in outcome.failed]
    assert sorted(s["resource"] for s in world.live()) == sorted([f"teams/{team}/members", f"chats/{chat}/members"])

    with worker_for(world, spec) as (worker, graphs):
        def members(table: str) -> dict[str, dict[str, object]]:
            return rows(world, table, "id, team_id, user_id, display_name, roles, _deleted_at, _removed_reason, _raw"
                        if table == "team_members" else
                        "id, chat_id, user_id, display_name, roles, _deleted_at, _removed_reason, _raw")

        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []
        team_rows = members("team_members")
        assert {r["user_id"]: r["team_id"] for r in team_rows.values()} == {ada: team, alan: team}
        owner = next(r for r in team_rows.values() if r["user_id"] == ada)
        assert raw(owner)["roles"] == ["owner"]
        chat_rows = members("chat_members")
        assert {r["user_id"] for r in chat_rows.values()} == {ada, alan, grace}
        assert {r["chat_id"] for r in chat_rows.values()} == {chat}

        # Grace joins the team, Alan leaves the chat, through Graph's write API; the emulator notifies both.
        r = graph.post(f"teams/{team}/members", json={
            "@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": [],
            "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{grace}')"})
        assert r.status_code == 201, r.text
        joined = r.json()["id"]
        leaving = next(i for i, row in chat_rows.items() if row["user_id"] == alan)
        assert graph.delete(f"chats/{quote(chat, safe='')}/members/{leaving}").status_code == 204
        notified = delivered(world, lambda i: "/members(" in i["resource"] and i["changeType"] in ("created", "deleted"),
                             count=2)
        assert {i["resource"] for i in notified} == {f"teams('{team}')/members('{joined}')",
                                                     f"chats('{chat}')/members('{leaving}')"}
        to_inbox(world, notified)
        drained = worker.drain()
        worker.wait(timeout=60)
        # Both fetched by id (no list of either collection): Grace's membership comes, Alan's is gone (404).
        assert drained.claimed == 2 and drained.fetched == 2 and drained.started == (), drained
        team_rows = members("team_members")
        assert team_rows[joined]["user_id"] == grace and team_rows[joined]["team_id"] == team
        assert team_rows[joined]["_deleted_at"] is None
        assert members("chat_members")[leaving]["_removed_reason"] == "deleted"
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []

        # Alan becomes an owner of the team (PATCH roles): notified "updated", fetched by id.
        alans = next(i for i, row in team_rows.items() if row["user_id"] == alan)
        r = graph.patch(f"teams/{team}/members/{alans}", json={
            "@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"]})
        assert r.status_code == 200 and r.json()["roles"] == ["owner"], r.text
        updated = delivered(world, lambda i: i["changeType"] == "updated" and i["resource"].endswith(f"members('{alans}')"))
        to_inbox(world, updated)
        assert worker.drain().fetched == 1
        worker.wait(timeout=60)
        assert raw(members("team_members")[alans])["roles"] == ["owner"]
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []

        # The periodic list agrees (mark and sweep), and sees a removal no notification told of.
        r = graph.delete(f"teams/{team}/members/{joined}")
        assert r.status_code == 204, r.text
        results = sync_once(spec, ["team-members", "chat-members"], clients=graphs, engine=world.engine)
        assert results and all(x.outcome == "ok" for x in results), results
        assert members("team_members")[joined]["_removed_reason"] == "swept"
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []
