"""Basic notifications of a whole mailbox are read by id into their folder's scope (issue 19 part 3), instead of a
delta pass of every folder: a message created, updated, moved between folders and deleted, a contact likewise, with
and without the row already present, each costing one GET of the item and no pass; the uncertain cases (a folder no
scope follows yet, a row another folder holds, more notifications than folders) mark the scopes dirty as before; and
a full pass afterwards changes nothing. The emulator delivers to syncer's own receiver over real HTTP; SQLite and
PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
import test_reconcile
import test_rich_rows
from test_receiver import Server
from test_reconcile import World

from syncer.inbox import InboxItem
from syncer.receiver.app import create_app
from syncer.spec import Spec
from syncer.worker import notified
from syncer.worker.scheduler import sync_once

world = test_reconcile.world

# parentFolderId is deliberately not a column: the read asks for it anyway, to place the row, and keeps it out.
DECLARATIONS = """
  - name: mail
    resource: users/{{user}}/messages
    change_types: [created, updated, deleted]
    lifetime: 1d
    for_each: {{users: [{user}]}}
    mirror:
      table: mail
      columns: [subject, isRead, lastModifiedDateTime]
  - name: people
    resource: users/{{user}}/contacts
    change_types: [created, updated, deleted]
    lifetime: 1d
    for_each: {{users: [{user}]}}
    mirror:
      table: people
      columns: [givenName, lastModifiedDateTime]
"""
CONTENT = ("id", "_scope", "subject", "given_name", "is_read", "_raw", "_deleted_at", "_removed_reason")


class Rig(test_rich_rows.Rig):
    """syncer's receiver in front of a worker, against the emulator (basic notifications: no keys)."""

    def __init__(self, world: World, spec: Spec) -> None:
        super().__init__(world, spec)
        self.user = world.users[0]

    def drain_without_pass(self, count: int) -> None:
        """The *count* notifications that arrive, drained: written by reads, no pass started, nothing marked."""
        self.notified(count)
        drained = self.worker.drain()
        assert drained.claimed == count and drained.started == (), drained
        assert not self.worker.due_scopes()

    def folder(self, name: str) -> str:
        return str(self.world.graph.get(f"users/{self.user}/mailFolders/{name}").json()["id"])


@contextmanager
def rigged(world: World, users: str) -> Iterator[Rig]:
    """DECLARATIONS for *users* reconciled, syncer's receiver in front, the first passes done."""
    server = Server(create_app(world.engine))
    world.receiver_base = server.url
    spec = world.spec(DECLARATIONS.format(user=users))
    with test_rich_rows.running(world, server, spec, lambda: Rig(world, spec)) as rig:
        yield rig


@pytest.fixture
def rig(world: World) -> Iterator[Rig]:
    with rigged(world, world.users[0]) as rig:
        yield rig


def rows(world: World, table: str) -> dict[str, dict[str, Any]]:
    with world.engine.connect() as connection:
        out = {}
        for r in connection.execute(sa.text(f"SELECT * FROM {table}")).mappings():
            row = {k: r[k] for k in CONTENT if k in r}
            row["_raw"] = row["_raw"] if isinstance(row["_raw"], dict) else json.loads(row["_raw"])
            out[r["id"]] = row
        return out


def requests_since(world: World, seq: int) -> list[dict[str, Any]]:
    """syncer's Graph requests since *seq* (the test's own writes are POST, PATCH and DELETE)."""
    log = world.graph.admin("GET", "requests", params={"since": seq, "limit": 100000}).json()["requests"]
    return [e for e in log if e["method"] == "GET" and "/v1.0/" in e["path"]]


def full_pass_changes_nothing(rig: Rig, table: str, name: str) -> None:
    before = rows(rig.world, table)
    results = sync_once(rig.spec, [name], full=True, clients=rig.graphs, engine=rig.world.engine)
    assert results and all(r.outcome == "ok" for r in results), results
    assert rows(rig.world, table) == before


def test_a_message_created_updated_moved_and_deleted_costs_one_read_each(rig: Rig) -> None:
    world, graph, user = rig.world, rig.world.graph, rig.user
    inbox, archive = rig.folder("inbox"), rig.folder("archive")
    seq = world.log_seq()
    message = graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": "hello"}).json()
    rig.drain_without_pass(1)  # no row yet
    row = rows(world, "mail")[message["id"]]
    assert row["subject"] == "hello" and row["_scope"] == f"users/{user}/mailFolders/{inbox}/messages"
    assert "parentFolderId" not in row["_raw"]  # read to place the row, not a column

    assert graph.patch(f"users/{user}/messages/{message['id']}", json={"isRead": True}).status_code == 200
    rig.drain_without_pass(1)  # the row exists
    assert rows(world, "mail")[message["id"]]["is_read"] == 1

    # Exchange gives the moved message a new id: the old one is deleted, the new one created in the archive.
    r = graph.post(f"users/{user}/messages/{message['id']}/move", json={"destinationId": archive})
    assert r.status_code == 201, r.text
    moved = r.json()
    rig.drain_without_pass(2)
    found = rows(world, "mail")
    assert found[message["id"]]["_removed_reason"] == "deleted"
    assert found[moved["id"]]["_scope"] == f"users/{user}/mailFolders/{archive}/messages"
    assert found[moved["id"]]["_deleted_at"] is None and found[moved["id"]]["is_read"] == 1

    assert graph.delete(f"users/{user}/messages/{moved['id']}").status_code == 204
    rig.drain_without_pass(1)
    assert rows(world, "mail")[moved["id"]]["_removed_reason"] == "deleted"

    sent = requests_since(world, seq)
    assert all("/delta" not in e["path"] for e in sent), sent
    assert len(sent) == 5, sent  # one GET per notification (the deletes' GETs answered 404)
    assert not [e for e in sent if e["batch"]]  # one or two reads in a drain: no envelope
    assert rig.worker.metrics.value("syncer_rows_written_total", source="fetch") == 5
    full_pass_changes_nothing(rig, "mail", "mail")


def test_a_contact_created_updated_and_deleted_costs_one_read_each(rig: Rig) -> None:
    world, graph, user = rig.world, rig.world.graph, rig.user
    seq = world.log_seq()
    contact = graph.post(f"users/{user}/contacts", json={"givenName": "Ada"}).json()
    rig.notified(1)
    # What Graph sends for a contact (https://learn.microsoft.com/en-us/graph/outlook-change-notifications-overview):
    # the item's path, and resourceData naming its type and id.
    with world.engine.connect() as connection:
        (stored,) = connection.execute(sa.text("SELECT payload FROM syncer_inbox")).scalars()
    stored = stored if isinstance(stored, dict) else json.loads(stored)
    assert stored["resource"] == f"Users/{user}/Contacts/{contact['id']}"
    assert stored["resourceData"]["id"] == contact["id"]
    assert stored["resourceData"]["@odata.type"] == "#Microsoft.Graph.Contact"
    rig.drain_without_pass(1)
    row = rows(world, "people")[contact["id"]]
    assert row["given_name"] == "Ada" and row["_scope"] == f"users/{user}/contactFolders/{contact['parentFolderId']}/contacts"
    assert graph.patch(f"users/{user}/contacts/{contact['id']}", json={"givenName": "Grace"}).status_code == 200
    rig.drain_without_pass(1)
    assert rows(world, "people")[contact["id"]]["given_name"] == "Grace"
    assert graph.delete(f"users/{user}/contacts/{contact['id']}").status_code == 204
    rig.drain_without_pass(1)
    assert rows(world, "people")[contact["id"]]["_removed_reason"] == "deleted"
    assert len(requests_since(world, seq)) == 3
    full_pass_changes_nothing(rig, "people", "people")


def test_a_message_in_a_folder_no_scope_follows_yet_marks_the_mailbox(rig: Rig) -> None:
    world, graph, user = rig.world, rig.world.graph, rig.user
    r = graph.post(f"users/{user}/mailFolders", json={"displayName": "Projects"})
    assert r.status_code == 201, r.text
    folder = r.json()["id"]
    rig.notified(0)
    message = graph.post(f"users/{user}/mailFolders/{folder}/messages", json={"subject": "new folder"}).json()
    rig.notified(1)
    drained = rig.worker.drain()
    assert drained.started, drained  # the container's pass finds the folder, then its pass
    rig.settle()
    row = rows(world, "mail")[message["id"]]
    assert row["subject"] == "new folder" and row["_scope"] == f"users/{user}/mailFolders/{folder}/messages"
    assert rig.worker.metrics.value("syncer_notified_marked_total", reason="unplaced") >= 1


def test_a_row_another_folder_holds_is_left_to_the_passes(rig: Rig) -> None:
    world, graph, user = rig.world, rig.world.graph, rig.user
    inbox, archive = rig.folder("inbox"), rig.folder("archive")
    message = graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": "kept id"}).json()
    rig.drain_without_pass(1)
    # As after a move that kept the id (immutable ids): the row is another folder's.
    with world.engine.begin() as connection:
        connection.execute(sa.text("UPDATE mail SET _scope = :s WHERE id = :i"),
                           {"s": f"users/{user}/mailFolders/{archive}/messages", "i": message["id"]})
    assert graph.patch(f"users/{user}/messages/{message['id']}", json={"subject": "edited"}).status_code == 200
    rig.notified(1)
    drained = rig.worker.drain()
    assert drained.started, drained
    rig.settle()
    row = rows(world, "mail")[message["id"]]
    assert (row["subject"], row["_scope"], row["_deleted_at"]) == (
        "edited", f"users/{user}/mailFolders/{inbox}/messages", None)


def test_more_notifications_than_folders_mark_the_mailbox_instead_of_reading_each(rig: Rig) -> None:
    world, graph, user = rig.world, rig.world.graph, rig.user
    folders = len(graph.get(f"users/{user}/mailFolders").json()["value"])
    made = [graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": f"m{i}"}).json()
            for i in range(folders + 1)]
    rig.notified(len(made))
    seq = world.log_seq()
    drained = rig.worker.drain()
    assert drained.started, drained
    rig.settle()
    assert not [e for e in requests_since(world, seq) if any(m["id"] in e["path"] for m in made)]  # no read by id
    found = rows(world, "mail")
    assert {found[m["id"]]["subject"] for m in made} == {f"m{i}" for i in range(len(made))}
    assert rig.worker.metrics.value("syncer_notified_marked_total", reason="many") == len(made)


def test_which_notifications_are_read_by_id(rig: Rig) -> None:
    target = rig.worker.index.under(rig.spec.tenants[0].tenant_id, f"users/{rig.user}/messages")
    assert target is not None and notified.fetched(target)

    def item(resource: str, data: dict[str, Any] | None = None, resource_id: str | None = None) -> InboxItem:
        payload: dict[str, Any] = {"resource": resource, **({"resourceData": data} if data else {})}
        return InboxItem(id=1, tenant_id="t", subscription_id="s", kind="change", event="Updated", resource=resource,
                         resource_id=resource_id, payload=payload, received_at=datetime.now(UTC), attempts=0,
                         last_error=None)

    change = notified.change_of(item("Users/u/Messages/AAMk=", {"@odata.type": "#Microsoft.Graph.Message",
                                                                  "id": "AAMk="}, "AAMk="), target)
    assert change is not None and (change.item_id, change.change_type, change.undecrypted) == ("AAMk=", "updated", True)
    found = notified.change_of(item("users('u')/messages('m1')"), target)
    assert found is not None and found.item_id == "m1"
    assert notified.change_of(item("users/u/messages"), target) is None  # the collection: scopes marked
    assert notified.change_of(item("Users/u/Contacts/c1"), target) is None  # another type
    assert notified.change_of(item("Users/u/Messages/m1", {"@odata.type": "#Microsoft.Graph.Event"}), target) is None


def test_a_read_that_fails_marks_the_mailbox_and_the_passes_bring_the_row(rig: Rig) -> None:
    world, graph, user = rig.world, rig.world.graph, rig.user
    message = graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": "unreadable"}).json()
    r = graph.admin("POST", "faults", json={"type": "status", "status": 403, "method": "GET",
                                            "path": f"/messages/{message['id']}$"})
    assert r.status_code == 201, r.text
    rig.notified(1)
    drained = rig.worker.drain()
    graph.admin("DELETE", "faults")
    assert drained.started, drained  # the folders' passes instead
    rig.settle()
    assert rows(world, "mail")[message["id"]]["subject"] == "unreadable"
    assert rig.worker.metrics.value("syncer_notified_marked_total", reason="failed") == 1


# --- many reads in one drain: $batch envelopes (issue 19 part 3) ----------------------------------------------


@pytest.fixture
def wide(world: World) -> Iterator[Rig]:
    """As :func:`rig`, over every mailbox of the world (3): a drain reads items of several mailboxes."""
    with rigged(world, ", ".join(world.users)) as rig:
        yield rig


def envelopes_since(world: World, seq: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``$batch`` calls since *seq*, and the item GETs they carried."""
    log = world.graph.admin("GET", "requests", params={"since": seq, "limit": 100000}).json()["requests"]
    posts = [e for e in log if e["method"] == "POST" and e["path"].endswith("/$batch")]
    return posts, [e for e in log if e["batch"] and e["method"] == "GET"]


def test_a_drain_of_many_notified_items_reads_them_in_envelopes(wide: Rig) -> None:
    world, graph = wide.world, wide.world.graph
    folders = len(graph.get(f"users/{world.users[0]}/mailFolders").json()["value"])
    assert folders >= 6, folders  # 6 reads of one mailbox stay under its folders (else its folders' passes)
    kept = {user: [graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": f"old {n}"}).json()
                   for n in range(2)] for user in world.users}
    wide.notified(len(world.users) * 2)
    wide.settle()
    seq, before = world.log_seq(), wide.worker.metrics.value("syncer_rows_written_total", source="fetch")
    made: dict[str, tuple[str, str]] = {}  # message id -> (subject, folder)
    for user in world.users:
        for n, folder in enumerate(("inbox", "inbox", "archive", "archive")):
            message = graph.post(f"users/{user}/mailFolders/{folder}/messages", json={"subject": f"{user} {n}"}).json()
            made[message["id"]] = (message["subject"], message["parentFolderId"])
        updated, deleted = kept[user]
        assert graph.patch(f"users/{user}/messages/{updated['id']}", json={"subject": "edited"}).status_code == 200
        assert graph.delete(f"users/{user}/messages/{deleted['id']}").status_code == 204
        contact = graph.post(f"users/{user}/contacts", json={"givenName": user[:8]}).json()
        made[contact["id"]] = (contact["givenName"], contact["parentFolderId"])
    # 7 reads per mailbox: a wave of 4 of each (12, one envelope), then the other 3 of each (9, another).
    wide.drain_without_pass(len(world.users) * 7)
    posts, items = envelopes_since(world, seq)
    assert len(posts) == 2 and all(p["status"] == 200 for p in posts), posts
    assert len(items) == len(world.users) * 7 and all(i["status"] in (200, 404) for i in items), items
    assert not [e for e in requests_since(world, seq) if not e["batch"]]  # no read outside an envelope
    mail, people = rows(world, "mail"), rows(world, "people")
    for item_id, (name, folder) in made.items():
        row = mail.get(item_id) or people[item_id]
        assert (row["subject"] if item_id in mail else row["given_name"]) == name
        assert row["_scope"].split("/")[3] == folder and row["_deleted_at"] is None
    for updated, deleted in kept.values():
        assert mail[updated["id"]]["subject"] == "edited"
        assert mail[deleted["id"]]["_removed_reason"] == "deleted"
    assert wide.worker.metrics.value("syncer_rows_written_total", source="fetch") - before == len(world.users) * 7
    full_pass_changes_nothing(wide, "mail", "mail")
    full_pass_changes_nothing(wide, "people", "people")


def test_an_item_failing_inside_an_envelope_falls_back_alone(wide: Rig) -> None:
    world, graph = wide.world, wide.world.graph
    seq = world.log_seq()
    made = {user: graph.post(f"users/{user}/mailFolders/inbox/messages", json={"subject": f"to {user}"}).json()
            for user in world.users}
    failing = world.users[1]
    r = graph.admin("POST", "faults", json={"type": "status", "status": 403, "method": "GET",
                                            "path": f"/messages/{made[failing]['id']}$"})
    assert r.status_code == 201, r.text
    wide.notified(len(made))
    drained = wide.worker.drain()
    graph.admin("DELETE", "faults")
    posts, items = envelopes_since(world, seq)
    assert len(posts) == 1 and sorted(i["status"] for i in items) == [200, 200, 403], items
    # The others are written by the drain; only the failing item's mailbox is marked, and its passes (started by
    # the drain: they may have written its row already) bring the row.
    found = rows(world, "mail")
    assert {found[m["id"]]["subject"] for u, m in made.items() if u != failing} == {
        f"to {u}" for u in world.users if u != failing}
    assert drained.started and all(f"users/{failing}/" in key for key in drained.started), drained
    assert wide.worker.metrics.value("syncer_notified_marked_total", reason="failed") == 1
    wide.settle()
    assert rows(world, "mail")[made[failing]["id"]]["subject"] == f"to {failing}"


def test_envelopes_hold_at_most_four_reads_of_a_mailbox_at_a_time() -> None:
    from syncer.worker import batched, rich

    def read(user: str, n: int) -> Any:
        change = rich.Change(n, "updated", f"m{n}", f"Users/{user}/Messages/m{n}", None, undecrypted=True)
        return batched._Read(0, change, f"users/{user}/messages/m{n}?$select=subject")

    reads = [read(user, n) for user, count in (("a", 9), ("b", 30), ("c", 2)) for n in range(count)]
    planned = batched.waves(reads)
    assert sum(len(e) for w in planned for e in w) == len(reads)
    for wave in planned:
        assert all(len(envelope) <= 20 for envelope in wave)
        for user in "abc":
            assert sum(r.path.startswith(f"users/{user}/") for e in wave for r in e) <= batched.PER_MAILBOX
    assert [sum(map(len, w)) for w in planned] == [10, 8, 5, 4, 4, 4, 4, 2]
    assert [len(w) for w in batched.waves(reads, envelope=3)][:2] == [4, 3]  # a wave's 10, then 8, by 3
