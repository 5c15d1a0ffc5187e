"""Every delta endpoint, through the same life: page, deltaLink, change, 410 on reset, restart at Location."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from emulator_fixtures import EmulatorClient

from syncer.emulator import EmulatorConfig

WINDOW = "startDateTime=2026-12-01T00:00:00Z&endDateTime=2026-12-31T00:00:00Z"


def _families(graph: EmulatorClient) -> dict[str, tuple[str, Callable[[], Any]]]:
    uid = graph.create_user("fam")["id"]
    did = graph.get(f"users/{uid}/drive").json()["id"]
    lid = graph.get(f"users/{uid}/todo/lists").json()["value"][0]["id"]
    event = {"subject": "e", "start": {"dateTime": "2026-12-02T10:00:00", "timeZone": "UTC"},
             "end": {"dateTime": "2026-12-02T11:00:00", "timeZone": "UTC"}}
    return {
        "users": ("users/delta", lambda: graph.post("users", json={
            "accountEnabled": True, "displayName": "A", "mailNickname": "another",
            "userPrincipalName": f"another@{graph.info['tenant_domain']}", "passwordProfile": {"password": "p4ss!Word"}})),
        "groups": ("groups/delta", lambda: graph.post("groups", json={
            "displayName": "g", "mailEnabled": False, "mailNickname": "g", "securityEnabled": True})),
        "messages": (f"users/{uid}/mailFolders/inbox/messages/delta",
                     lambda: graph.post(f"users/{uid}/mailFolders/inbox/messages", json={"subject": "s"})),
        "mailFolders": (f"users/{uid}/mailFolders/delta",
                        lambda: graph.post(f"users/{uid}/mailFolders", json={"displayName": "F"})),
        "events": (f"users/{uid}/calendarView/delta?{WINDOW}", lambda: graph.post(f"users/{uid}/events", json=event)),
        "contacts": (f"users/{uid}/contacts/delta", lambda: graph.post(f"users/{uid}/contacts", json={"givenName": "C"})),
        "contactFolders": (f"users/{uid}/contactFolders/delta",
                           lambda: graph.post(f"users/{uid}/contactFolders", json={"displayName": "CF"})),
        "todoLists": (f"users/{uid}/todo/lists/delta",
                      lambda: graph.post(f"users/{uid}/todo/lists", json={"displayName": "L"})),
        "todoTasks": (f"users/{uid}/todo/lists/{lid}/tasks/delta",
                      lambda: graph.post(f"users/{uid}/todo/lists/{lid}/tasks", json={"title": "T"})),
        "drive": (f"drives/{did}/root/delta",
                  lambda: graph.post(f"drives/{did}/root/children", json={"name": "n", "folder": {}})),
    }


FAMILIES = ["users", "groups", "messages", "mailFolders", "events", "contacts", "contactFolders", "todoLists",
            "todoTasks", "drive"]


@pytest.mark.parametrize("family", FAMILIES)
def test_delta_life_cycle(graph: EmulatorClient, family: str) -> None:
    url, change = _families(graph)[family]
    first, link = graph.delta_all(url)
    assert graph.delta_all(link)[0] == []  # nothing changed: an empty round
    created = change()
    assert created.status_code == 201, created.text
    changes, link = graph.delta_all(link)
    assert created.json()["id"] in {c["id"] for c in changes}
    graph.admin("POST", "faults", json={"type": "deltaReset", "kind": "reset"})
    gone = graph.get(link)
    assert gone.status_code == 410
    again, _ = graph.delta_all(gone.headers["Location"])
    assert created.json()["id"] in {i["id"] for i in again}
    assert {i["id"] for i in first} <= {i["id"] for i in again}  # a full resync


class TestExpiryWithLocation:
    @pytest.fixture
    def emulator_config(self) -> EmulatorConfig:
        return EmulatorConfig(seed=11, delta_expiry_sends_location=True)

    @pytest.mark.parametrize("family", ["users", "events"])
    def test_expired_token_location_restarts(self, graph: EmulatorClient, family: str) -> None:
        url, _ = _families(graph)[family]
        _, link = graph.delta_all(url)
        graph.admin("POST", "faults", json={"type": "deltaReset", "kind": "expired"})
        gone = graph.get(link)
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "SyncStateNotFound"
        assert graph.get(gone.headers["Location"]).status_code == 200
