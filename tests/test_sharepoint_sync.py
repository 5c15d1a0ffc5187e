"""SharePoint list items, group and site libraries, and group owners end to end (issue 16): declared in YAML,
reconciled against the emulator, synced, changed through Graph's API and compared with Graph's truth
(syncer.verify), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
import test_reconcile
from emulator_fixtures import EmulatorClient
from test_reconcile import World

from syncer import mirror, verify
from syncer.inbox import Inbox, NewItem
from syncer.receiver.notifications import Notification, parse_collection
from syncer.reconcile import graphs_for, render_plan
from syncer.reconcile.lifecycle import repair
from syncer.spec import Spec
from syncer.worker import scopes
from syncer.worker.jobs import Worker
from syncer.worker.scheduler import sync_once
from syncer.worker.scopes import ScopeIndex

world = test_reconcile.world  # the fixture: emulator, test receiver, migrated database, three users

LIST_SPEC = """
  - name: issues
    resource: '{resource}'
    lifetime: 1d
    mirror:
      table: issues
      columns: [fields.Title, fields.Status, {{field: fields.Count, type: float}}, lastModifiedDateTime]
"""


def _site(graph: EmulatorClient, name: str = "ops") -> dict[str, Any]:
    r = graph.admin("POST", "sites", json={"name": name, "displayName": name.title()})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _issues(graph: EmulatorClient, site_id: str) -> dict[str, Any]:
    r = graph.post(f"sites/{site_id}/lists", json={
        "displayName": "Issues", "columns": [{"name": "Status", "choice": {"choices": ["Open", "Closed"]}},
                                             {"name": "Count", "number": {}}]})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _group(graph: EmulatorClient, nick: str, **extra: Any) -> str:
    r = graph.post("groups", json={"displayName": nick.title(), "mailEnabled": False, "mailNickname": nick,
                                   "securityEnabled": True, **extra})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _stored(spec: Spec, n: Notification) -> NewItem:
    """A delivered notification as syncer's receiver stores it (syncer.receiver.receive)."""
    return NewItem(tenant_id=spec.tenants[0].tenant_id, subscription_id=n.subscription_id, kind=n.kind, event=n.event,
                   resource=n.resource, resource_id=n.resource_id, dedupe_key=n.dedupe_key, payload=n.payload())


def _rows(world: World, table: str, columns: str) -> dict[str, dict[str, Any]]:
    with world.engine.connect() as connection:
        rows = connection.execute(sa.text(f"SELECT id, {columns}, _deleted_at, _removed_reason FROM {table}")).mappings()
        return {r["id"]: dict(r) for r in rows}


class Synced:
    """Sync passes and the mirror-versus-Graph comparison for one spec."""

    def __init__(self, world: World, spec: Spec) -> None:
        self.world, self.spec, self.graphs = world, spec, graphs_for(spec)

    def __enter__(self) -> Synced:
        return self

    def __exit__(self, *exc: object) -> None:
        for g in self.graphs.values():
            g.close()

    def sync(self, *names: str) -> None:
        results = sync_once(self.spec, list(names), clients=self.graphs, engine=self.world.engine)
        assert results and all(r.outcome == "ok" for r in results), results
        self.verify()

    def verify(self) -> None:
        assert verify.compare(self.world.engine, self.graphs, verify.declared(self.spec, self.graphs)) == []

    def worker(self) -> Worker:
        tenant = self.spec.tenants[0]
        index = ScopeIndex.of(scopes.declared_scopes(self.spec, clients={tenant.name: self.graphs[tenant.tenant_id]}))
        worker = Worker(self.world.engine, self.graphs, index, worker_id="w1", spec=self.spec)
        worker.register_scopes()
        worker.drain()
        worker.wait(timeout=60)
        return worker


def test_list_items_end_to_end_from_a_site_path(world: World) -> None:
    """A list declared by the site's server-relative path and the list's display name: subscribed and keyed by the
    canonical ids, its items (not the list) mirrored through listItem delta with their fields as columns."""
    graph = world.graph
    site = _site(graph)
    lst = _issues(graph, site["id"])
    base = f"sites/{site['id']}/lists/{lst['id']}/items"
    first = graph.post(base, json={"fields": {"Title": "Printer jammed", "Status": "Open", "Count": 2}}).json()
    second = graph.post(base, json={"fields": {"Title": "No coffee", "Status": "Open"}}).json()
    spec = world.spec(LIST_SPEC.format(resource="sites/contoso.sharepoint.com:/sites/ops:/lists/Issues"))
    mirror.upgrade(spec, engine=world.engine)
    assert world.run(spec).ok
    canonical = f"sites/{site['id']}/lists/{lst['id']}"
    assert [s["resource"] for s in world.live()] == [canonical]
    with Synced(world, spec) as synced:
        synced.sync("issues")
        rows = _rows(world, "issues", "fields_title, fields_status, fields_count, site_id, list_id")
        assert set(rows) == {first["id"], second["id"]}
        assert rows[first["id"]]["fields_title"] == "Printer jammed" and rows[first["id"]]["fields_count"] == 2.0
        assert {(r["site_id"], r["list_id"]) for r in rows.values()} == {(site["id"], lst["id"])}

        # Changes through Graph: a new item, an edit, a deletion (the "deleted" facet).
        third = graph.post(base, json={"fields": {"Title": "Window stuck", "Status": "Open"}}).json()
        assert graph.patch(f"{base}/{first['id']}/fields", json={"Status": "Closed"}).status_code == 200
        assert graph.delete(f"{base}/{second['id']}").status_code == 204
        synced.sync("issues")
        rows = _rows(world, "issues", "fields_title, fields_status, site_id")
        assert rows[first["id"]]["fields_status"] == "Closed"
        assert rows[third["id"]]["_deleted_at"] is None and rows[third["id"]]["site_id"] == site["id"]
        assert rows[second["id"]]["_removed_reason"] == "deleted"

        # An expired token: 410, the scope is enumerated again and swept, nothing lost.
        assert graph.admin("POST", "delta/expire", json={"scope": "^sites/"}).json()["collections"] >= 1
        assert graph.patch(f"{base}/{third['id']}/fields", json={"Title": "Window fixed"}).status_code == 200
        (result,) = sync_once(spec, ["issues"], clients=synced.graphs, engine=world.engine)
        assert result.outcome == "ok" and result.resync is not None and result.full, result
        synced.verify()
        assert _rows(world, "issues", "fields_title")[third["id"]]["fields_title"] == "Window fixed"

        # Graph's shoulder taps (no item id, the list's canonical path, several per change), stored as the
        # receiver stores them: the burst is one inbox row, which marks the scope dirty; a delta pass follows.
        worker = synced.worker()
        before = len(world.receiver.items("notifications"))
        graph.post(base, json={"fields": {"Title": "Fourth", "Status": "Open"}})
        taps = world.receiver.wait_items(before + 2, path="notifications")[before:]
        assert all(t["resource"] == canonical and t["resourceData"] is None for t in taps), taps
        Inbox(world.engine).put([_stored(spec, n) for n in parse_collection(orjson.dumps({"value": taps})).notifications])
        drained = worker.drain()
        assert drained.claimed == 1 and drained.started == (canonical,), drained
        worker.wait(timeout=60)
        assert "Fourth" in {r["fields_title"] for r in _rows(world, "issues", "fields_title").values()}
        synced.verify()


OWNERS_SPEC = """
  - name: ops-owners
    resource: 'groups/{group}/owners'
    lifetime: 1d
    mirror: {{table: ops_owners, columns: [displayName, userPrincipalName]}}
  - name: groups
    resource: groups
    lifetime: 1d
    mirror: {{table: groups, columns: [displayName]}}
"""


def _ref(uid: str) -> dict[str, str]:
    return {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{uid}"}


def test_group_owners_are_their_own_table(world: World) -> None:
    """groups/{id}/owners mirrors the owners (not the members) with the group's id; adding and removing an owner
    through Graph reaches the mirror, by a pass or by a notification naming the group."""
    graph = world.graph
    ada, alan, grace = world.users
    gid = _group(graph, "ops", **{"owners@odata.bind": [f"https://graph.microsoft.com/v1.0/users/{ada}"],
                                  "members@odata.bind": [f"https://graph.microsoft.com/v1.0/users/{alan}"]})
    spec = world.spec(OWNERS_SPEC.format(group=gid))
    mirror.upgrade(spec, engine=world.engine)
    assert world.run(spec).ok
    assert sorted(s["resource"] for s in world.live()) == ["groups", f"groups/{gid}/owners"]
    with world.engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
    assert "ops_owners_members" not in tables and "groups_members" in tables
    with Synced(world, spec) as synced:
        synced.sync("ops-owners", "groups")
        rows = _rows(world, "ops_owners", "group_id, user_principal_name")
        assert set(rows) == {ada} and rows[ada]["group_id"] == gid  # the owner; alan is a member only
        assert graph.post(f"groups/{gid}/owners/$ref", json=_ref(grace)).status_code == 204
        assert graph.delete(f"groups/{gid}/owners/{ada}/$ref").status_code == 204
        synced.sync("ops-owners")
        rows = _rows(world, "ops_owners", "group_id")
        assert rows[grace]["_deleted_at"] is None and rows[grace]["group_id"] == gid
        assert rows[ada]["_removed_reason"] == "swept"

        # Graph notifies the owners subscription naming the group: the owners are listed again (not the
        # group fetched by id into the owners table). A membership change on /groups carries members@delta:
        # the groups scope's delta pass brings the members.
        worker = synced.worker()
        live = {s["id"]: s["resource"] for s in world.live()}
        before = len(world.receiver.items("notifications"))
        assert graph.post(f"groups/{gid}/owners/$ref", json=_ref(alan)).status_code == 204
        assert graph.post(f"groups/{gid}/members/$ref", json=_ref(grace)).status_code == 204

        def delivered() -> list[dict[str, Any]]:
            return world.receiver.items("notifications")[before:]

        assert world.receiver.wait_for(lambda: {live[n["subscriptionId"]] for n in delivered()} == set(live.values())
                                       and any("members@delta" in (n["resourceData"] or {}) for n in delivered()))
        Inbox(world.engine).put([_stored(spec, n) for n in parse_collection(orjson.dumps({"value": delivered()})).notifications])
        drained = worker.drain()
        assert drained.fetched == 0, drained  # the owners' notification names the group: never fetched into owners
        assert set(drained.started) == {f"groups/{gid}/owners", "groups"}, drained
        worker.wait(timeout=60)
        rows = _rows(world, "ops_owners", "group_id")
        assert set(r for r, v in rows.items() if v["_deleted_at"] is None) == {grace, alan}
        assert gid not in rows
        with world.engine.connect() as connection:
            members = connection.execute(sa.text("SELECT member_id FROM groups_members WHERE group_id = :g"),
                                         {"g": gid}).scalars().all()
        assert sorted(members) == sorted([alan, grace])
        synced.verify()


LIBRARY_SPEC = """
  - name: team-files
    resource: 'groups/{group}/drive/root'
    lifetime: 1d
    mirror: {{table: team_files, columns: [name, size]}}
  - name: site-files
    resource: 'sites/{site}/drive/root'
    lifetime: 1d
    mirror: {{table: site_files, columns: [name]}}
"""


def test_group_and_site_libraries_are_synced_by_drive_id(world: World) -> None:
    """A group's and a site's document library: the drive id is resolved, subscribed as drives/{id}/root (the
    documented resource) and synced by drive delta; rows carry drive_id and group_id or site_id."""
    graph = world.graph
    gid = _group(graph, "crew")
    site = _site(graph)
    group_drive = graph.get(f"groups/{gid}/drive").json()["id"]
    site_drive = graph.get(f"sites/{site['id']}/drive").json()["id"]
    graph.post(f"groups/{gid}/drive/root/children", json={"name": "General", "folder": {}})
    graph.request("PUT", f"sites/{site['id']}/drive/root:/plan.txt:/content", data=b"v1")
    spec = world.spec(LIBRARY_SPEC.format(group=gid, site="contoso.sharepoint.com:/sites/ops:"))
    mirror.upgrade(spec, engine=world.engine)
    assert world.run(spec).ok
    assert sorted(s["resource"] for s in world.live()) == sorted(f"drives/{d}/root" for d in (group_drive, site_drive))
    with Synced(world, spec) as synced:
        synced.sync("team-files", "site-files")
        team = _rows(world, "team_files", "name, drive_id, group_id")
        assert {r["name"] for r in team.values()} >= {"General"}
        assert {(r["drive_id"], r["group_id"]) for r in team.values()} == {(group_drive, gid)}
        files = _rows(world, "site_files", "name, drive_id, site_id")
        assert {(r["drive_id"], r["site_id"]) for r in files.values()} == {(site_drive, site["id"])}

        made = graph.request("PUT", f"groups/{gid}/drive/root:/notes.txt:/content", data=b"hello").json()
        plan = next(i for i, r in files.items() if r["name"] == "plan.txt")
        assert graph.delete(f"drives/{site_drive}/items/{plan}").status_code == 204
        synced.sync("team-files", "site-files")
        assert _rows(world, "team_files", "name")[made["id"]]["_deleted_at"] is None
        assert _rows(world, "site_files", "name")[plan]["_removed_reason"] == "deleted"

        # A drive notification names drives/{id}/root: the library's scope is marked dirty.
        worker = synced.worker()
        before = len(world.receiver.items("notifications"))
        graph.post(f"groups/{gid}/drive/root/children", json={"name": "Later", "folder": {}})
        resource = f"drives/{group_drive}/root"
        assert world.receiver.wait_for(
            lambda: any(t["resource"] == resource for t in world.receiver.items("notifications")[before:]))
        taps = [t for t in world.receiver.items("notifications")[before:] if t["resource"] == resource]
        assert all(t["resourceData"] is None for t in taps), taps
        Inbox(world.engine).put([_stored(spec, n) for n in parse_collection(orjson.dumps({"value": taps})).notifications])
        assert worker.drain().started == (resource,)
        worker.wait(timeout=60)
        assert "Later" in {r["name"] for r in _rows(world, "team_files", "name").values()}
        synced.verify()


def test_resolved_declarations_reconcile_idempotently_and_are_repaired(world: World) -> None:
    """Reconcile compares the canonical path with Graph's: a second run keeps; a removed subscription is recreated
    on its canonical path; renaming the list's site form in the spec changes nothing in Graph."""
    graph = world.graph
    site = _site(graph)
    lst = _issues(graph, site["id"])
    spec = world.spec(LIST_SPEC.format(resource="sites/contoso.sharepoint.com:/sites/ops:/lists/Issues"))
    first = world.run(spec)
    assert first.ok and first.plan.counts()["create"] == 1
    assert any(line.startswith("fan-out issues: 1 paths (resolved from sites/") for line in render_plan(first.plan))
    seq = world.log_seq()
    same = world.spec(LIST_SPEC.format(resource=f"sites/{site['sharepointIds']['siteId']}/lists/{lst['id']}"))
    again = world.run(same)
    assert [str(a.kind) for a in again.plan.actions] == ["keep"] and world.writes_since(seq) == []
    (row,) = world.rows()
    assert row.scope_key == f"sites/{site['id']}/lists/{lst['id']}"
    assert graph.delete(f"subscriptions/{row.subscription_id}").status_code == 204
    result = repair(same, event="subscriptionRemoved", subscription_id=row.subscription_id, engine=world.engine,
                    clock=world.now)
    assert result is not None and result.ok and result.recreated
    assert [s["resource"] for s in world.live()] == [row.scope_key]
