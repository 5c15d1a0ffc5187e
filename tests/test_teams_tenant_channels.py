"""Tenant-wide teams and channels end to end (issue 14): ``teams`` and ``teams/getAllChannels`` declared and reconciled
against the emulator; a team created (``POST /teams``), renamed and deleted (its group deleted), channels created,
renamed and deleted through Graph's write API; each notified team or channel fetched by id; a pass lists the teams and
walks every team's channels (Graph has no list of all channels). The mirror equals Graph's truth, on SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import test_reconcile
from teams_e2e import delivered, make_team, rows, to_inbox, worker_for
from test_reconcile import World

from syncer import mirror, verify
from syncer.worker.scheduler import sync_once

world = test_reconcile.world

SPEC = """
  - name: teams
    resource: teams
    lifetime: 1d
    mirror: {table: all_teams, columns: [displayName, description]}
  - name: all-channels
    resource: teams/getAllChannels
    lifetime: 1d
    mirror: {table: all_channels, columns: [displayName, membershipType]}
"""

NAMES = ["teams", "all-channels"]


def _truth(world: World) -> tuple[dict[str, str], dict[str, str]]:
    """Team id -> name and channel id -> name, as Graph lists them (the test's own reads)."""
    teams = {t["id"]: t["displayName"] for t in world.graph.get("teams").json()["value"]}
    channels: dict[str, str] = {}
    for team in teams:
        r = world.graph.get(f"teams/{team}/channels")
        assert r.status_code == 200, r.text
        channels.update({c["id"]: c["displayName"] for c in r.json()["value"]})
    return teams, channels


def test_all_teams_and_all_channels_end_to_end(world: World) -> None:
    graph = world.graph
    ada, alan, grace = world.users
    team = make_team(graph, ada, alan)
    spec = world.spec(SPEC)
    mirror.upgrade(spec, engine=world.engine)
    outcome = world.run(spec)
    assert outcome.ok, [r.error for r in outcome.failed]
    assert sorted(s["resource"] for s in world.live()) == ["teams", "teams/getAllChannels"]

    def live(table: str) -> dict[str, Any]:
        found = rows(world, table, "id, display_name, _removed_reason")
        return {i: r["display_name"] for i, r in found.items() if r["_removed_reason"] is None}

    def check() -> None:
        teams, channels = _truth(world)
        assert live("all_teams") == teams
        assert live("all_channels") == channels
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []

    with worker_for(world, spec) as (worker, graphs):
        assert worker.results and all(r.outcome == "ok" for r in worker.results), worker.results
        check()
        assert len(live("all_channels")) == 1  # General

        # A second team (its General channel with it), a channel renamed, a private channel: all notified.
        other = make_team(graph, grace, ada, name="Other")
        r = graph.post(f"teams/{team}/channels", json={"displayName": "Design", "membershipType": "standard"})
        assert r.status_code == 201, r.text
        design = r.json()["id"]
        assert graph.patch(f"teams/{team}/channels/{quote(design, safe='')}",
                           json={"displayName": "Design review"}).status_code == 204
        r = graph.post(f"teams/{other}/channels", json={"displayName": "Secret", "membershipType": "private", "members": [
            {"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
             "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{grace}')"}]})
        assert r.status_code == 201, r.text
        secret = r.json()["id"]
        assert graph.patch(f"teams/{team}", json={"description": "launch"}).status_code == 204
        expected = {
            ("created", f"teams('{other}')"), ("updated", f"teams('{team}')"),
            ("created", f"teams('{team}')/channels('{design}')"), ("updated", f"teams('{team}')/channels('{design}')"),
            ("created", f"teams('{other}')/channels('{secret}')")}
        world.receiver.wait_for(lambda: expected <= {(i["changeType"], i["resource"])
                                                     for i in world.receiver.items("notifications")})
        notified = delivered(world, lambda i: i["resource"].startswith("teams("), count=len(expected))
        assert {(i["changeType"], i["resource"]) for i in notified} >= expected, notified
        to_inbox(world, notified)
        drained = worker.drain()
        worker.wait(timeout=60)
        assert drained.fetched == len({i["resource"] for i in notified}) and drained.started == (), drained
        assert live("all_channels")[design] == "Design review"
        assert rows(world, "all_teams", "id, description")[team]["description"] == "launch"
        check()

        # The channel deleted and the other team's group deleted: notified as deletions, a 404 each.
        before = len(world.receiver.items("notifications"))
        assert graph.delete(f"teams/{team}/channels/{quote(design, safe='')}").status_code == 204
        assert graph.delete(f"groups/{other}").status_code == 204
        gone = delivered(world, lambda i: i["changeType"] == "deleted" and i["resource"] in (
            f"teams('{team}')/channels('{design}')", f"teams('{other}')"), count=2)
        to_inbox(world, gone)
        worker.drain()
        worker.wait(timeout=60)
        assert rows(world, "all_channels", "id, _removed_reason")[design]["_removed_reason"] == "deleted"
        assert rows(world, "all_teams", "id, _removed_reason")[other]["_removed_reason"] == "deleted"
        assert len(world.receiver.items("notifications")) > before
        # The other team's channels went with it, untold: the next pass walks the teams that remain and sweeps them.
        results = sync_once(spec, NAMES, clients=graphs, engine=world.engine)
        assert results and all(x.outcome == "ok" for x in results), results
        assert rows(world, "all_channels", "id, _removed_reason")[secret]["_removed_reason"] == "swept"
        check()
