"""A channel thread longer than Graph puts inline: ``$expand=replies`` holds at most 1,000 replies, then
``replies@odata.nextLink`` (https://learn.microsoft.com/graph/api/channel-list-messages). Every reply must become a row,
and syncer.verify must see them all too. The emulator's limit is lowered to 5 so that the test stays small."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import sqlalchemy as sa
import test_reconcile
from test_reconcile import World
from test_teams_sync import SPEC, _say, _team

from syncer import mirror, verify
from syncer.emulator import EmulatorConfig
from syncer.reconcile import graphs_for
from syncer.worker.scheduler import sync_once

world = test_reconcile.world


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=1234, teams_inline_replies=5)


def test_every_reply_of_a_long_thread_is_a_row(world: World) -> None:
    graph = world.graph
    ada, alan, _grace = world.users
    team = _team(graph, ada, alan)
    general = graph.get(f"teams/{team}/channels").json()["value"][0]["id"]
    root = _say(graph, team, general, ada, "<p>a long thread</p>")
    base = f"teams/{team}/channels/{quote(general, safe='')}/messages"
    replies = {graph.admin("POST", f"{base}/{root['id']}/replies",
                           json={"from": alan, "body": {"content": f"reply {n}"}}).json()["id"] for n in range(12)}
    listed = graph.get(f"{base}/delta?$expand=replies").json()["value"]
    assert [len(m["replies"]) for m in listed if m["id"] == root["id"]] == [5]  # Graph cut the thread short

    spec = world.spec(SPEC.format(team=team))
    mirror.upgrade(spec, engine=world.engine)
    graphs = graphs_for(spec)
    try:
        results = sync_once(spec, ["channel-messages"], clients=graphs, engine=world.engine)
        assert results and all(r.outcome == "ok" for r in results), results
        with world.engine.connect() as connection:
            rows = set(connection.execute(sa.text(
                "SELECT id FROM channel_messages WHERE reply_to_id = :r AND _deleted_at IS NULL"), {"r": root["id"]}
            ).scalars())
        assert rows == replies
        scopes = verify.declared(spec, graphs)
        assert verify.compare(world.engine, graphs, scopes) == []
        # verify sees the whole thread as well: a row missing from the tail of the thread is a difference.
        with world.engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM channel_messages WHERE id = :i"), {"i": min(replies)})
        (difference,) = verify.compare(world.engine, graphs, scopes)
        assert difference.kind == "missing" and difference.ids == (min(replies),)
    finally:
        for g in graphs.values():
            g.close()
