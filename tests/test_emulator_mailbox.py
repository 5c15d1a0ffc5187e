"""Outlook and To Do resources through the write API, and their delta queries."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from emulator_fixtures import EmulatorClient


@pytest.fixture
def uid(graph: EmulatorClient) -> str:
    return str(graph.create_user("mia")["id"])


def test_messages_per_folder_delta(graph: EmulatorClient, uid: str) -> None:
    folders = graph.get(f"users/{uid}/mailFolders").json()["value"]
    assert {"Inbox", "Drafts", "Sent Items", "Deleted Items"} <= {f["displayName"] for f in folders}
    for i in range(12):
        r = graph.post(f"users/{uid}/mailFolders/Inbox/messages", json={"subject": f"m{i}"})
        assert r.status_code == 201, r.text
    first = graph.get(f"users/{uid}/mailFolders/inbox/messages/delta").json()
    assert len(first["value"]) == 10  # Outlook's default page
    items, link = graph.delta_all(f"users/{uid}/mailFolders/inbox/messages/delta?$select=subject,isRead")
    assert len(items) == 12 and set(items[0]) == {"@odata.etag", "id", "subject", "isRead"}
    # the other folder's delta is independent
    drafts, _ = graph.delta_all(f"users/{uid}/mailFolders/drafts/messages/delta")
    assert drafts == []
    one, two = items[0]["id"], items[1]["id"]
    assert graph.patch(f"users/{uid}/messages/{one}", json={"isRead": True}).status_code == 200
    assert graph.delete(f"users/{uid}/mailFolders/inbox/messages/{two}").status_code == 204
    changes, _ = graph.delta_all(link)
    by_id = {c["id"]: c for c in changes}
    assert by_id[one]["isRead"] is True and set(by_id[one]) == {"@odata.etag", "id", "subject", "isRead"}
    assert by_id[two] == {"@odata.type": "#microsoft.graph.message", "id": two, "@removed": {"reason": "deleted"}}


def test_message_errors(graph: EmulatorClient, uid: str) -> None:
    r = graph.post(f"users/{uid}/mailFolders/inbox/messages", json={"subject": "x", "colour": "red"})
    assert r.status_code == 400 and "colour" in r.json()["error"]["message"]
    assert graph.get(f"users/{uid}/messages/AAMkNOPE").status_code == 404
    assert graph.get(f"users/{uid}/mailFolders/nosuchfolder/messages").status_code == 404
    r = graph.get("users/nobody@contoso.onmicrosoft.com/messages")
    assert r.status_code == 404 and r.json()["error"]["code"] == "ErrorInvalidUser"
    r = graph.post(f"users/{uid}/mailFolders/inbox/messages", data=b"[1,", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_mail_folders_delta(graph: EmulatorClient, uid: str) -> None:
    items, link = graph.delta_all(f"users/{uid}/mailFolders/delta")
    assert len(items) >= 5
    created = graph.post(f"users/{uid}/mailFolders", json={"displayName": "Projects"}).json()
    changes, _ = graph.delta_all(link)
    assert [c["id"] for c in changes] == [created["id"]]


def _event(graph: EmulatorClient, uid: str, day: int) -> dict[str, Any]:
    r = graph.post(f"users/{uid}/events", json={
        "subject": f"day {day}",
        "start": {"dateTime": f"2026-12-{day:02d}T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": f"2026-12-{day:02d}T11:00:00", "timeZone": "UTC"}})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_calendar_view_delta_window(graph: EmulatorClient, uid: str) -> None:
    inside, outside = _event(graph, uid, 2), _event(graph, uid, 20)
    window = "startDateTime=2026-12-01T00:00:00Z&endDateTime=2026-12-10T00:00:00Z"
    items, link = graph.delta_all(f"users/{uid}/calendarView/delta?{window}")
    assert [i["id"] for i in items] == [inside["id"]]
    assert "startDateTime" not in link  # the window travels in the token
    # moving the event out of the window reports it as deleted; a new one inside shows up
    graph.patch(f"users/{uid}/events/{inside['id']}", json={
        "start": {"dateTime": "2026-12-25T10:00:00", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-25T11:00:00", "timeZone": "UTC"}})
    third = _event(graph, uid, 3)
    changes, _ = graph.delta_all(link)
    by_id = {c["id"]: c for c in changes}
    assert by_id[inside["id"]]["@removed"] == {"reason": "deleted"}
    assert by_id[third["id"]]["subject"] == "day 3"
    assert outside["id"] not in by_id
    r = graph.get(f"users/{uid}/calendarView/delta")
    assert r.status_code == 400
    assert graph.get(f"users/{uid}/calendarView/delta?{window}&$select=subject").status_code == 400
    view = graph.get(f"users/{uid}/calendarView?{window}").json()["value"]
    assert [v["id"] for v in view] == [third["id"]]


def test_contacts_delta_in_default_and_other_folders(graph: EmulatorClient, uid: str) -> None:
    c1 = graph.post(f"users/{uid}/contacts", json={"givenName": "Ana", "surname": "Li"}).json()
    assert c1["displayName"] == "Ana Li"
    folder = graph.post(f"users/{uid}/contactFolders", json={"displayName": "Friends"}).json()
    c2 = graph.post(f"users/{uid}/contactFolders/{folder['id']}/contacts", json={"givenName": "Bo"}).json()
    default_items, link = graph.delta_all(f"users/{uid}/contacts/delta")
    assert [i["id"] for i in default_items] == [c1["id"]]
    friends, _ = graph.delta_all(f"users/{uid}/contactFolders/{folder['id']}/contacts/delta")
    assert [i["id"] for i in friends] == [c2["id"]]
    graph.delete(f"users/{uid}/contacts/{c1['id']}")
    changes, _ = graph.delta_all(link)
    assert changes == [{"@odata.type": "#microsoft.graph.contact", "id": c1["id"], "@removed": {"reason": "deleted"}}]


def test_todo_lists_and_tasks_delta(graph: EmulatorClient, uid: str) -> None:
    lists = graph.get(f"users/{uid}/todo/lists").json()["value"]
    default = next(x for x in lists if x["wellknownListName"] == "defaultList")
    task = graph.post(f"users/{uid}/todo/lists/{default['id']}/tasks", json={"title": "write tests"}).json()
    assert task["status"] == "notStarted"
    items, link = graph.delta_all(f"users/{uid}/todo/lists/{default['id']}/tasks/delta")
    assert [i["id"] for i in items] == [task["id"]]
    graph.patch(f"users/{uid}/todo/lists/{default['id']}/tasks/{task['id']}", json={"status": "completed"})
    changes, _ = graph.delta_all(link)
    assert changes[0]["status"] == "completed"
    new_list = graph.post(f"users/{uid}/todo/lists", json={"displayName": "Errands"}).json()
    lists_delta, _ = graph.delta_all(f"users/{uid}/todo/lists/delta")
    assert new_list["id"] in {x["id"] for x in lists_delta}


def test_mail_needs_mail_permission(graph: EmulatorClient, uid: str) -> None:
    app = graph.admin("POST", "apps", json={"roles": ["User.Read.All"]}).json()
    token = graph.session.post(f"{graph.info['authority']}/oauth2/v2.0/token", data={
        "client_id": app["clientId"], "client_secret": app["secret"], "grant_type": "client_credentials",
        "scope": "https://graph.microsoft.com/.default"}, timeout=10).json()["access_token"]
    r = graph.get(f"users/{uid}/mailFolders/inbox/messages/delta", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "ErrorAccessDenied"


def test_mailbox_concurrency_limit_answers_429(graph: EmulatorClient, uid: str) -> None:
    graph.admin("POST", "faults", json={"type": "latency", "ms": 400, "path": "/messages"})
    token = graph.token()
    statuses: list[int] = []
    retry_after: list[str] = []

    def call() -> None:
        import requests

        r = requests.get(f"{graph.graph}/users/{uid}/mailFolders/inbox/messages",
                         headers={"Authorization": f"Bearer {token}"}, verify=graph.ca, timeout=10)
        statuses.append(r.status_code)
        if r.status_code == 429:
            retry_after.append(r.headers["Retry-After"])
            assert r.json()["error"]["code"] == "ApplicationThrottled"

    threads = [threading.Thread(target=call) for _ in range(7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(200) == 4 and statuses.count(429) == 3, statuses
    assert retry_after and all(v.isdigit() for v in retry_after)
    faults = graph.admin("GET", "faults").json()
    assert faults["mailboxRejections"] == 3


def test_messages_delta_received_filter(graph: EmulatorClient, uid: str) -> None:
    graph.post(f"users/{uid}/mailFolders/inbox/messages", json={"subject": "old"})
    items, _ = graph.delta_all(f"users/{uid}/mailFolders/inbox/messages/delta?$filter=receivedDateTime ge 2000-01-01T00:00:00Z")
    assert [i["subject"] for i in items] == ["old"]
    none, _ = graph.delta_all(f"users/{uid}/mailFolders/inbox/messages/delta?$filter=receivedDateTime gt 2999-01-01T00:00:00Z")
    assert none == []
    assert graph.get(f"users/{uid}/mailFolders/inbox/messages/delta?$filter=subject eq 'x'").status_code == 400


def test_move_message_changes_its_id_and_both_deltas(graph: EmulatorClient, uid: str) -> None:
    msg = graph.post(f"users/{uid}/mailFolders/inbox/messages", json={"subject": "mv"}).json()
    _, inbox_link = graph.delta_all(f"users/{uid}/mailFolders/inbox/messages/delta")
    _, archive_link = graph.delta_all(f"users/{uid}/mailFolders/archive/messages/delta")
    r = graph.post(f"users/{uid}/messages/{msg['id']}/move", json={"destinationId": "archive"})
    assert r.status_code == 201 and r.json()["id"] != msg["id"] and r.json()["subject"] == "mv"
    inbox, _ = graph.delta_all(inbox_link)
    archive, _ = graph.delta_all(archive_link)
    assert inbox == [{"@odata.type": "#microsoft.graph.message", "id": msg["id"], "@removed": {"reason": "deleted"}}]
    assert [a["id"] for a in archive] == [r.json()["id"]]
    assert graph.get(f"users/{uid}/messages/{msg['id']}").status_code == 404
    assert graph.post(f"users/{uid}/messages/{r.json()['id']}/move", json={"destinationId": "nowhere"}).status_code == 404


class TestOutlookSyncStateCache:
    @pytest.fixture
    def emulator_config(self) -> Any:
        from syncer.emulator import EmulatorConfig

        return EmulatorConfig(seed=9, outlook_delta_token_cache_size=2)

    def test_oldest_delta_links_are_evicted_first(self, graph: EmulatorClient, uid: str) -> None:
        url = f"users/{uid}/mailFolders/inbox/messages/delta"
        links = [graph.delta_all(url)[1] for _ in range(3)]
        r = graph.get(links[0])
        assert r.status_code == 410 and r.json()["error"]["code"] == "SyncStateNotFound"
        assert graph.get(links[2]).status_code == 200


def test_calendar_view_reset_location_keeps_the_window(graph: EmulatorClient, uid: str) -> None:
    _event(graph, uid, 2)
    window = "startDateTime=2026-12-01T00:00:00Z&endDateTime=2026-12-10T00:00:00Z"
    _, link = graph.delta_all(f"users/{uid}/calendarView/delta?{window}")
    graph.admin("POST", "faults", json={"type": "deltaReset", "scope": "/events$", "kind": "reset"})
    r = graph.get(link)
    assert r.status_code == 410
    items, _ = graph.delta_all(r.headers["Location"])
    assert len(items) == 1
