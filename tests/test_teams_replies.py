"""Channel replies are never lost (issue 14): a root carries its first replies inline (``$expand=replies``) and the
rest behind ``replies@odata.nextLink``, which the pass follows; a reply whose notification was lost, under a root
that did not change (the channel delta sends roots only), comes back when the worker reads the channel again from
its first page (Worker.relist_every), without a sweep. On SQLite and PostgreSQL, against the emulator with two
replies inline (Graph: 1,000)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
import test_reconcile
from emulator_fixtures import EmulatorClient
from teams_e2e import make_team, rows, say_in_channel, worker_for
from test_reconcile import World

from syncer import mirror
from syncer.emulator.config import EmulatorConfig
from syncer.worker.scheduler import sync_once

world = test_reconcile.world

SPEC = """
  - name: channel-messages
    resource: 'teams/{{team}}/channels/{{channel}}/messages'
    for_each: {{teams: [{team}]}}
    lifetime: 1d
    mirror:
      table: channel_messages
      columns: [{{field: body.content, column: body_text}}]
"""


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=1234, teams_inline_replies=2)


def _pages(graph: EmulatorClient, url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while url:
        r = graph.get(url)
        assert r.status_code == 200, r.text
        out += r.json()["value"]
        url = r.json().get("@odata.nextLink")
    return out


def _graph_truth(graph: EmulatorClient, team: str, channel: str) -> set[str]:
    """Every live root and reply of the channel, listed through Graph's own list calls."""
    base = f"teams/{team}/channels/{quote(channel, safe='')}/messages"
    found: set[str] = set()
    for root in _pages(graph, base):
        found |= {root["id"]} if root["deletedDateTime"] is None else set()
        found |= {r["id"] for r in _pages(graph, f"{base}/{root['id']}/replies") if r["deletedDateTime"] is None}
    return found


def _live(world: World) -> set[str]:
    return {i for i, r in rows(world, "channel_messages", "id, _deleted_at").items() if r["_deleted_at"] is None}


def _last_run(world: World) -> tuple[bool, str]:
    with world.engine.connect() as connection:
        full, outcome = connection.execute(sa.text(
            "SELECT full_round, outcome FROM syncer_sync_runs WHERE scope_key LIKE 'teams/%' ORDER BY id DESC LIMIT 1")).one()
    return bool(full), str(outcome)


def test_replies_past_the_inline_ones_and_lost_notifications_are_recovered(world: World) -> None:
    graph = world.graph
    ada, alan, _grace = world.users
    team = make_team(graph, ada, alan)
    general = graph.get(f"teams/{team}/channels").json()["value"][0]["id"]
    root = say_in_channel(graph, team, general, ada, "<p>root</p>")
    replies = [say_in_channel(graph, team, general, alan, f"reply {n}", reply_to=root["id"])["id"] for n in range(3)]
    # Graph's shape: two inline, then a link to the rest of the root's replies list.
    r = graph.get(f"teams/{team}/channels/{quote(general, safe='')}/messages/{root['id']}", params={"$expand": "replies"})
    assert r.status_code == 200, r.text
    assert len(r.json()["replies"]) == 2 and "replies@odata.nextLink" in r.json()
    rest = _pages(graph, r.json()["replies@odata.nextLink"])
    assert {x["id"] for x in r.json()["replies"] + rest} == set(replies)

    spec = world.spec(SPEC.format(team=team))
    mirror.upgrade(spec, engine=world.engine)
    assert world.run(spec).ok
    with worker_for(world, spec) as (worker, graphs):
        # The first (full) round followed the link: the third reply is a row, not swept.
        assert set(replies) <= _live(world)
        assert _live(world) == _graph_truth(graph, team, general)

        # A fourth reply whose notification is lost (delivered to the receiver, never stored in the inbox).
        lost = say_in_channel(graph, team, general, ada, "lost reply", reply_to=root["id"])
        assert worker.drain().claimed == 0
        # The channel delta sends roots only and the root did not change: an ordinary pass does not bring it.
        results = sync_once(spec, ["channel-messages"], clients=graphs, engine=world.engine)
        assert [x.outcome for x in results] == ["ok"], results
        assert lost["id"] not in _live(world)

        # The safety net reads the channel again from its first page once relist_every has passed.
        worker.safety_net()
        worker.drain()
        worker.wait(timeout=60)
        assert lost["id"] not in _live(world)  # not due yet (6 hours by default)
        worker.relist_every = timedelta(0)
        assert worker.safety_net() >= 1
        worker.drain()
        worker.wait(timeout=60)
        assert lost["id"] in _live(world)
        assert _last_run(world) == (False, "ok")  # an incremental round from the first page: no sweep
        assert _live(world) == _graph_truth(graph, team, general)
        # And the stored cursor is a deltaLink again: the next pass is an ordinary incremental round.
        with world.engine.connect() as connection:
            link = connection.execute(sa.text("SELECT delta_link FROM syncer_sync_state WHERE scope_key LIKE 'teams/%'"))
            assert "deltatoken" in link.scalar_one().lower()
