"""Universal Print: printers, jobs, task definitions and triggers, and the two webhook kinds
(https://learn.microsoft.com/graph/universal-print-webhook-notifications)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from emulator_fixtures import EmulatorClient
from webhook_receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def _in(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


FETCHABLE = "$filter = isFetchable eq true"


def _printer(graph: EmulatorClient) -> dict[str, Any]:
    r = graph.admin("POST", "print/printers", json={"displayName": "Floor 2"})
    assert r.status_code == 201
    return dict(r.json())


def _jobs_sub(printer_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"resource": f"print/printers/{printer_id}/jobs", "changeType": "updated", "notificationUrl": url,
            "expirationDateTime": _in(600), "notificationQueryOptions": FETCHABLE, **extra}


def test_job_subscription_rules(graph: EmulatorClient, receiver: Receiver) -> None:
    printer = _printer(graph)
    url = receiver.url("jobs")
    sub = _jobs_sub(printer["id"], url)
    del sub["notificationQueryOptions"]
    assert graph.post("subscriptions", json=sub).status_code == 400  # required
    assert graph.post("subscriptions", json=_jobs_sub(printer["id"], url, notificationQueryOptions="$filter=isFetchable eq false")).status_code == 400
    assert graph.post("subscriptions", json=_jobs_sub(printer["id"], url, changeType="created")).status_code == 400
    assert graph.post("subscriptions", json=_jobs_sub(printer["id"], url, expirationDateTime=_in(4_300))).status_code == 400
    assert graph.post("subscriptions", json=_jobs_sub("00000000-0000-4000-8000-000000000000", url)).status_code == 404
    r = graph.post("subscriptions", json=_jobs_sub(printer["id"], url, notificationQueryOptions="$filter=isFetchable  eq true"))
    assert r.status_code == 201 and r.json()["notificationQueryOptions"] == "$filter=isFetchable  eq true"
    job = graph.admin("POST", f"print/printers/{printer['id']}/jobs", json={"documentName": "a.pdf"}).json()
    items = receiver.wait_items(1, path="jobs")
    assert len(items) == 1 and items[0]["changeType"] == "updated"
    assert items[0]["resource"] == f"print/printers/{printer['id']}/jobs/{job['id']}"
    fetched = graph.get(f"print/printers/{printer['id']}/jobs/{job['id']}").json()
    assert fetched["isFetchable"] is True
    assert [p["id"] for p in graph.get("print/printers").json()["value"]] == [printer["id"]]


def test_task_trigger_holds_the_job_until_completed(graph: EmulatorClient, receiver: Receiver) -> None:
    printer = _printer(graph)
    definition = graph.post("print/taskDefinitions", json={"displayName": "Audit"}).json()
    trigger = {"event": "jobStarted", "definition@odata.bind": f"https://graph.microsoft.com/v1.0/print/taskDefinitions/{definition['id']}"}
    assert graph.post(f"print/printers/{printer['id']}/taskTriggers", json=trigger).status_code == 201
    assert graph.post(f"print/printers/{printer['id']}/taskTriggers", json=trigger).status_code == 409  # one per printer
    tasks_sub = {"resource": f"print/printtaskdefinition/{definition['id']}/tasks", "changeType": "created",
                 "notificationUrl": receiver.url("tasks"), "expirationDateTime": _in(600)}
    assert graph.post("subscriptions", json={**tasks_sub, "changeType": "updated"}).status_code == 400
    assert graph.post("subscriptions", json={**tasks_sub, "notificationQueryOptions": FETCHABLE}).status_code == 400
    assert graph.post("subscriptions", json=tasks_sub).status_code == 201
    assert graph.post("subscriptions", json=_jobs_sub(printer["id"], receiver.url("jobs"))).status_code == 201
    job = graph.admin("POST", f"print/printers/{printer['id']}/jobs", json={}).json()
    task = receiver.wait_items(1, path="tasks")[0]
    assert task["changeType"] == "created" and task["resource"].startswith(f"print/taskDefinitions/{definition['id']}/tasks/")
    assert graph.get(f"print/printers/{printer['id']}/jobs/{job['id']}").json()["isFetchable"] is False
    assert receiver.items("jobs") == []
    task_id = task["resourceData"]["id"]
    stored = graph.get(f"print/taskDefinitions/{definition['id']}/tasks/{task_id}").json()
    assert stored["parentUrl"].endswith(f"/print/printers/{printer['id']}/jobs/{job['id']}")
    r = graph.patch(f"print/taskDefinitions/{definition['id']}/tasks/{task_id}", json={"status": {"state": "completed"}})
    assert r.status_code == 200
    assert receiver.wait_items(1, path="jobs")[0]["resourceData"]["id"] == job["id"]
    assert graph.get(f"print/printers/{printer['id']}/jobs/{job['id']}").json()["isFetchable"] is True


def test_print_permissions(graph: EmulatorClient, receiver: Receiver) -> None:
    printer = _printer(graph)
    app = graph.admin("POST", "apps", json={"roles": ["Printer.Read.All"]}).json()
    headers = {"Authorization": "Bearer " + graph.admin("POST", "token", json={"clientId": app["clientId"]}).json()["access_token"]}
    assert graph.get("print/printers", headers=headers).status_code == 200
    assert graph.get("print/taskDefinitions", headers=headers).status_code == 403
    assert graph.post("subscriptions", json=_jobs_sub(printer["id"], receiver.url()), headers=headers).status_code == 201
