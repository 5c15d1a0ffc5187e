"""Call records: get with sessions/segments paging, list filters, 30-day retention, subscriptions
(https://learn.microsoft.com/graph/api/resources/callrecords-callrecord)."""

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
    return EmulatorConfig(seed=3).with_changes(**changes)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def _in(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _call(graph: EmulatorClient, **body: Any) -> dict[str, Any]:
    r = graph.admin("POST", "communications/calls", json={"participants": ["u1", "u2"], **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_get_with_sessions_and_segments_paged(graph: EmulatorClient) -> None:
    record = _call(graph, sessions=130, segmentsPerSession=2)
    r = graph.get(f"communications/callRecords/{record['id']}?$expand=sessions($expand=segments)")
    body = r.json()
    assert body["version"] == 1 and len(body["sessions"]) == 60 and len(body["sessions"][0]["segments"]) == 2
    sessions = list(body["sessions"])
    link = body["sessions@odata.nextLink"]
    while link:
        page = graph.get(link).json()
        sessions.extend(page["value"])
        link = page.get("@odata.nextLink")
    assert len(sessions) == 130 and all(len(s["segments"]) == 2 for s in sessions)
    assert len({s["id"] for s in sessions}) == 130
    small = graph.get(f"communications/callRecords/{record['id']}?$expand=sessions",
                      headers={"Prefer": "odata.maxpagesize=10"}).json()
    assert len(small["sessions"]) == 10 and "segments" not in small["sessions"][0]
    plain = graph.get(f"communications/callRecords/{record['id']}?$select=id,version").json()
    assert set(plain) == {"@odata.context", "id", "version"}
    assert graph.get(f"communications/callRecords/{record['id']}?$expand=organizer").status_code == 400


def _ago(graph: EmulatorClient, days: float) -> str:
    now = datetime.fromisoformat(graph.admin("GET", "clock").json()["now"].replace("Z", "+00:00"))
    return (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_list_filters_and_thirty_days(graph: EmulatorClient) -> None:
    old = _call(graph, startDateTime=_ago(graph, 35), endDateTime=_ago(graph, 34.9))
    mid = _call(graph, startDateTime=_ago(graph, 20), endDateTime=_ago(graph, 19.9))
    recent = _call(graph, participants=["u3", "u4"])
    ids = {r["id"] for r in graph.get("communications/callRecords").json()["value"]}
    assert ids == {mid["id"], recent["id"]}  # older than 30 days: gone from the list
    assert graph.get(f"communications/callRecords/{old['id']}").status_code == 404  # and from GET
    assert graph.get(f"communications/callRecords/{mid['id']}").status_code == 200
    since = graph.get(f"communications/callRecords?$filter=startDateTime ge {_ago(graph, 10)}").json()["value"]
    assert [r["id"] for r in since] == [recent["id"]]
    joined = graph.get("communications/callRecords?$filter=participants_v2/any(p:p/id eq 'u1')").json()["value"]
    assert [r["id"] for r in joined] == [mid["id"]]
    assert graph.get("communications/callRecords?$filter=type eq 'peerToPeer'").status_code == 400
    assert graph.get("communications/callRecords?$expand=sessions").status_code == 400


def _sub(url: str, **extra: Any) -> dict[str, Any]:
    return {"resource": "communications/callRecords", "changeType": "created,updated", "notificationUrl": url,
            "expirationDateTime": _in(600), **extra}


def test_subscription_rules_and_notifications(graph: EmulatorClient, receiver: Receiver) -> None:
    assert graph.post("subscriptions", json=_sub(receiver.url(), changeType="deleted")).status_code == 400
    assert graph.post("subscriptions", json=_sub(receiver.url(), expirationDateTime=_in(4_300))).status_code == 400
    rich = _sub(receiver.url(), includeResourceData=True, encryptionCertificate="x", encryptionCertificateId="1")
    assert graph.post("subscriptions", json=rich).status_code == 400
    assert graph.post("subscriptions", json=_sub(receiver.url("calls"))).status_code == 201
    record = _call(graph)
    graph.admin("POST", f"communications/callRecords/{record['id']}/update", json={"sessions": 2})
    items = receiver.wait_items(3, path="calls")
    assert sorted(i["changeType"] for i in items) == ["created", "updated", "updated"]
    assert {i["resource"] for i in items} == {f"communications/callRecords/{record['id']}"}
    assert items[0]["resourceData"] == {"@odata.type": "#Microsoft.Graph.callRecord", "id": record["id"],
                                        "@odata.id": f"communications/callRecords/{record['id']}"}
    assert graph.get(f"communications/callRecords/{record['id']}").json()["version"] == 2


@pytest.mark.parametrize("emulator_config", [{"call_record_subscriptions_per_organization": 2}], indirect=True)
def test_subscriptions_per_organization(graph: EmulatorClient, receiver: Receiver) -> None:
    other = graph.admin("POST", "apps", json={"roles": ["CallRecords.Read.All"]}).json()
    token = graph.admin("POST", "token", json={"clientId": other["clientId"]}).json()["access_token"]
    assert graph.post("subscriptions", json=_sub(receiver.url("a"))).status_code == 201
    assert graph.post("subscriptions", json=_sub(receiver.url("b"), changeType="created"),
                      headers={"Authorization": f"Bearer {token}"}).status_code == 201
    r = graph.post("subscriptions", json=_sub(receiver.url("c"), changeType="updated"))
    assert r.status_code == 403  # the organisation's cap counts every app


def test_app_without_the_permission_is_refused(graph: EmulatorClient) -> None:
    record = _call(graph)
    app = graph.admin("POST", "apps", json={"roles": ["User.Read.All"]}).json()
    token = graph.admin("POST", "token", json={"clientId": app["clientId"]}).json()["access_token"]
    r = graph.get(f"communications/callRecords/{record['id']}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
