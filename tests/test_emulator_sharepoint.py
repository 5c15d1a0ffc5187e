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


# --- group and site libraries (https://learn.microsoft.com/graph/api/drive-get) -------------------------------------


def _group(graph: EmulatorClient, nick: str = "team") -> dict[str, Any]:
    r = graph.post("groups", json={"displayName": nick.title(), "mailNickname": nick, "mailEnabled": True,
                                   "securityEnabled": False, "groupTypes": ["Unified"]})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_group_and_site_libraries_are_drives(graph: EmulatorClient) -> None:
    group = _group(graph)
    drive = graph.get(f"groups/{group['id']}/drive").json()
    assert drive["driveType"] == "documentLibrary" and drive["owner"]["group"]["id"] == group["id"]
    assert graph.get(f"groups/{group['id']}/drive/root").json()["root"] == {}
    folder = graph.post(f"groups/{group['id']}/drive/root/children", json={"name": "General", "folder": {}})
    assert folder.status_code == 201
    items, link = graph.delta_all(f"groups/{group['id']}/drive/root/delta")
    assert {i["name"] for i in items} == {"root", "General"}
    assert f"/groups/{group['id']}/drive/root/delta?token=" in link
    site = graph.get(f"groups/{group['id']}/sites/root").json()
    assert site["webUrl"].endswith("/sites/team")
    assert graph.get(f"sites/{site['id']}/drive").json()["id"] == drive["id"]
    assert [d["id"] for d in graph.get(f"sites/{site['id']}/drives").json()["value"]] == [drive["id"]]
    assert [d["id"] for d in graph.get(f"groups/{group['id']}/drives").json()["value"]] == [drive["id"]]
    same, _ = graph.delta_all(f"drives/{drive['id']}/root/delta")
    assert {i["id"] for i in same} == {i["id"] for i in items}
    graph.request("PUT", f"sites/{site['id']}/drive/root:/a.txt:/content", data=b"abc")
    changes, _ = graph.delta_all(link)
    assert "a.txt" in {c["name"] for c in changes}
    clash = _group(graph, "hr")
    _site(graph, "hr2")
    standalone = _site(graph, "hr")
    assert graph.get(f"groups/{clash['id']}/sites/root").json()["webUrl"].endswith("/sites/hr3")
    hr_drive = graph.get(f"sites/{standalone['id']}/drive").json()
    assert hr_drive["owner"] == {"site": {"id": standalone["id"]}} and hr_drive["id"] != drive["id"]
    assert graph.get("groups/00000000-0000-4000-8000-000000000000/drive").status_code == 404


def _drive_sub(resource: str, url: str) -> dict[str, Any]:
    return {"resource": resource, "changeType": "updated", "notificationUrl": url, "expirationDateTime": _in(600)}


def test_library_subscriptions_use_the_drive_id(graph: EmulatorClient, receiver: Receiver) -> None:
    group = _group(graph)
    drive_id = graph.get(f"groups/{group['id']}/drive").json()["id"]
    r = graph.post("subscriptions", json=_drive_sub(f"groups/{group['id']}/drive/root", receiver.url("g")))
    assert r.status_code == 400  # undocumented form, refused by default
    assert graph.post("subscriptions", json=_drive_sub(f"drives/{drive_id}/root", receiver.url("d"))).status_code == 201
    graph.post(f"groups/{group['id']}/drive/root/children", json={"name": "x", "folder": {}})
    items = receiver.wait_items(1, path="d")
    assert items[0]["resource"] == f"drives/{drive_id}/root" and items[0]["resourceData"] is None


@pytest.mark.parametrize("emulator_config", [{"library_path_subscriptions": True}], indirect=True)
def test_library_path_subscriptions_when_configured(graph: EmulatorClient, receiver: Receiver) -> None:
    group = _group(graph)
    site = graph.get(f"groups/{group['id']}/sites/root").json()
    assert graph.post("subscriptions", json=_drive_sub(f"groups/{group['id']}/drive/root", receiver.url("g"))).status_code == 201
    # the group's site library is the same drive: the same subscription again
    assert graph.post("subscriptions", json=_drive_sub(f"sites/{site['id']}/drive/root", receiver.url("s"))).status_code == 409
    graph.post(f"groups/{group['id']}/drive/root/children", json={"name": "x", "folder": {}})
    assert receiver.wait_items(1, path="g")[0]["resourceData"] is None


def test_group_site_lists_and_their_subscription(graph: EmulatorClient, receiver: Receiver) -> None:
    group = _group(graph, "crew")
    r = graph.post(f"groups/{group['id']}/sites/root/lists", json={"displayName": "Tasks", "columns": [{"name": "Due", "dateTime": {}}]})
    assert r.status_code == 201, r.text
    site = graph.get(f"groups/{group['id']}/sites/root").json()
    assert graph.get(f"sites/{site['id']}/lists/Tasks").json()["id"] == r.json()["id"]
    library = graph.get(f"sites/{site['id']}/drive").json()["id"]
    assert graph.get(f"drives/{library}").json()["driveType"] == "documentLibrary"
    sub = _list_sub(f"groups/{group['id']}/sites/root/lists/Tasks", receiver.url("tasks"))
    assert graph.post("subscriptions", json=sub).status_code == 201
    graph.post(f"sites/{site['id']}/lists/Tasks/items", json={"fields": {"Title": "x", "Due": "2026-12-24T00:00:00Z"}})
    assert receiver.wait_items(2, path="tasks")[0]["resource"] == f"sites/{site['id']}/lists/{r.json()['id']}"
    assert graph.get(f"groups/{group['id']}/sites/other").status_code == 400


def test_item_paging_and_patch_forms(graph: EmulatorClient) -> None:
    site = _site(graph)
    lst = _list(graph, site["id"])
    base = f"sites/{site['id']}/lists/{lst['id']}/items"
    for i in range(5):
        graph.post(base, json={"fields": {"Title": f"t{i}"}})
    page = graph.get(f"{base}?$top=2&$expand=fields").json()
    seen = [i["fields"]["Title"] for i in page["value"]]
    while "@odata.nextLink" in page:
        page = graph.get(page["@odata.nextLink"]).json()
        seen.extend(i["fields"]["Title"] for i in page["value"])
    assert seen == [f"t{i}" for i in range(5)]
    r = graph.patch(f"{base}/2", json={"fields": {"Count": 7}})
    assert r.status_code == 200 and r.json()["fields"]["Count"] == 7 and r.json()["fields"]["Title"] == "t1"
    assert graph.patch(f"{base}/2", json={"webUrl": "x"}).status_code == 400
    assert graph.patch(f"{base}/2/fields", json={"Created": "2020-01-01T00:00:00Z"}).status_code == 400
    assert graph.get(f"{base}/2/fields").json()["Count"] == 7
    assert graph.get(f"{base}/2/versions/1").status_code == 400
