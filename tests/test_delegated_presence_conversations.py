"""Presence and group conversations, declarable only with a signed-in user, end to end: `syncer login`, reconcile
(delegated subscriptions of at most 60 minutes for presence), `syncer sync`, changes through Graph's API, notified
items fetched by id, and the mirror equal to the emulator's truth; on SQLite and PostgreSQL over real HTTPS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from emulator_fixtures import EmulatorClient
from test_delegated_e2e import mirror_matches
from webhook_receiver import Receiver

from syncer import database, reconcile
from syncer.cli import main
from syncer.graph.times import parse_datetime
from syncer.inbox import Inbox, NewItem
from syncer.reconcile import graphs_for
from syncer.spec import load_spec
from syncer.worker.scheduler import build_worker, clients_for, reconcile_interval


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write_spec(tmp_path: Path, info: dict[str, Any], database_url: str, receiver: Receiver, upn: str,
               watched: list[str], group_id: str) -> Path:
    info_file = tmp_path / "emulator.json"
    info_file.write_text(json.dumps(info))
    ids = ",".join(f"'{i}'" for i in watched)
    path = tmp_path / "subscriptions.yaml"
    path.write_text(
        f"""
version: 1
graph: {{cloud: emulator, emulator_info: {info_file}}}
tenants:
  - name: me
    auth: delegated
    authority: organizations
    account: {upn}
    token_cache: {tmp_path}/config/me.json
receiver:
  notification_url: "{receiver.url("notifications")}"
  lifecycle_url: "{receiver.url("lifecycle")}"
database: {{url: "{database_url}"}}
subscriptions:
  - name: presence
    resource: "communications/presences?$filter=id in ({ids})"
    lifetime: 1h
    mirror:
      table: presences
      columns: [availability, activity]
  - name: conversations
    resource: groups/{group_id}/conversations
    change_types: [created, updated, deleted]
    mirror:
      table: conversations
      columns: [topic, preview, lastDeliveredDateTime]
"""
    )
    return path


def notified(receiver: Receiver, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = [i for got in list(receiver.received) if got.path == "notifications" for i in got.body["value"]]
        if len(items) >= count:
            return items
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} notifications in {timeout}s")


def test_presence_and_conversations_are_mirrored_with_a_signed_in_user(
    tmp_path: Path, emulator_info: dict[str, Any], graph: EmulatorClient, database_url: str, receiver: Receiver
) -> None:
    ana, bo, cy = (graph.create_user(n) for n in ("ana", "bo", "cy"))
    group = graph.post("groups", json={"displayName": "Team", "mailEnabled": True, "mailNickname": "team",
                                       "securityEnabled": False, "groupTypes": ["Unified"]}).json()
    graph.admin("POST", f"users/{bo['id']}/presence", json={"availability": "Busy", "activity": "InACall"})
    first = graph.admin("POST", f"groups/{group['id']}/conversations",
                        json={"topic": "welcome", "from": bo["id"], "content": "hello"}).json()
    assert graph.admin("POST", "sign-in-as", json={"user": ana["userPrincipalName"]}).status_code == 200
    path = write_spec(tmp_path, emulator_info, database_url, receiver, ana["userPrincipalName"],
                      [bo["id"], cy["id"]], group["id"])
    spec = load_spec(path).resolve_emulator()

    assert (r := cli("login", "--spec", str(path))).exit_code == 0, r.output
    assert (r := cli("db", "upgrade", "--spec", str(path))).exit_code == 0, r.output
    assert (r := cli("reconcile", "--spec", str(path))).exit_code == 0, r.output
    live = {s["resource"]: s for s in graph.get("subscriptions").json()["value"]}
    assert len(live) == 2 and all(s["creatorId"] == ana["id"] for s in live.values())
    presence = next(s for s in live.values() if "presences" in s["resource"])
    now = parse_datetime(graph.admin("GET", "clock").json()["now"])
    assert parse_datetime(presence["expirationDateTime"]) - now <= timedelta(minutes=60)
    # The worker reconciles often enough to renew a 60-minute subscription in time.
    assert reconcile_interval(900.0, spec) == 5 * 60 and reconcile_interval(900.0, None) == 900.0
    assert (r := cli("sync", "--spec", str(path))).exit_code == 0, r.output
    assert mirror_matches(spec) == []

    # Changes through Graph's API (the app's token) and Teams (presence): the notifications name items fetched by id.
    graph.admin("POST", f"users/{cy['id']}/presence", json={"availability": "Away", "activity": "Away"})
    graph.admin("POST", f"users/{ana['id']}/presence", json={"availability": "Busy", "activity": "Busy"})  # unwatched
    made = graph.post(f"groups/{group['id']}/conversations",
                      json={"topic": "plans", "threads": [{"posts": [{"body": {"content": "next week"}}]}]})
    assert made.status_code == 201, made.text
    thread = first["threads"][0]["id"]
    replied = graph.post(f"groups/{group['id']}/threads/{thread}/reply",
                         json={"post": {"body": {"content": "thanks"}}})
    assert replied.status_code == 202, replied.text
    items = notified(receiver, 3)
    assert mirror_matches(spec) != []  # Graph moved on; the mirror has not yet

    # The notifications as the receiver stores them; the worker's drain fetches each notified item by id.
    clients = clients_for(spec)
    engine = database.create_engine(spec.database_url)
    try:
        worker = build_worker(spec, engine=engine, clients=clients)
        worker.register_scopes()
        Inbox(engine).put([NewItem(
            tenant_id=item["tenantId"], subscription_id=item["subscriptionId"], kind="change",
            event=item["changeType"], resource=item["resource"], resource_id=item["resourceData"]["id"],
            dedupe_key=f"k{n}", payload={"resource": item["resource"]}) for n, item in enumerate(items)])
        drained = worker.drain()
        worker.wait(timeout=60)
        assert drained.claimed == len(items) and drained.fetched == len(items), drained
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT user_id, availability, activity FROM presences")).all()
            conversations = connection.execute(sa.text("SELECT group_id, topic FROM conversations")).all()
    finally:
        engine.dispose()
        for c in clients.values():
            c.close()
    assert sorted(map(tuple, rows)) == sorted([(bo["id"], "Busy", "InACall"), (cy["id"], "Away", "Away")])
    assert sorted(map(tuple, conversations)) == sorted([(group["id"], "welcome"), (group["id"], "plans")])
    assert mirror_matches(spec) == []

    # 46 minutes later the 60-minute presence subscription is inside its renew_before (15 minutes): the worker's
    # reconcile renews it, with the signed-in user's token; the conversations' 4,230-minute one is left alone.
    assert graph.admin("POST", "clock", json={"advance": 46 * 60}).status_code == 200
    later = parse_datetime(graph.admin("GET", "clock").json()["now"])
    graphs = graphs_for(spec)
    try:
        outcome = reconcile.run(spec, graphs=graphs, clock=lambda: later)
    finally:
        for g in graphs.values():
            g.close()
    assert outcome is not None and outcome.ok, outcome
    kinds = {a.resource.split("?")[0]: str(a.kind) for a in outcome.plan.actions}
    assert kinds == {"communications/presences": "renew", f"groups/{group['id']}/conversations": "keep"}, kinds
    renewed = {s["resource"]: s for s in graph.get("subscriptions").json()["value"]}[presence["resource"]]
    assert parse_datetime(renewed["expirationDateTime"]) - later > timedelta(minutes=45)

    # A deleted conversation leaves the mirror at the next pass (the list's sweep, or its notification).
    assert graph.delete(f"groups/{group['id']}/conversations/{first['id']}").status_code == 204
    assert (r := cli("sync", "--spec", str(path))).exit_code == 0, r.output
    assert mirror_matches(spec) == []
