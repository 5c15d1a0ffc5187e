"""Legacy security alerts: read/update API and subscriptions with a $filter in the resource
(https://learn.microsoft.com/graph/api/resources/alert)."""

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


def _sub(resource: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"resource": resource, "changeType": "created,updated", "notificationUrl": url,
            "expirationDateTime": _in(600), **extra}


def _raise(graph: EmulatorClient, **body: Any) -> dict[str, Any]:
    r = graph.admin("POST", "security/alerts", json={"title": "Malware", **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


VENDOR = {"provider": "Microsoft Defender for Endpoint", "vendor": "Microsoft"}


def test_alert_api(graph: EmulatorClient) -> None:
    a = _raise(graph, severity="high")
    _raise(graph, severity="low")
    assert len(graph.get("security/alerts").json()["value"]) == 2
    high = graph.get("security/alerts?$filter=severity eq 'high'").json()["value"]
    assert [x["id"] for x in high] == [a["id"]]
    assert graph.get(f"security/alerts/{a['id']}?$select=title").json()["title"] == "Malware"
    assert graph.get("security/alerts/NOPE").status_code == 404
    assert graph.patch(f"security/alerts/{a['id']}", json={"status": "resolved"}).status_code == 400  # no vendor
    assert graph.patch(f"security/alerts/{a['id']}", json={"title": "x", "vendorInformation": VENDOR}).status_code == 400
    r = graph.patch(f"security/alerts/{a['id']}", json={"status": "inProgress", "vendorInformation": VENDOR},
                    headers={"Prefer": "return=representation"})
    assert r.status_code == 200 and r.json()["status"] == "inProgress"
    assert graph.patch(f"security/alerts/{a['id']}", json={"feedback": "truePositive", "vendorInformation": VENDOR}).status_code == 204


def test_alert_subscriptions_with_filters(graph: EmulatorClient, receiver: Receiver) -> None:
    assert graph.post("subscriptions", json=_sub("security/alerts?$filter=status eq 'newAlert'",
                                                 receiver.url("new"))).status_code == 201
    assert graph.post("subscriptions", json=_sub("security/alerts", receiver.url("all"))).status_code == 201
    r = graph.post("subscriptions", json=_sub("security/alerts?$filter=riskScore gt 5", receiver.url("x")))
    assert r.status_code == 400  # a filter the emulator cannot evaluate
    r = graph.post("subscriptions", json=_sub("security/alerts", receiver.url("x"), changeType="deleted"))
    assert r.status_code == 400
    a = _raise(graph)
    _raise(graph, status="inProgress")
    graph.patch(f"security/alerts/{a['id']}", json={"status": "resolved", "vendorInformation": VENDOR})
    everything = receiver.wait_items(3, path="all")
    assert sorted(i["changeType"] for i in everything) == ["created", "created", "updated"]
    assert graph.admin("POST", "delivery/wait", json={"timeoutSeconds": 10}).json()["idle"]
    new = receiver.items("new")
    assert [(i["changeType"], i["resourceData"]["id"]) for i in new] == [("created", a["id"])]  # not the others
    assert new[0]["resource"] == f"security/alerts/{a['id']}"
    assert new[0]["resourceData"]["@odata.type"] == "#Microsoft.Graph.alert"


def test_alert_permissions(graph: EmulatorClient, receiver: Receiver) -> None:
    app = graph.admin("POST", "apps", json={"roles": ["SecurityEvents.Read.All"]}).json()
    token = graph.admin("POST", "token", json={"clientId": app["clientId"]}).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    a = _raise(graph)
    assert graph.get("security/alerts", headers=headers).status_code == 200
    r = graph.patch(f"security/alerts/{a['id']}", json={"status": "resolved", "vendorInformation": VENDOR}, headers=headers)
    assert r.status_code == 403
    # subscribing needs SecurityEvents.ReadWrite.All
    assert graph.post("subscriptions", json=_sub("security/alerts", receiver.url()), headers=headers).status_code == 403
