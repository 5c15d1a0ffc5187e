"""SharePoint sites, lists, list items, listItem delta and list subscriptions over real HTTPS
(https://learn.microsoft.com/graph/api/resources/sharepoint)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from emulator_fixtures import EmulatorClient
from webhook_receiver import Receiver

from syncer.emulator import EmulatorConfig


@pytest.fixture
def emulator_config(request: pytest.FixtureRequest) -> EmulatorConfig:
    changes: dict[str, Any] = getattr(request, "param", {})
    return EmulatorConfig(seed=11).with_changes(**changes)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def _in(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _site(graph: EmulatorClient, name: str = "ops") -> dict[str, Any]:
    r = graph.admin("POST", "sites", json={"name": name, "displayName": name.title()})
    assert r.status_code == 201, r.text
    return dict(r.json())


def _list(graph: EmulatorClient, site_id: str) -> dict[str, Any]:
    r = graph.post(f"sites/{site_id}/lists", json={
        "displayName": "Issues", "list": {"template": "genericList"},
        "columns": [{"name": "Status", "choice": {"choices": ["Open", "Closed"]}}, {"name": "Count", "number": {}}]})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_every_site_form_returns_the_composite_id(graph: EmulatorClient) -> None:
    site = _site(graph)
    host, collection_id, web_id = site["id"].split(",")
    assert host == "contoso.sharepoint.com" and site["sharepointIds"]["siteId"] == collection_id
    forms = [site["id"], site["id"].upper().replace("CONTOSO.SHAREPOINT.COM", host), f"{host},{collection_id}",
             collection_id, f"{host}:/sites/ops", f"{host}:/sites/OPS:"]
    for form in forms:
        r = graph.get(f"sites/{form}")
        assert r.status_code == 200, (form, r.text)
        assert r.json()["id"] == site["id"]
    root = graph.get("sites/root").json()
    assert "root" in root and root["id"] != site["id"]
    for form in (host, "NAM", f"{host}:/"):
        assert graph.get(f"sites/{form}").json()["id"] == root["id"], form
    assert graph.get(f"sites/{host}:/sites/nope").status_code == 404
    assert graph.get(f"sites/{host},{web_id}").status_code == 404  # a web id is not a site collection id
    assert {s["id"] for s in graph.get("sites").json()["value"]} == {site["id"], root["id"]}


def test_lists_columns_and_items_with_fields(graph: EmulatorClient) -> None:
    site = _site(graph)
    lst = _list(graph, site["id"])
    assert [c["name"] for c in lst["columns"]] == ["Title", "Status", "Count"]
    assert graph.get(f"sites/{site['id']}/lists/Issues").json()["id"] == lst["id"]  # by display name
    assert "columns" not in graph.get(f"sites/{site['id']}/lists/{lst['id']}").json()
    assert len(graph.get(f"sites/{site['id']}/lists/{lst['id']}/columns").json()["value"]) == 3
    base = f"sites/{site['id']}/lists/{lst['id']}/items"
    created = graph.post(base, json={"fields": {"Title": "Printer jammed", "Status": "Open"}})
    assert created.status_code == 201 and created.json()["id"] == "1"
    assert created.json()["fields"]["Status"] == "Open" and "Count" not in created.json()["fields"]  # empty left out
    assert graph.post(base, json={"fields": {"Title": "x", "Colour": "red"}}).status_code == 400
    assert graph.post(base, json={"fields": {"Title": "x", "Status": "Maybe"}}).status_code == 400
    assert graph.post(base, json={"fields": {"Title": "x", "Count": "three"}}).status_code == 400
    plain = graph.get(base).json()["value"]
    assert len(plain) == 1 and "fields" not in plain[0]
    expanded = graph.get(f"{base}?$expand=fields($select=Status)").json()["value"][0]
    assert expanded["fields"]["Status"] == "Open" and "Title" not in expanded["fields"]
    r = graph.patch(f"{base}/1/fields", json={"Status": "Closed", "Count": 2})
    assert r.status_code == 200, r.text
    assert r.json()["Status"] == "Closed" and r.json()["Title"] == "Printer jammed"
    assert graph.get(f"{base}/1?$expand=fields").json()["fields"]["Count"] == 2
    assert graph.delete(f"{base}/1").status_code == 204
    assert graph.get(f"{base}/1").status_code == 404


def test_list_item_delta(graph: EmulatorClient) -> None:
    site = _site(graph)
    lst = _list(graph, site["id"])
    base = f"sites/{site['id']}/lists/{lst['id']}/items"
    for i in range(3):
        graph.post(base, json={"fields": {"Title": f"t{i}", "Status": "Open"}})
    items, link = graph.delta_all(f"{base}/delta?$expand=fields&$top=2")
    assert [i["fields"]["Title"] for i in items] == ["t0", "t1", "t2"]
    assert "?token=" in link and site["id"] in link
    latest = graph.get(f"{base}/delta?token=latest").json()
    assert latest["value"] == [] and "@odata.deltaLink" in latest
    graph.patch(f"{base}/2/fields", json={"Status": "Closed"})
    graph.delete(f"{base}/3")
    changes, link2 = graph.delta_all(link)  # $expand=fields travels in the token
    by_id = {c["id"]: c for c in changes}
    assert by_id["2"]["fields"]["Status"] == "Closed"
    assert by_id["3"]["deleted"] == {"state": "deleted"}
    assert set(by_id["3"]) == {"id", "parentReference", "contentType", "deleted"}
    assert by_id["3"]["parentReference"]["siteId"] == site["sharepointIds"]["siteId"]
    same, _ = graph.delta_all(latest["@odata.deltaLink"])
    assert {c["id"] for c in same} == {"2", "3"} and "fields" not in same[0]  # no $expand: no fields
    graph.admin("POST", "delta/expire", json={"scope": "^sites/"})
    gone = graph.get(link2)
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "resyncChangesApplyDifferences"
    assert gone.headers["Location"].endswith(f"/lists/{lst['id']}/items/delta")
    assert graph.get(f"{base}/delta?$expand=columns").status_code == 400


def _list_sub(resource: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"resource": resource, "changeType": "updated", "notificationUrl": url,
            "expirationDateTime": _in(600), "clientState": "c", **extra}


def test_list_subscription_rules_and_shoulder_taps(graph: EmulatorClient, receiver: Receiver) -> None:
    site = _site(graph)
    lst = _list(graph, site["id"])
    url = receiver.url("hook")
    for bad in ({"changeType": "created"}, {"changeType": "updated,deleted"}, {"includeResourceData": True,
                "encryptionCertificate": "x", "encryptionCertificateId": "1"}):
        r = graph.post("subscriptions", json=_list_sub(f"sites/{site['id']}/lists/{lst['id']}", url, **bad))
        assert r.status_code == 400, (bad, r.text)
    r = graph.post("subscriptions", json=_list_sub(f"sites/{site['id']}/lists/{lst['id']}", url,
                                                   expirationDateTime=_in(43_000)))
    assert r.status_code == 400  # 42,300 minutes at most
    assert graph.post("subscriptions", json=_list_sub(f"sites/{site['id']}/lists/Nope", url)).status_code == 404
    # a list named by the site's path and its display name is the same list
    r = graph.post("subscriptions", json=_list_sub("sites/contoso.sharepoint.com:/sites/ops:/lists/Issues", url))
    assert r.status_code == 201, r.text
    graph.post(f"sites/{site['id']}/lists/{lst['id']}/items", json={"fields": {"Title": "a"}})
    items = receiver.wait_items(2)
    assert len(items) == 2  # list_notification_burst = 2
    for item in items:
        assert item["changeType"] == "updated" and item["resourceData"] is None
        assert item["resource"] == f"sites/{site['id']}/lists/{lst['id']}"


@pytest.mark.parametrize("emulator_config", [{"list_notification_burst": 1}], indirect=True)
def test_burst_is_configurable_and_deletes_tap_too(graph: EmulatorClient, receiver: Receiver) -> None:
    site = _site(graph)
    lst = _list(graph, site["id"])
    assert graph.post("subscriptions", json=_list_sub(f"sites/{site['id']}/lists/{lst['id']}",
                                                      receiver.url("hook"))).status_code == 201
    base = f"sites/{site['id']}/lists/{lst['id']}/items"
    graph.post(base, json={"fields": {"Title": "a"}})
    graph.delete(f"{base}/1")
    items = receiver.wait_items(2)
    assert [i["changeType"] for i in items] == ["updated", "updated"]
    r = graph.post("subscriptions", json=_list_sub(f"sites/{site['id']}/lists/{lst['id']}?$filter=x eq 1",
                                                   receiver.url("other")))
    assert r.status_code == 400


def test_permissions(graph: EmulatorClient) -> None:
    site = _site(graph)
    app = graph.admin("POST", "apps", json={"roles": ["User.Read.All"]}).json()
    token = graph.admin("POST", "token", json={"clientId": app["clientId"]}).json()["access_token"]
    r = graph.get(f"sites/{site['id']}/lists", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "accessDenied"
