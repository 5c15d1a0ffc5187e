"""Helpers the Teams end-to-end tests share: a team made through Graph's write API, messages posted as a user
through the emulator's admin API, the notifications the emulator delivered put in syncer's inbox, a worker."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from emulator_fixtures import EmulatorClient
from test_reconcile import World

from syncer.graph.client import GraphClient
from syncer.inbox import Inbox, NewItem
from syncer.reconcile import graphs_for
from syncer.spec import Spec
from syncer.worker import scopes
from syncer.worker.jobs import Worker
from syncer.worker.scopes import ScopeIndex

_keys = itertools.count()


def make_team(graph: EmulatorClient, owner: str, *members: str, name: str = "Project X") -> str:
    """A team created through ``POST /teams`` (202, then the operation settles), *owner* its owner."""
    people = [{"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"] if u == owner else [],
               "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{u}')"} for u in (owner, *members)]
    r = graph.post("teams", json={"template@odata.bind": "https://graph.microsoft.com/v1.0/teamsTemplates('standard')",
                                  "displayName": name, "members": people})
    assert r.status_code == 202, r.text
    team_id = r.headers["Content-Location"].split("'")[1]
    graph.admin("POST", "clock", json={"advance": 5})
    graph._token = None  # the clock moved: the helper's token may have expired
    assert graph.get(f"teams/{team_id}").status_code == 200
    return team_id


def make_chat(graph: EmulatorClient, *people: str) -> str:
    """A oneOnOne (two people) or group chat created through ``POST /chats``."""
    r = graph.post("chats", json={"chatType": "oneOnOne" if len(people) == 2 else "group", "members": [
        {"roles": ["owner"], "user@odata.bind": f"users('{p}')"} for p in people]})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def say_in_chat(graph: EmulatorClient, chat: str, sender: str, text: str) -> dict[str, Any]:
    """A chat message posted as *sender* (admin API: a user's post, with its notifications)."""
    r = graph.admin("POST", f"chats/{quote(chat, safe='')}/messages", json={"from": sender, "body": {"content": text}})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def say_in_channel(graph: EmulatorClient, team: str, channel: str, sender: str, text: str,
                   *, reply_to: str | None = None) -> dict[str, Any]:
    """A channel message (or a reply to *reply_to*) posted as *sender* through the admin API."""
    path = f"teams/{team}/channels/{quote(channel, safe='')}/messages"
    if reply_to is not None:
        path += f"/{reply_to}/replies"
    r = graph.admin("POST", path, json={"from": sender, "body": {"contentType": "html", "content": text}})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def rows(world: World, table: str, columns: str) -> dict[str, dict[str, Any]]:
    """The rows of *table* by id (*columns*: a SQL select list that includes ``id``)."""
    with world.engine.connect() as connection:
        found = connection.execute(sa.text(f"SELECT {columns} FROM {table}")).mappings()
        return {str(r["id"]): dict(r) for r in found}


def raw(row: dict[str, Any]) -> dict[str, Any]:
    value = row["_raw"]
    return value if isinstance(value, dict) else json.loads(value)  # type: ignore[no-any-return]


def delivered(world: World, match: Callable[[dict[str, Any]], bool], *, count: int = 1) -> list[dict[str, Any]]:
    """The change notifications the emulator POSTed to the spec's receiver that *match* (waits for *count*)."""
    world.receiver.wait_for(lambda: len([i for i in world.receiver.items("notifications") if match(i)]) >= count)
    found = [i for i in world.receiver.items("notifications") if match(i)]
    assert len(found) >= count, world.receiver.items("notifications")
    return found


def to_inbox(world: World, items: list[dict[str, Any]]) -> None:
    """Store Graph's notification items in the inbox as syncer's receiver does."""
    Inbox(world.engine).put([NewItem(
        tenant_id=i["tenantId"], subscription_id=i["subscriptionId"], kind="change", event=i["changeType"],
        resource=i["resource"], resource_id=(i.get("resourceData") or {}).get("id"), dedupe_key=f"k{next(_keys)}",
        payload=i) for i in items])


@contextmanager
def worker_for(world: World, spec: Spec) -> Iterator[tuple[Worker, dict[str, GraphClient]]]:
    """A worker over every declared scope, its first passes done."""
    graphs = graphs_for(spec)
    try:
        clients = {t.name: graphs[t.tenant_id] for t in spec.tenants}
        index = ScopeIndex.of(scopes.declared_scopes(spec, clients=clients))
        worker = Worker(world.engine, graphs, index, worker_id="w1", spec=spec)
        worker.register_scopes()
        worker.drain()
        worker.wait(timeout=60)
        try:
            yield worker, graphs
        finally:
            worker.close()
    finally:
        for g in graphs.values():
            g.close()
