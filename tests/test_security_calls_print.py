"""Security alerts, call records and Universal Print end to end (issue 16): declared, reconciled against the
emulator, changed through its admin API (raise an alert, end a call, submit a print job), notified, fetched by id
(Graph has no delta for them) and listed by the safety net; the mirror equals the emulator's truth, on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
import test_reconcile
from test_reconcile import World

from syncer import mirror, verify
from syncer.graph.client import GraphClient
from syncer.inbox import Inbox, NewItem
from syncer.receiver.notifications import parse_collection
from syncer.reconcile import graphs_for
from syncer.reconcile.quotas import Placed, check_quotas
from syncer.spec import Spec
from syncer.worker import scopes
from syncer.worker.jobs import DrainResult, Worker
from syncer.worker.scheduler import sync_once
from syncer.worker.scopes import ScopeIndex

world = test_reconcile.world  # the fixture: emulator, test receiver, migrated database, three users


class Running:
    """A reconciled spec with a worker over it, and the notifications the emulator delivered."""

    def __init__(self, world: World, spec: Spec) -> None:
        self.world, self.spec = world, spec
        self.graphs: dict[str, GraphClient] = graphs_for(spec)
        self.tenant = spec.tenants[0].tenant_id
        index = ScopeIndex.of(scopes.declared_scopes(spec, clients={spec.tenants[0].name: self.graphs[self.tenant]}))
        self.worker = Worker(world.engine, self.graphs, index, worker_id="w1", spec=spec)

    def sync(self) -> None:
        """A full pass of every declaration (the safety net's list), then the mirror equals Graph."""
        results = sync_once(self.spec, [s.name for s in self.spec.subscriptions], clients=self.graphs,
                            engine=self.world.engine)
        assert results and all(r.outcome == "ok" for r in results), results
        self.verify()

    def verify(self) -> None:
        assert verify.compare(self.world.engine, self.graphs, verify.declared(self.spec, self.graphs)) == []

    def notified(self, wanted: int = 1, *, resource: str = "") -> DrainResult:
        """Wait for *wanted* notifications on resources containing *resource*, store them, drain the inbox."""
        received = self.world.receiver.received
        deadline = time.monotonic() + 20
        notes: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            notes = [n for r in list(received) for n in r.body["value"] if resource in n["resource"]]
            if len(notes) >= wanted:
                break
            time.sleep(0.05)
        assert len(notes) >= wanted, notes
        received.clear()
        return self.put(notes)

    def put(self, notes: list[dict[str, Any]]) -> DrainResult:
        """Store *notes* as syncer's receiver does (its parser: syncer.receiver.notifications), drain the inbox."""
        parsed = parse_collection(orjson.dumps({"value": notes})).notifications
        assert len(parsed) == len(notes), notes
        Inbox(self.world.engine).put([NewItem(
            tenant_id=self.tenant, subscription_id=n.subscription_id, kind=n.kind, event=n.event, resource=n.resource,
            resource_id=n.resource_id, dedupe_key=n.dedupe_key, payload=n.payload()) for n in parsed])
        return self.drain()

    def drain(self) -> DrainResult:
        drained = self.worker.drain()
        self.worker.wait(timeout=60)
        return drained

    def close(self) -> None:
        self.worker.close()
        for g in self.graphs.values():
            g.close()


@pytest.fixture
def running(world: World) -> Iterator[Any]:
    made: list[Running] = []

    def start(subscriptions: str) -> Running:
        spec = world.spec(subscriptions)
        mirror.upgrade(spec, engine=world.engine)
        outcome = world.run(spec)
        assert outcome.ok, [r.error for r in outcome.failed]
        made.append(Running(world, spec))
        made[-1].worker.register_scopes()
        return made[-1]

    yield start
    for r in made:
        r.close()


def _rows(world: World, table: str, *columns: str) -> dict[str, dict[str, Any]]:
    with world.engine.connect() as connection:
        rows = connection.execute(sa.text(
            f"SELECT id, {', '.join(columns)}, _raw, _deleted_at, _removed_reason FROM {table}")).mappings()
        return {r["id"]: {**r, "_raw": r["_raw"] if isinstance(r["_raw"], dict) else json.loads(r["_raw"])} for r in rows}


ALERTS = """
  - name: alerts
    resource: "security/alerts?$filter=status eq 'newAlert'"
    lifetime: 1d
    mirror:
      table: alerts
      columns: [title, severity, status]
"""


def test_security_alerts_with_a_filter(world: World, running: Any) -> None:
    graph = world.graph
    old = graph.admin("POST", "security/alerts", json={"title": "old", "severity": "high"}).json()
    graph.admin("POST", "security/alerts", json={"title": "done", "status": "resolved"})
    r = running(ALERTS)
    assert [(s["resource"], s["changeType"]) for s in world.live()] == [(
        "security/alerts?$filter=status eq 'newAlert'", "created,updated")]
    r.sync()
    assert {row["title"] for row in _rows(world, "alerts", "title").values() if row["_deleted_at"] is None} == {"old"}

    # Raised: Graph notifies security/alerts/{id}; the worker GETs that alert alone.
    raised = graph.admin("POST", "security/alerts", json={"title": "new", "severity": "low"}).json()
    drained = r.notified(resource=raised["id"])
    assert drained.fetched == 1 and drained.started == (), drained
    assert _rows(world, "alerts", "title")[raised["id"]]["title"] == "new"
    r.verify()

    # Resolved: outside the filter, no longer selected; the safety net's list sweeps it.
    patched = graph.patch(f"security/alerts/{old['id']}", json={"status": "resolved", "vendorInformation": old["vendorInformation"]})
    assert patched.status_code == 204, patched.text
    r.sync()
    gone = _rows(world, "alerts", "title")[old["id"]]
    assert gone["_deleted_at"] is not None and gone["_removed_reason"] == "swept"


def test_one_alert(world: World, running: Any) -> None:
    """``security/alerts/{id}``: the declaration names one alert; its list is the GET of that alert, so the safety
    net keeps the row (a page of ``value`` would be empty and sweep it)."""
    graph = world.graph
    alert = graph.admin("POST", "security/alerts", json={"title": "watched"}).json()
    graph.admin("POST", "security/alerts", json={"title": "other"})
    r = running(ALERTS.replace("security/alerts?$filter=status eq 'newAlert'", f"security/alerts/{alert['id']}"))
    r.sync()
    r.sync()  # a second full round sweeps nothing
    assert [row["title"] for row in _rows(world, "alerts", "title").values() if row["_deleted_at"] is None] == ["watched"]
    patched = graph.patch(f"security/alerts/{alert['id']}", json={"status": "inProgress", "vendorInformation": alert["vendorInformation"]})
    assert patched.status_code == 204, patched.text
    assert r.notified(resource=alert["id"]).fetched == 1
    assert _rows(world, "alerts", "status")[alert["id"]]["status"] == "inProgress"
    r.verify()


CALLS = """
  - name: calls
    resource: communications/callRecords
    lifetime: 1d
    mirror:
      table: call_records
      columns: [version, type, startDateTime, {field: sessions, column: sessions, type: json}, {field: organizer_v2.id, column: organizer_id}]
"""


def _call_truth(world: World, record_id: str) -> dict[str, Any] | None:
    """The record as Graph's GET returns it, every page of sessions joined (the test's own reading)."""
    r = world.graph.get(f"communications/callRecords/{record_id}?$expand=sessions($expand=segments)")
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    record = r.json()
    link = record.pop("sessions@odata.nextLink", None)
    while link:
        page = world.graph.get(link.split("/v1.0/", 1)[1]).json()
        record["sessions"] += page["value"]
        link = page.get("@odata.nextLink")
    return record  # type: ignore[no-any-return]


def test_call_records_with_their_sessions(world: World, running: Any) -> None:
    graph = world.graph
    ada, alan, grace = world.users
    earlier = graph.admin("POST", "communications/calls", json={"participants": [ada, alan], "sessions": 2}).json()
    r = running(CALLS)
    assert [s["resource"] for s in world.live()] == ["communications/callRecords"]
    r.sync()

    # A call with more sessions than one page (60): the record is fetched by id, every page of sessions joined.
    call = graph.admin("POST", "communications/calls",
                       json={"participants": [ada, alan, grace], "sessions": 70, "segmentsPerSession": 2}).json()
    drained = r.notified(2, resource=call["id"])  # created, then updated (Graph sends both)
    assert drained.fetched >= 1 and drained.started == (), drained
    rows = _rows(world, "call_records", "version", "sessions", "organizer_id")
    truth = _call_truth(world, call["id"])
    assert truth is not None and len(truth["sessions"]) == 70
    row = rows[call["id"]]
    sessions = row["sessions"] if isinstance(row["sessions"], list) else json.loads(row["sessions"])
    assert sessions == truth["sessions"] and row["_raw"]["sessions"] == truth["sessions"]
    assert all(len(s["segments"]) == 2 for s in sessions) and row["organizer_id"] == ada
    # One row per session, with its record's id, by the JSON functions docs/spec.md shows.
    query = ("SELECT r.id AS call_record_id, s.value->>'id' AS session_id FROM call_records r, "
             "jsonb_array_elements(r.sessions::jsonb) s" if world.engine.dialect.name == "postgresql" else
             "SELECT r.id AS call_record_id, s.value->>'id' AS session_id FROM call_records r, json_each(r.sessions) s")
    with world.engine.connect() as connection:
        pairs = connection.execute(sa.text(query + " WHERE r.id = :id"), {"id": call["id"]}).all()
    assert sorted(p.session_id for p in pairs) == sorted(x["id"] for x in truth["sessions"])

    # Late client data: version 2 with one more session, notified as updated.
    assert graph.admin("POST", f"communications/callRecords/{call['id']}/update", json={"sessions": 1}).status_code == 200
    r.notified(resource=call["id"])
    row = _rows(world, "call_records", "version")[call["id"]]
    assert row["version"] == 2 and len(row["_raw"]["sessions"]) == 71
    # The safety net's list has no sessions: a listed record that changed is fetched whole (its row keeps its
    # sessions), one whose listed properties (version, lastModifiedDateTime...) are unchanged costs no GET.
    assert graph.admin("POST", f"communications/callRecords/{earlier['id']}/update", json={"sessions": 1}).status_code == 200
    world.receiver.received.clear()  # not drained: only the list will find this change
    seq = world.log_seq()
    results = sync_once(r.spec, ["calls"], clients=r.graphs, engine=world.engine)
    assert [x.outcome for x in results] == ["ok"], results
    log = graph.admin("GET", "requests", params={"since": seq, "limit": 1000}).json()["requests"]
    by_id = sorted(e["path"].partition("?")[0].split("/")[-1] for e in log if "/callRecords/" in e["path"] and "/_emulator/" not in e["path"]
                   and "/sessions" not in e["path"])
    assert by_id == [earlier["id"]], by_id
    r.verify()
    for record_id in (earlier["id"], call["id"]):
        stored = _rows(world, "call_records", "version")[record_id]["_raw"]
        assert {k: v for k, v in stored.items() if k != "@odata.context"} == {
            k: v for k, v in (_call_truth(world, record_id) or {}).items() if k != "@odata.context"}

    # 31 days on, Graph answers 404: a late notification finds the record gone, which is no error.
    (subscription,) = world.live()
    world.advance(timedelta(days=31))
    r.worker.close()
    for g in r.graphs.values():
        g.close()
    r.graphs.update(graphs_for(r.spec))  # the clients' tokens expired with the jump
    r.worker = Worker(world.engine, r.graphs, r.worker.index, worker_id="w1", spec=r.spec)
    assert _call_truth(world, call["id"]) is None
    late = {"subscriptionId": subscription["id"], "clientState": None, "changeType": "updated", "tenantId": r.tenant,
            "subscriptionExpirationDateTime": subscription["expirationDateTime"],
            "resource": f"communications/callRecords/{call['id']}",
            "resourceData": {"@odata.type": "#Microsoft.Graph.callRecord", "id": call["id"],
                             "@odata.id": f"communications/callRecords/{call['id']}"}}
    drained = r.put([late])
    assert drained.fetched == 1, drained
    gone = _rows(world, "call_records", "version")[call["id"]]
    assert gone["_deleted_at"] is not None and gone["_removed_reason"] == "deleted"
    r.sync()  # and the list no longer has the earlier one either


def test_a_plan_past_100_call_record_subscriptions_is_refused() -> None:
    """Graph allows 100 callRecord subscriptions per organisation, whichever app made them: a plan that would leave
    101 is refused before any call, with the numbers (pure: one app of ours can hold only a few, one per change type)."""
    tenant = "84bd8158-6d4d-4958-8b9f-9d6445542f95"
    before = [Placed(tenant, f"communications/callRecords?$filter=participants_v2/any(p:p/id eq 'u{i}')") for i in range(99)]
    after = [*before, Placed(tenant, "communications/callRecords"), Placed(tenant, "/communications/callRecords")]
    (problem,) = check_quotas(before, after)
    assert (problem.limit, problem.planned, problem.existing) == (100, 101, 99)
    assert str(problem) == (f"quota exceeded: the plan needs 101 callRecord subscriptions in tenant {tenant} (99 exist now); "
                            "Graph allows 100")
    assert check_quotas(before, after[:-1]) == []


PRINT = """
  - name: jobs
    resource: print/printers/{printer}/jobs
    lifetime: 1d
    mirror:
      table: print_jobs
      columns: [isFetchable, {{field: status.state, column: state}}, createdDateTime]
  - name: tasks
    resource: print/taskDefinitions/{definition}/tasks
    lifetime: 1d
    mirror:
      table: print_tasks
      columns: [parentUrl, {{field: status.state, column: state}}, {{field: definition.id, column: definition_id}}]
"""


def test_universal_print_jobs_and_tasks(world: World, running: Any) -> None:
    graph = world.graph
    plain = graph.admin("POST", "print/printers", json={"displayName": "Plain"}).json()["id"]
    guarded = graph.admin("POST", "print/printers", json={"displayName": "Guarded"}).json()["id"]
    definition = graph.post("print/taskDefinitions", json={"displayName": "Check quota"}).json()["id"]
    trigger = graph.post(f"print/printers/{guarded}/taskTriggers", json={
        "event": "jobStarted", "definition@odata.bind": f"https://graph.microsoft.com/v1.0/print/taskDefinitions/{definition}"})
    assert trigger.status_code == 201, trigger.text
    graph.admin("POST", f"print/printers/{plain}/jobs", json={"documentName": "before.pdf"})
    spec_text = PRINT.format(printer=plain, definition=definition)
    spec_text += PRINT.split("  - name: tasks")[0].format(printer=guarded).replace("name: jobs", "name: guarded-jobs").replace(
        "table: print_jobs", "table: guarded_jobs")
    r = running(spec_text)
    live = {s["resource"]: s for s in world.live()}
    assert live[f"print/printers/{plain}/jobs"]["notificationQueryOptions"] == "$filter = isFetchable eq true"
    assert live[f"print/printers/{plain}/jobs"]["changeType"] == "updated"
    assert live[f"print/taskDefinitions/{definition}/tasks"]["changeType"] == "created"
    r.sync()

    # A job on a printer without a trigger becomes fetchable: notified as updated, fetched by id.
    job = graph.admin("POST", f"print/printers/{plain}/jobs", json={"documentName": "a.pdf"}).json()
    drained = r.notified(resource=f"jobs/{job['id']}")
    assert drained.fetched == 1, drained
    assert _rows(world, "print_jobs", "state")[job["id"]]["state"] == "pending"
    r.verify()

    # On the printer with a jobStarted trigger: a printTask is created (notified, fetched); the app completes it,
    # then the job becomes fetchable.
    held = graph.admin("POST", f"print/printers/{guarded}/jobs", json={"documentName": "b.pdf"}).json()
    drained = r.notified(resource=f"taskDefinitions/{definition}/tasks/")
    assert drained.fetched == 1, drained
    (task,) = [row for row in _rows(world, "print_tasks", "state", "parent_url").values()]
    assert task["state"] == "processing" and task["parent_url"].endswith(f"/print/printers/{guarded}/jobs/{held['id']}")
    done = graph.patch(f"print/taskDefinitions/{definition}/tasks/{task['id']}", json={"status": {"state": "completed"}})
    assert done.status_code == 200, done.text
    drained = r.notified(resource=f"jobs/{held['id']}")
    assert drained.fetched == 1
    assert _rows(world, "guarded_jobs", "state")[held["id"]]["state"] == "pending"
    r.sync()  # the task's completion is not notified (created only): the safety net's list brings it
    assert _rows(world, "print_tasks", "state")[task["id"]]["state"] == "completed"
