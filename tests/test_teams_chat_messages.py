"""One chat's messages end to end (issue 14): ``chats/{chat}/messages`` has no delta, so syncer lists it newest first
with a ``lastModifiedDateTime`` cursor (syncer.worker.cursor). Declared, reconciled against the emulator, listed in
full once, then a post, an edit and a soft delete come back through the emulator's notifications and an incremental
round that lists only what changed; the mirror equals Graph's truth, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import quote

import sqlalchemy as sa
import test_reconcile
from teams_e2e import delivered, make_chat, raw, rows, say_in_chat, to_inbox, worker_for
from test_reconcile import World

from syncer import mirror, verify
from syncer.worker import cursor

world = test_reconcile.world

SPEC = """
  - name: chat
    resource: 'chats/{chat}/messages'
    lifetime: 1d
    mirror: {{table: chat_messages, columns: [{{field: body.content, column: body_text}}, lastModifiedDateTime]}}
"""


def _runs(world: World) -> list[tuple[bool, int, str]]:
    with world.engine.connect() as connection:
        found = connection.execute(sa.text(
            "SELECT full_round, pages, outcome FROM syncer_sync_runs WHERE scope_key LIKE 'chats/%' ORDER BY id"))
        return [(bool(f), int(p or 0), str(o)) for f, p, o in found]


def test_a_chats_messages_are_listed_with_a_time_cursor(world: World) -> None:
    graph = world.graph
    ada, alan, grace = world.users
    chat = make_chat(graph, ada, alan, grace)
    first = say_in_chat(graph, chat, alan, "first")
    second = say_in_chat(graph, chat, grace, "second")
    spec = world.spec(SPEC.format(chat=chat))
    mirror.upgrade(spec, engine=world.engine)
    assert world.run(spec).ok
    (subscription,) = world.live()
    assert subscription["resource"] == f"chats/{chat}/messages"

    with worker_for(world, spec) as (worker, graphs):
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []
        found = rows(world, "chat_messages", "id, chat_id, from_user_id, body_text, _removed_reason, _raw")
        assert found[first["id"]]["chat_id"] == chat and found[first["id"]]["from_user_id"] == alan
        assert found[second["id"]]["body_text"] == "second"
        with world.engine.connect() as connection:
            link = connection.execute(sa.text("SELECT delta_link FROM syncer_sync_state WHERE scope_key = :k"),
                                      {"k": f"chats/{chat}/messages"}).scalar_one()
        # The cursor: the same list, filtered past the newest message listed (less the overlap).
        newest = max(datetime.fromisoformat(raw(r)["lastModifiedDateTime"].replace("Z", "+00:00")) for r in found.values())
        assert link == cursor.cursor_link(f"chats/{quote(chat, safe='@:')}/messages?$orderby=lastModifiedDateTime%20desc"
                                          "&$top=50", "lastModifiedDateTime", newest)

        # A minute later (beyond the cursor's overlap): a post, an edit and a soft delete, each notified.
        world.advance(timedelta(minutes=1))
        third = say_in_chat(graph, chat, ada, "third")
        enc = quote(chat, safe="")
        r = graph.admin("PATCH", f"chats/{enc}/messages/{first['id']}", json={"body": {"content": "first, edited"}})
        assert r.status_code == 200, r.text
        assert graph.admin("DELETE", f"chats/{enc}/messages/{second['id']}").status_code == 204
        notified = delivered(world, lambda i: i["resource"].startswith(f"chats('{chat}')/messages("), count=3)
        before = len(_runs(world))
        to_inbox(world, notified)
        drained = worker.drain()
        worker.wait(timeout=60)
        assert drained.started == (f"chats/{chat}/messages",), drained
        (run,) = _runs(world)[before:]
        assert run[0] is False and run[2] == "ok", run  # incremental: no full list, no sweep
        found = rows(world, "chat_messages", "id, body_text, deleted_date_time, _removed_reason, _raw")
        assert found[third["id"]]["body_text"] == "third" and found[third["id"]]["_removed_reason"] is None
        assert found[first["id"]]["body_text"] == "first, edited"
        assert found[second["id"]]["_removed_reason"] == "deleted" and found[second["id"]]["deleted_date_time"] is not None
        assert verify.compare(world.engine, graphs, verify.declared(spec, graphs)) == []
        # Only what changed was listed: the three messages (the cursor moved past the first round's newest).
        with world.engine.connect() as connection:
            upserted = connection.execute(sa.text(
                "SELECT upserted FROM syncer_sync_runs WHERE scope_key = :k ORDER BY id DESC LIMIT 1"),
                {"k": f"chats/{chat}/messages"}).scalar_one()
        assert upserted == 3, upserted
