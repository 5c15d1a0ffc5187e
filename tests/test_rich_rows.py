"""Rich notifications write the mirror (issue 15): the emulator encrypts each changed resource for syncer's own
receiver, which decrypts it into the inbox; the worker writes the row from it with no GET of the item (counted in
the emulator's request log), keeps the newest state, fetches what it cannot decrypt, and a full pass afterwards
changes nothing. Real HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
import sqlalchemy as sa
import test_reconcile
import test_teams_sync
from test_receiver import Server
from test_reconcile import World

from syncer import mirror, schema
from syncer.graph.client import GraphClient
from syncer.inbox import Inbox, NewItem
from syncer.receiver.app import create_app
from syncer.receiver.notifications import DecryptionKey, JwksCache, KeyRing, TokenValidator
from syncer.receiver.rich import load_private_key
from syncer.reconcile import graphs_for
from syncer.reconcile.desired import certificate_base64
from syncer.spec import Spec
from syncer.worker import scopes
from syncer.worker.jobs import Worker
from syncer.worker.scheduler import sync_once
from syncer.worker.scopes import ScopeIndex

world = test_reconcile.world

MAIL = """
  - name: mail
    resource: users/{{user}}/messages
    change_types: [created, updated, deleted]
    lifetime: 1d
    include_resource_data: true
    encryption: {{certificate: "{cert}", private_key: {{file: "{key}"}}, id: {cert_id}}}
    for_each: {{users: [{user}]}}
    mirror:
      table: mail
      columns: [subject, parentFolderId, isRead, lastModifiedDateTime]
"""
#: Columns that say what a row holds; _synced_at and _sync_run_id say when and by which write.
CONTENT = ("id", "_scope", "subject", "parent_folder_id", "is_read", "last_modified_date_time", "_raw", "_deleted_at",
           "_removed_reason")


class Rig:
    """syncer's receiver (decrypting with the spec's keys) in front of a worker, against the emulator."""

    def __init__(self, world: World, spec: Spec, keys: KeyRing | None = None) -> None:
        self.world, self.spec = world, spec
        self.graphs: dict[str, GraphClient] = graphs_for(spec)
        tenant = spec.tenants[0]
        index = ScopeIndex.of(scopes.declared_scopes(spec, clients={tenant.name: self.graphs[tenant.tenant_id]}))
        self.worker = Worker(world.engine, self.graphs, index, worker_id="w1", spec=spec)
        self.keys = keys
        self.worker.register_scopes()

    def settle(self) -> None:
        """Drain and wait until the inbox is empty and no pass runs (folders found by the container start later)."""
        for _ in range(20):
            self.worker.drain()
            self.worker.wait(timeout=60)
            if Inbox(self.world.engine).depth() == 0 and not self.worker.due_scopes():
                return
        raise AssertionError("the worker did not settle")

    def notified(self, count: int, *, timeout: float = 15) -> None:
        """Wait until *count* notifications arrived since the last drain."""
        deadline = time.monotonic() + timeout
        while Inbox(self.world.engine).depth() < count:
            assert time.monotonic() < deadline, f"{Inbox(self.world.engine).depth()} of {count} notifications arrived"
            time.sleep(0.05)

    def close(self) -> None:
        self.worker.close()
        for g in self.graphs.values():
            g.close()


@contextmanager
def rigged(world: World, declaration: str, **fields: str) -> Iterator[Rig]:
    """*declaration* (formatted with the certificate's ``cert``, ``key``, ``cert_id`` and *fields*) reconciled,
    syncer's receiver holding the key, and the first passes done."""
    cert, key = test_reconcile._certificate(world.tmp, "rich-1")
    info = world.graph.info
    tokens = TokenValidator(JwksCache(f"{info['authority']}/v2.0/.well-known/openid-configuration",
                                      verify=info["ca_cert"]), app_ids=[info["client_id"]])
    keys = KeyRing([DecryptionKey("cert-1", load_private_key(key.read_bytes()))])
    server = Server(create_app(world.engine, tokens=tokens, keys=keys))
    world.receiver_base = server.url
    spec = world.spec(declaration.format(cert=cert, key=key, cert_id="cert-1", **fields))
    with running(world, server, spec, lambda: Rig(world, spec, keys)) as rig:
        yield rig


R = TypeVar("R", bound=Rig)


@contextmanager
def running(world: World, server: Server, spec: Spec, make: Callable[[], R]) -> Iterator[R]:
    """*spec* upgraded and reconciled with *server* as syncer's receiver, and the rig *make* builds with its first
    passes done; the rig and the server closed after."""
    try:
        mirror.upgrade(spec, engine=world.engine)
        outcome = world.run(spec)
        assert outcome.ok, [r.error for r in outcome.failed]
        rig = make()
        try:
            rig.settle()
            yield rig
        finally:
            rig.close()
    finally:
        server.close()


@pytest.fixture
def rig(world: World) -> Iterator[Rig]:
    with rigged(world, MAIL, user=world.users[0]) as mail:
        yield mail


def rows(world: World, table: str = "mail", columns: tuple[str, ...] = CONTENT) -> dict[str, dict[str, Any]]:
    with world.engine.connect() as connection:
        found = connection.execute(sa.text(f"SELECT * FROM {table}")).mappings()
        out = {}
        for r in found:
            row = {k: r[k] for k in columns if k in r}
            row["_raw"] = row["_raw"] if isinstance(row["_raw"], dict) else json.loads(row["_raw"])
            out[r["id"]] = row
        return out


def item_gets(world: World, since: int, ids: list[str]) -> list[str]:
    """GETs of the items *ids* (not delta or lists) in the emulator's request log since *since*."""
    log = world.graph.admin("GET", "requests", params={"since": since, "limit": 100000}).json()["requests"]
    return [e["path"] for e in log if e["method"] == "GET" and "/delta" not in e["path"]
            and any(i in e["path"] for i in ids)]


def test_create_update_delete_become_rows_from_payloads_without_a_graph_read(rig: Rig) -> None:
    world, graph, user = rig.world, rig.world.graph, rig.world.users[0]
    seq = world.log_seq()
    r = graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": "hello"})
    assert r.status_code == 201, r.text
    message = r.json()
    rig.notified(1)
    drained = rig.worker.drain()
    assert drained.started == (), drained  # no pass: the row came from the payload
    row = rows(world)[message["id"]]
    assert row["subject"] == "hello" and row["_deleted_at"] is None
    assert row["_scope"] == f"users/{user}/mailFolders/{message['parentFolderId']}/messages"

    r = graph.patch(f"users/{user}/messages/{message['id']}", json={"subject": "hello again", "isRead": True})
    assert r.status_code == 200, r.text
    rig.notified(1)
    assert rig.worker.drain().started == ()
    row = rows(world)[message["id"]]
    assert (row["subject"], row["is_read"]) == ("hello again", True)

    assert graph.delete(f"users/{user}/messages/{message['id']}").status_code == 204
    rig.notified(1)
    assert rig.worker.drain().started == ()
    row = rows(world)[message["id"]]
    assert row["_removed_reason"] == "deleted" and row["_deleted_at"] is not None
    assert item_gets(world, seq, [message["id"]]) == []
    assert rig.worker.metrics.value("syncer_rows_written_total", source="payload") == 3
    # The decrypted resources left the inbox with their acknowledgement.
    with world.engine.connect() as connection:
        payloads = [p if isinstance(p, dict) else json.loads(p)
                    for p in connection.execute(sa.select(schema.inbox.c.payload)).scalars()]
    assert payloads and not any("decryptedContent" in p for p in payloads)


def put_payload(rig: Rig, resource: str, content: dict[str, Any], *, key: str, event: str = "updated") -> None:
    """A rich notification as the receiver stores it (what Graph would send late, or twice)."""
    world = rig.world
    (sub,) = world.live()
    Inbox(world.engine).put([NewItem(
        tenant_id=rig.spec.tenants[0].tenant_id, subscription_id=sub["id"], kind="change", event=event,
        resource=resource, resource_id=content["id"], dedupe_key=key,
        payload={"resource": resource, "encryptionCertificateId": "cert-1", "decryptedContent": content})])


def synced_at(world: World, item_id: str) -> Any:
    with world.engine.connect() as connection:
        return connection.execute(sa.text("SELECT _synced_at FROM mail WHERE id = :i"), {"i": item_id}).scalar_one()


def test_an_old_payload_after_a_newer_one_changes_nothing_and_a_duplicate_is_a_no_op(rig: Rig) -> None:
    world, graph, user = rig.world, rig.world.graph, rig.world.users[0]
    message = graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": "v1"}).json()
    rig.notified(1)
    rig.worker.drain()
    v1 = rows(world)[message["id"]]["_raw"]
    world.advance(timedelta(minutes=1))  # so that the edit's lastModifiedDateTime is later
    assert graph.patch(f"users/{user}/messages/{message['id']}", json={"subject": "v2"}).status_code == 200
    rig.notified(1)
    rig.worker.drain()
    now = rows(world)[message["id"]]
    assert now["subject"] == "v2"
    before = synced_at(world, message["id"])
    resource = f"Users/{user}/Messages/{message['id']}"
    # Graph delivers the first version again, late (its retry after a timeout): older, skipped.
    put_payload(rig, resource, {**v1, "@odata.id": resource}, key="late")
    # And the second one twice: the same state, nothing written.
    put_payload(rig, resource, {**now["_raw"], "@odata.type": "#Microsoft.Graph.Message"}, key="again")
    drained = rig.worker.drain()
    assert drained.claimed == 2 and drained.started == ()
    assert rows(world)[message["id"]] == now and synced_at(world, message["id"]) == before
    assert rig.worker.metrics.value("syncer_rows_written_total", source="payload") == 2


def test_a_payload_that_cannot_be_decrypted_is_fetched(rig: Rig) -> None:
    world, graph, user = rig.world, rig.world.graph, rig.world.users[0]
    # The subscription's certificate changes to one the receiver holds no key for (rotated out too early).
    cert, _key = test_reconcile._certificate(world.tmp, "unknown")
    (sub,) = world.live()
    r = graph.patch(f"subscriptions/{sub['id']}", json={
        "expirationDateTime": sub["expirationDateTime"], "encryptionCertificate": certificate_base64(cert), "encryptionCertificateId": "cert-unknown"})
    assert r.status_code == 200, r.text
    seq = world.log_seq()
    message = graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": "sealed"}).json()
    rig.notified(1)
    with world.engine.connect() as connection:
        (stored,) = connection.execute(sa.select(schema.inbox.c.payload)).scalars()
    stored = stored if isinstance(stored, dict) else json.loads(stored)
    assert stored["undecrypted"] == "unknown_certificate" and "decryptedContent" not in stored
    assert rig.worker.drain().started == ()
    assert rows(world)[message["id"]]["subject"] == "sealed"
    assert len(item_gets(world, seq, [message["id"]])) == 1  # read by id, once
    assert rig.worker.metrics.value("syncer_rows_written_total", source="fetch") == 1


def test_after_a_burst_of_rich_notifications_a_full_pass_changes_nothing(rig: Rig) -> None:
    world, graph, user = rig.world, rig.world.graph, rig.world.users[0]
    seq = world.log_seq()
    made = [graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": f"m{i}"}).json() for i in range(12)]
    for m in made[:6]:
        assert graph.patch(f"users/{user}/messages/{m['id']}", json={"isRead": True}).status_code == 200
    for m in made[6:9]:
        assert graph.delete(f"users/{user}/messages/{m['id']}").status_code == 204
    rig.notified(21)
    rig.settle()
    assert item_gets(world, seq, [m["id"] for m in made]) == []
    before = rows(world)
    assert {before[m["id"]]["subject"] for m in made[9:]} == {"m9", "m10", "m11"}
    results = sync_once(rig.spec, ["mail"], full=True, clients=rig.graphs, engine=world.engine)
    assert results and all(r.outcome == "ok" for r in results), results
    after = rows(world)
    assert after == before


CHANNEL = """
  - name: channel-messages
    resource: 'teams/{{team}}/channels/{{channel}}/messages'
    for_each: {{teams: [{team_id}]}}
    lifetime: 1d
    include_resource_data: true
    encryption: {{certificate: "{cert}", private_key: {{file: "{key}"}}, id: {cert_id}}}
    mirror:
      table: channel_messages
      columns: [subject, {{field: body.content, column: body_text}}, lastModifiedDateTime]
"""
MESSAGE_CONTENT = ("id", "_scope", "subject", "body_text", "last_modified_date_time", "channel_id", "reply_to_id",
                   "deleted_date_time", "_raw", "_deleted_at", "_removed_reason")


def test_channel_messages_and_replies_become_rows_from_payloads(world: World) -> None:
    graph = world.graph
    ada, alan, _grace = world.users
    team = test_teams_sync._team(graph, ada, alan)
    general = graph.get(f"teams/{team}/channels").json()["value"][0]["id"]
    enc = quote(general, safe="")
    with rigged(world, CHANNEL, team_id=team) as rig:
        seq = world.log_seq()
        root = test_teams_sync._say(graph, team, general, alan, "<p>root</p>")
        reply = graph.admin("POST", f"teams/{team}/channels/{enc}/messages/{root['id']}/replies",
                            json={"from": ada, "body": {"content": "a reply"}}).json()
        rig.notified(2)
        assert rig.worker.drain().started == ()
        found = rows(world, "channel_messages", MESSAGE_CONTENT)
        assert found[root["id"]]["body_text"] == "<p>root</p>" and found[root["id"]]["channel_id"] == general
        assert found[reply["id"]]["reply_to_id"] == root["id"]
        world.advance(timedelta(minutes=1))
        r = graph.admin("PATCH", f"teams/{team}/channels/{enc}/messages/{root['id']}",
                        json={"body": {"contentType": "html", "content": "<p>edited</p>"}})
        assert r.status_code == 200, r.text
        assert graph.admin("DELETE", f"teams/{team}/channels/{enc}/messages/{root['id']}/replies/{reply['id']}"
                           ).status_code == 204
        rig.notified(2)
        assert rig.worker.drain().started == ()
        found = rows(world, "channel_messages", MESSAGE_CONTENT)
        assert found[root["id"]]["body_text"] == "<p>edited</p>"
        assert found[reply["id"]]["_removed_reason"] == "deleted" and found[reply["id"]]["deleted_date_time"]
        assert item_gets(world, seq, [root["id"], reply["id"]]) == []
        # Delta agrees: a full pass changes nothing.
        results = sync_once(rig.spec, ["channel-messages"], full=True, clients=rig.graphs, engine=world.engine)
        assert results and all(r.outcome == "ok" for r in results), results
        assert rows(world, "channel_messages", MESSAGE_CONTENT) == found


def test_certificate_rotation_moves_each_subscription_at_its_renewal(world: World) -> None:
    from syncer.reconcile.actions import Kind
    from syncer.reconcile.report import render_plan

    first, second = test_reconcile._certificate(world.tmp, "first"), test_reconcile._certificate(world.tmp, "second")
    declaration = """
  - name: rich-mail
    resource: users/{{user}}/messages
    change_types: [created]
    include_resource_data: true
    renew_before: 2h
    encryption: {encryption}
    for_each: {{users: [{user}]}}
"""
    one = f'{{certificate: "{first[0]}", private_key: {{file: "{first[1]}"}}, id: cert-1}}'
    two = (f'{{certificate: "{second[0]}", private_key: {{file: "{second[1]}"}}, id: cert-2, '
           f'previous: {{certificate: "{first[0]}", private_key: {{file: "{first[1]}"}}, id: cert-1}}}}')
    assert world.run(world.spec(declaration.format(encryption=one, user=world.users[0]))).ok
    (old,) = world.live()
    # The new certificate is declared with the old one as previous: nothing is PATCHed, reconcile says who lags.
    spec = world.spec(declaration.format(encryption=two, user=", ".join(world.users[:2])))
    outcome = world.run(spec)
    assert outcome.ok and sorted((a.kind, a.on_previous_certificate) for a in outcome.plan.actions) == [
        (Kind.CREATE, False), (Kind.KEEP, True)]
    report = "\n".join(render_plan(outcome.plan))
    assert "1 subscriptions still on the previous certificate" in report and old["resource"] in report
    by_id = {s["id"]: s for s in world.live()}
    assert by_id[old["id"]]["encryptionCertificateId"] == "cert-1"  # keeps decrypting with the previous key
    assert {s["encryptionCertificateId"] for i, s in by_id.items() if i != old["id"]} == {"cert-2"}  # new: new
    # At its renewal it moves, in the renewal's PATCH.
    world.advance(timedelta(hours=23))
    outcome = world.run(spec)
    moved = next(a for a in outcome.plan.actions if a.subscription_id == old["id"])
    assert moved.kind == Kind.UPDATE and set(moved.changes) == {"encryptionCertificate", "expirationDateTime"}
    assert outcome.ok and {s["encryptionCertificateId"] for s in world.live()} == {"cert-2"}
    assert not any(a.on_previous_certificate for a in world.run(spec).plan.actions)


def test_a_payload_waits_while_a_pass_holds_its_scope(rig: Rig) -> None:
    from syncer.worker.scopestate import LEASE_TTL, ScopeStore, utcnow

    world, graph, user = rig.world, rig.world.graph, rig.world.users[0]
    message = graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": "held"}).json()
    rig.notified(1)
    tenant = rig.spec.tenants[0].tenant_id
    key = f"users/{user}/mailFolders/{message['parentFolderId']}/messages"
    scope = rig.worker.index.resolve(tenant, key, f"users/{user}/messages")
    assert scope is not None
    other = ScopeStore(world.engine, scope, worker="another-worker", clock=utcnow, lease_ttl=LEASE_TTL)
    with world.engine.begin() as connection:
        assert other.take_lease(connection)  # a pass of another worker is in its round
    drained = rig.worker.drain()
    assert drained.claimed == 1 and message["id"] not in rows(world)  # nothing written between its pages
    assert Inbox(world.engine).depth() == 1  # the notification waits, its content with it
    with world.engine.begin() as connection:
        other.release_lease(connection)
    time.sleep(1.1)  # RICH_RETRY
    rig.worker.drain()
    assert rows(world)[message["id"]]["subject"] == "held" and Inbox(world.engine).depth() == 0


def test_payload_rules() -> None:
    from syncer.worker.rich import stale, to_item

    old = {"id": "1", "subject": "a", "lastModifiedDateTime": "2026-01-01T10:00:00Z"}
    new = {"id": "1", "subject": "b", "lastModifiedDateTime": "2026-01-01T10:00:01Z"}
    assert stale(old, new) and not stale(new, old) and stale(new, dict(new)) and not stale(new, None)
    # No version (a channel, a team): the last one received wins, unless it is the same.
    assert not stale({"id": "1", "displayName": "x"}, {"id": "1", "displayName": "y"})
    scope = type("S", (), {"strategy": type("T", (), {"select": True})(),
                           "mirror": type("M", (), {"select": ("id", "subject", "isRead")})()})()
    item = to_item({"@odata.type": "#Microsoft.Graph.Message", "@odata.id": "Users/u/Messages/1",
                    "@odata.etag": 'W/"x"', "id": "1", "subject": "s"}, scope)  # type: ignore[arg-type]
    assert item == {"@odata.etag": 'W/"x"', "id": "1", "subject": "s", "isRead": None}


EVENTS = """
  - name: calendar
    resource: users/{{user}}/events
    change_types: [created, updated, deleted]
    lifetime: 1d
    include_resource_data: true
    encryption: {{certificate: "{cert}", private_key: {{file: "{key}"}}, id: {cert_id}}}
    for_each: {{users: [{user}]}}
    mirror:
      table: events
      columns: [subject, lastModifiedDateTime]
"""


def test_an_event_payload_updates_its_row_and_a_new_event_is_left_to_calendar_view(world: World) -> None:
    graph, user = world.graph, world.users[0]
    with rigged(world, EVENTS, user=user) as rig:
        day = (world.now() + timedelta(days=2)).strftime("%Y-%m-%d")
        r = graph.post(f"users/{user}/events", json={
            "subject": "Review", "start": {"dateTime": f"{day}T10:00:00", "timeZone": "UTC"},
            "end": {"dateTime": f"{day}T11:00:00", "timeZone": "UTC"}})
        assert r.status_code == 201, r.text
        event = r.json()
        rig.notified(1)
        # New: whether it belongs to the mirror (the window, occurrences) is calendarView's to say.
        assert rig.worker.drain().started == (f"users/{user}/events",)
        rig.worker.wait(timeout=60)
        columns = ("id", "subject", "last_modified_date_time", "_raw", "_deleted_at", "_removed_reason")
        assert rows(world, "events", columns)[event["id"]]["subject"] == "Review"
        seq = world.log_seq()
        world.advance(timedelta(minutes=1))
        assert graph.patch(f"users/{user}/events/{event['id']}", json={"subject": "Review, moved"}).status_code == 200
        rig.notified(1)
        assert rig.worker.drain().started == ()
        found = rows(world, "events", columns)
        row = found[event["id"]]
        # The payload's $select merged into the row's full calendarView item.
        assert row["subject"] == "Review, moved" and row["_raw"]["start"]["dateTime"].startswith(day)
        assert item_gets(world, seq, [event["id"]]) == []
        results = sync_once(rig.spec, ["calendar"], full=True, clients=rig.graphs, engine=world.engine)
        assert results and all(r.outcome == "ok" for r in results), results
        assert rows(world, "events", columns) == found


def test_a_replayed_rich_notification_no_longer_holds_its_content_and_is_read_by_id(rig: Rig) -> None:
    world, graph, user = rig.world, rig.world.graph, rig.world.users[0]
    message = graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": "once"}).json()
    rig.notified(1)
    rig.worker.drain()
    before = rows(world)[message["id"]]
    seq = world.log_seq()
    assert Inbox(world.engine).replay() == 1  # syncer replay
    assert rig.worker.drain().started == ()
    assert len(item_gets(world, seq, [message["id"]])) == 1
    assert rows(world)[message["id"]] == before
