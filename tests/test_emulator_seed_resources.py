"""The admin seed fills SharePoint lists, alerts, call records and print jobs per content user, without notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from emulator_fixtures import EmulatorClient
from webhook_receiver import Receiver


def test_seed_fields_for_the_seed_resources(graph: EmulatorClient) -> None:
    expires = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    with Receiver() as receiver:
        for resource in ("security/alerts", "communications/callRecords"):
            assert graph.post("subscriptions", json={"resource": resource, "changeType": "created,updated",
                                                     "notificationUrl": receiver.url(), "expirationDateTime": expires}).status_code == 201
        seed_and_check(graph)
        assert graph.admin("POST", "delivery/wait", json={"timeoutSeconds": 5}).json()["idle"]
        assert receiver.items() == []  # seeding builds the tenant; it is not a change in it


def seed_and_check(graph: EmulatorClient) -> None:
    r = graph.admin("POST", "seed", json={"users": 3, "contentUsers": 2, "listItemsPerUser": 3, "alertsPerUser": 2,
                                          "callRecordsPerUser": 1, "printJobsPerUser": 2})
    assert r.status_code == 200, r.text
    site = graph.get("sites/contoso.sharepoint.com:/sites/seeded").json()
    items = graph.get(f"sites/{site['id']}/lists/Issues/items?$expand=fields").json()["value"]
    assert len(items) == 6 and {i["fields"]["Status"] for i in items} == {"Open", "Closed"}
    alerts = graph.get("security/alerts").json()["value"]
    assert len(alerts) == 4 and all(a["userStates"][0]["aadUserId"] for a in alerts)
    records = graph.get("communications/callRecords").json()["value"]
    assert len(records) == 2
    full = graph.get(f"communications/callRecords/{records[0]['id']}?$expand=sessions($expand=segments)").json()
    assert len(full["sessions"]) == 2
    printers = graph.get("print/printers").json()["value"]
    assert [p["displayName"] for p in printers] == ["Seeded printer"]
    jobs = graph.get(f"print/printers/{printers[0]['id']}/jobs").json()["value"]
    assert len(jobs) == 4 and all(j["isFetchable"] for j in jobs)
