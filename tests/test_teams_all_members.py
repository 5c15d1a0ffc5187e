"""Tenant-wide memberships (conversationMember) end to end (issue 14): ``teams/getAllMembers`` (model A),
``chats/getAllMembers`` (model B) and a team's ``channels/getAllMembers`` (its private and shared channels) declared
and reconciled against the emulator. Graph lists none of them whole: a pass walks every team's members, every chat's
members (the chats found per user) and each private or shared channel's members; a notified membership is fetched by
id. Members added, made owner and removed through Graph's write API; the mirror equals Graph's truth, on SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import test_reconcile
from teams_e2e import delivered, make_chat, make_team, raw, rows, to_inbox, worker_for
from test_reconcile import World

from syncer import mirror, verify
from syncer.worker.scheduler import sync_once

world = test_reconcile.world

SPEC = """
  - name: all-team-members
    resource: teams/getAllMembers
    model: A
    lifetime: 1d
    mirror: {{table: all_team_members, columns: [displayName, roles]}}
  - name: all-chat-members
    resource: chats/getAllMembers
    model: B
    change_types: [created, deleted]
    lifetime: 1d
    mirror: {{table: all_chat_members, columns: [displayName, roles]}}
  - name: channel-members
    resource: 'teams/{{team}}/channels/getAllMembers'
    for_each: {{teams: [{team}]}}
    lifetime: 1d
    mirror: {{table: channel_members, columns: [displayName, roles]}}
"""

NAMES = ["all-team-members", "all-chat-members", "channel-members"]
COLUMNS = "id, user_id, roles, _removed_reason, _raw"


def _bind(user: str, *, owner: bool = False) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"] if owner else [],
            "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{user}')"}


def _truth(world: World, *paths: str) -> dict[str, str]:
    """Membership id -> user id, as Graph lists the members of *paths* (the test's own reads)."""
    out: dict[str, str] = {}
    for path in paths:
        r = world.graph.get(path)
        assert r.status_code == 200, r.text
        out.update({m["id"]: m["userId"] for m in r.json()["value"]})
    return out


def test_tenant_wide_and_channel_members_end_to_end(world: World) -> None:
    graph = world.graph
    ada, alan, grace = world.users
    team = make_team(graph, ada, alan)
    other = make_team(graph, grace, ada, name="Other")
    r = graph.post(f"teams/{team}/channels", json={"displayName": "Secret", "membershipType": "private",
                                                   "members": [_bind(ada, owner=True), _bind(alan)]})
    assert r.status_code == 201, r.text
    private = r.json()["id"]
    r = graph.post(f"teams/{team}/channels", json={"displayName": "Partners", "membershipType": "shared",
                                                   "members": [_bind(ada, owner=True)]})
    assert r.status_code == 201, r.text
    shared = r.json()["id"]
    chat = make_chat(graph, ada, alan, grace)
    pair = make_chat(graph, alan, grace)
    spec = world.spec(SPEC.format(team=team))
    mirror.upgrade(spec, engine=world.engine)
    outcome = world.run(spec)
    assert outcome.ok, [r.error for r in outcome.failed]
    assert sorted(s["resource"] for s in world.live()) == sorted(
        ["teams/getAllMembers?model=A", "chats/getAllMembers?model=B", f"teams/{team}/channels/getAllMembers"])

    def channel_paths() -> list[str]:
        return [f"teams/{team}/channels/{quote(c, safe='')}/members" for c in (private, shared)]

    def check(table: str, *paths: str) -> dict[str, dict[str, Any]]:
        """The live rows of *table* equal Graph's lists of *paths*, user ids included."""
        found = {i: r for i, r in rows(world, table, COLUMNS).items() if r["_removed_reason"] is None}
        assert {i: r["user_id"] for i, r in found.items()} == _truth(world, *paths), table
        return found

    chats = [chat, pair]

    def check_all() -> None:
        check("all_team_members", f"teams/{team}/members", f"teams/{other}/members")
        check("all_chat_members", *(f"chats/{quote(c, safe='')}/members" for c in chats))
        check("channel_members", *channel_paths())

    with worker_for(world, spec) as (worker, graphs):
        assert worker.results and all(r.outcome == "ok" for r in worker.results), worker.results
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []
        check_all()
        # A chat's members come once though the chat is walked under each of its three users.
        assert len(rows(world, "all_chat_members", "id")) == 5
        assert {r["team_id"] for r in rows(world, "channel_members", "id, team_id").values()} == {team}

        # Grace joins the team and the private channel, Alan leaves the chat, Alan becomes an owner of the other team.
        r = graph.post(f"teams/{team}/members", json=_bind(grace))
        assert r.status_code == 201, r.text
        joined = r.json()["id"]
        r = graph.post(f"teams/{team}/channels/{quote(private, safe='')}/members", json=_bind(grace))
        assert r.status_code == 201, r.text
        joined_channel = r.json()["id"]
        leaving = next(i for i, u in _truth(world, f"chats/{quote(chat, safe='')}/members").items() if u == alan)
        assert graph.delete(f"chats/{quote(chat, safe='')}/members/{leaving}").status_code == 204
        r = graph.post(f"teams/{other}/members", json=_bind(alan))
        assert r.status_code == 201, r.text
        alans = r.json()["id"]
        r = graph.patch(f"teams/{other}/members/{alans}", json={
            "@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"]})
        assert r.status_code == 200, r.text
        expected = {
            ("created", f"teams('{team}')/members('{joined}')"),
            ("created", f"teams('{team}')/channels('{private}')/members('{joined_channel}')"),
            ("deleted", f"chats('{chat}')/members('{leaving}')"),
            ("created", f"teams('{other}')/members('{alans}')"),
            ("updated", f"teams('{other}')/members('{alans}')")}
        world.receiver.wait_for(lambda: expected <= {(i["changeType"], i["resource"])
                                                     for i in world.receiver.items("notifications")})
        notified = delivered(world, lambda i: "/members(" in i["resource"], count=len(expected))
        assert {(i["changeType"], i["resource"]) for i in notified} == expected, notified
        to_inbox(world, notified)
        drained = worker.drain()
        worker.wait(timeout=60)
        # Every membership fetched by id, once (Alan's was created, then updated): no list walked.
        assert drained.fetched == len({i["resource"] for i in notified}) and drained.started == (), drained
        check_all()
        assert raw(rows(world, "all_team_members", COLUMNS)[alans])["roles"] == ["owner"]
        assert rows(world, "all_chat_members", COLUMNS)[leaving]["_removed_reason"] == "deleted"
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []

        # Changes no notification told of: the next pass walks the lists and sweeps what is gone.
        assert graph.delete(f"teams/{team}/members/{joined}").status_code == 204
        assert graph.delete(f"teams/{team}/channels/{quote(private, safe='')}/members/{joined_channel}").status_code == 204
        assert graph.delete(f"chats/{quote(pair, safe='')}").status_code == 204
        chats.remove(pair)  # its members go with it
        results = sync_once(spec, NAMES, clients=graphs, engine=world.engine)
        assert results and all(x.outcome == "ok" for x in results), results
        check_all()
        assert rows(world, "all_team_members", COLUMNS)[joined]["_removed_reason"] == "swept"
        assert rows(world, "channel_members", COLUMNS)[joined_channel]["_removed_reason"] == "swept"
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []
