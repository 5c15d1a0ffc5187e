"""SharePoint list items, group and site libraries, and group owners end to end (issue 16): declared in YAML,
reconciled against the emulator, synced, changed through Graph's API and compared with Graph's truth
(syncer.verify), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import test_reconcile
from emulator_fixtures import EmulatorClient
from test_reconcile import World

from syncer import mirror, verify
from syncer.inbox import Inbox, NewItem
from syncer.reconcile import graphs_for
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

        # A shoulder tap (no item id, the list's canonical path) marks the scope dirty: a delta pass follows.
        worker = synced.worker()
        (subscription,) = world.live()
        graph.post(base, json={"fields": {"Title": "Fourth", "Status": "Open"}})
        tenant = spec.tenants[0].tenant_id
        Inbox(world.engine).put([NewItem(
            tenant_id=tenant, subscription_id=subscription["id"], kind="change", event="updated",
            resource=canonical, resource_id=None, dedupe_key=f"tap{n}", payload={"resource": canonical})
            for n in range(3)])  # SharePoint taps several times per change
        drained = worker.drain()
        assert drained.claimed == 3 and drained.started == (canonical,), drained
        worker.wait(timeout=60)
        assert "Fourth" in {r["fields_title"] for r in _rows(world, "issues", "fields_title").values()}
        synced.verify()
