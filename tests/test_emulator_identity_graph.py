"""Graph with a signed-in user's token: `scp` checks per resource family, /me on every family's paths, one's own data
only, and delegated subscriptions owned by (app, user)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from emulator_fixtures import EmulatorClient
from webhook_receiver import Receiver


def user_token(graph: EmulatorClient, user: str, scope: str, *, authority: str | None = None,
               client_id: str | None = None) -> str:
    """A delegated access token for *user* (device code approved through the admin API)."""
    return graph.user_token(user, scope, authority=authority, client_id=client_id)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def people(graph: EmulatorClient) -> dict[str, dict[str, Any]]:
    alice, bob = graph.create_user("alice"), graph.create_user("bob")
    r = graph.admin("POST", "seed", json={"messagesPerUser": 3, "eventsPerUser": 2, "contactsPerUser": 2,
                                          "tasksPerUser": 2, "driveItemsPerUser": 2})
    assert r.status_code == 200, r.text
    return {"alice": alice, "bob": bob}


ALL = "User.Read Mail.Read Calendars.Read Contacts.Read Tasks.Read Files.Read"
FAMILY_PATHS = ("messages", "mailFolders/inbox/messages", "events", "contacts", "todo/lists", "drive/root/children")


def test_me_with_an_app_token_is_graphs_400(graph: EmulatorClient) -> None:
    r = graph.get("me/messages")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "BadRequest"
    assert r.json()["error"]["message"] == "/me request is only valid with delegated authentication flow."


def test_me_is_the_signed_in_user_on_every_family(graph: EmulatorClient, people: dict[str, dict[str, Any]]) -> None:
    alice = people["alice"]
    token = user_token(graph, alice["userPrincipalName"], ALL)
    me = graph.get("me", headers=bearer(token))
    assert me.status_code == 200 and me.json()["id"] == alice["id"]
    for path in FAMILY_PATHS:
        mine = graph.get(f"me/{path}", headers=bearer(token))
        assert mine.status_code == 200, (path, mine.text)
        as_app = graph.get(f"users/{alice['id']}/{path}")
        assert as_app.status_code == 200, (path, as_app.text)
        assert sorted(i["id"] for i in mine.json()["value"]) == sorted(i["id"] for i in as_app.json()["value"]), path
    delta = graph.get("me/mailFolders/inbox/messages/delta", headers=bearer(token))
    assert delta.status_code == 200 and delta.json()["value"], delta.text


@pytest.mark.parametrize(("path", "code"), [
    ("messages", "ErrorAccessDenied"), ("events", "ErrorAccessDenied"), ("todo/lists", "Forbidden"),
    ("drive/root/children", "accessDenied"),
])
def test_a_scope_the_token_lacks_is_the_familys_403(graph: EmulatorClient, people: dict[str, dict[str, Any]],
                                                    path: str, code: str) -> None:
    token = user_token(graph, people["alice"]["id"], "User.Read Contacts.Read")
    r = graph.get(f"me/{path}", headers=bearer(token))
    assert r.status_code == 403 and r.json()["error"]["code"] == code, r.text


def test_a_user_reaches_only_their_own_data(graph: EmulatorClient, people: dict[str, dict[str, Any]]) -> None:
    token = user_token(graph, people["alice"]["id"], ALL)
    bob = people["bob"]
    for path in FAMILY_PATHS:
        r = graph.get(f"users/{bob['id']}/{path}", headers=bearer(token))
        assert r.status_code == 403, (path, r.text)
    assert graph.get(f"users/{people['alice']['userPrincipalName']}/messages", headers=bearer(token)).status_code == 200


def test_directory_reads_need_directory_scopes(graph: EmulatorClient, people: dict[str, dict[str, Any]]) -> None:
    alice = people["alice"]
    basic = user_token(graph, alice["id"], "User.Read")
    assert graph.get(f"users/{alice['id']}", headers=bearer(basic)).status_code == 200
    denied = graph.get("users", headers=bearer(basic))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Authorization_RequestDenied"
    assert graph.get(f"users/{people['bob']['id']}", headers=bearer(basic)).status_code == 403
    assert graph.get("groups", headers=bearer(basic)).status_code == 403
    wide = user_token(graph, alice["id"], "User.Read.All Group.Read.All")
    assert graph.get("users", headers=bearer(wide)).status_code == 200
    assert graph.get("users/delta", headers=bearer(wide)).status_code == 200
    assert graph.get("groups", headers=bearer(wide)).status_code == 200


def test_writes_need_a_write_scope(graph: EmulatorClient, people: dict[str, dict[str, Any]]) -> None:
    read = user_token(graph, people["alice"]["id"], "Mail.Read")
    body = {"subject": "hello"}
    assert graph.post("me/messages", json=body, headers=bearer(read)).status_code == 403
    write = user_token(graph, people["alice"]["id"], "Mail.ReadWrite")
    assert graph.post("me/messages", json=body, headers=bearer(write)).status_code == 201


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def _subscription(url: str, resource: str) -> dict[str, Any]:
    expires = (datetime.now(UTC) + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    return {"resource": resource, "changeType": "created,updated", "notificationUrl": url,
            "expirationDateTime": expires, "clientState": "c"}


def test_delegated_subscriptions_belong_to_app_and_user(graph: EmulatorClient, people: dict[str, dict[str, Any]],
                                                        receiver: Receiver) -> None:
    alice, bob = people["alice"], people["bob"]
    a_token = user_token(graph, alice["id"], "Mail.Read")
    b_token = user_token(graph, bob["id"], "Mail.Read")
    created = graph.post("subscriptions", json=_subscription(receiver.url("n"), "me/mailFolders/inbox/messages"),
                         headers=bearer(a_token))
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["creatorId"] == alice["id"]
    other = graph.post("subscriptions", json=_subscription(receiver.url("n"), "me/messages"), headers=bearer(b_token))
    assert other.status_code == 201, other.text
    assert [s["id"] for s in graph.get("subscriptions", headers=bearer(a_token)).json()["value"]] == [sub["id"]]
    assert graph.get(f"subscriptions/{sub['id']}", headers=bearer(b_token)).status_code == 404
    assert graph.delete(f"subscriptions/{sub['id']}", headers=bearer(b_token)).status_code == 404
    everything = graph.get("subscriptions").json()["value"]  # the app itself sees every user's
    assert {s["id"] for s in everything} == {sub["id"], other.json()["id"]}
    stolen = graph.post("subscriptions", json=_subscription(receiver.url("n"), f"users/{bob['id']}/messages"),
                        headers=bearer(a_token))
    assert stolen.status_code == 403, stolen.text
    assert graph.post(f"subscriptions/{sub['id']}/reauthorize", headers=bearer(a_token)).status_code == 204
    # A change in Alice's inbox reaches her subscription.
    assert graph.post("me/mailFolders/inbox/messages", json={"subject": "hi"},
                      headers=bearer(user_token(graph, alice["id"], "Mail.ReadWrite"))).status_code == 201
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(sub["id"] in str(r.body) for r in receiver.received):
        time.sleep(0.05)
    assert any(sub["id"] in str(r.body) for r in receiver.received)


def test_me_inside_a_batch(graph: EmulatorClient, people: dict[str, dict[str, Any]]) -> None:
    token = user_token(graph, people["alice"]["id"], "User.Read Mail.Read")
    r = graph.post("$batch", headers=bearer(token), json={"requests": [
        {"id": "1", "method": "GET", "url": "/me"},
        {"id": "2", "method": "GET", "url": "/me/messages"},
        {"id": "3", "method": "GET", "url": f"/users/{people['bob']['id']}/messages"},
    ]})
    assert r.status_code == 200, r.text
    by_id = {item["id"]: item for item in r.json()["responses"]}
    assert by_id["1"]["status"] == 200 and by_id["1"]["body"]["id"] == people["alice"]["id"]
    assert by_id["2"]["status"] == 200
    assert by_id["3"]["status"] == 403


def test_revoked_sessions_pause_a_users_subscription_until_a_fresh_token_reauthorizes_it(
        graph: EmulatorClient, people: dict[str, dict[str, Any]], receiver: Receiver) -> None:
    alice = people["alice"]
    old = user_token(graph, alice["id"], "Mail.ReadWrite")
    body = {**_subscription(receiver.url("n"), "me/mailFolders/inbox/messages"),
            "lifecycleNotificationUrl": receiver.url("life")}
    sub = graph.post("subscriptions", json=body, headers=bearer(old)).json()
    assert graph.admin("POST", f"users/{alice['id']}/revoke-sessions").status_code == 200
    assert graph.post(f"users/{alice['id']}/mailFolders/inbox/messages", json={"subject": "while revoked"}).status_code == 201

    def seen(path: str, text: str) -> bool:
        return any(r.path == path and text in str(r.body) for r in receiver.received)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not seen("life", "reauthorizationRequired"):
        time.sleep(0.05)
    assert seen("life", "reauthorizationRequired")
    assert not seen("n", sub["id"]), "held while the user's sessions are revoked"
    stale = graph.post(f"subscriptions/{sub['id']}/reauthorize", headers=bearer(old))
    assert stale.status_code == 403, "a token from before the revocation cannot reauthorize"
    fresh = user_token(graph, alice["id"], "Mail.Read")
    assert graph.post(f"subscriptions/{sub['id']}/reauthorize", headers=bearer(fresh)).status_code == 204
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not seen("n", sub["id"]):
        time.sleep(0.05)
    assert seen("n", sub["id"]), "the held notification is delivered after reauthorization"


def test_a_users_subscription_needs_no_application_permission(graph: EmulatorClient, people: dict[str, dict[str, Any]],
                                                              receiver: Receiver) -> None:
    """A public client holding no application permission at all: its users' subscriptions deliver."""
    r = graph.admin("POST", "apps", json={"clientId": "22222222-0000-0000-0000-000000000002", "displayName": "cli",
                                          "roles": [], "delegatedScopes": ["Mail.Read"]})
    assert r.status_code == 201, r.text
    token = user_token(graph, people["alice"]["id"], "Mail.Read", client_id="22222222-0000-0000-0000-000000000002")
    sub = graph.post("subscriptions", json=_subscription(receiver.url("n"), "me/mailFolders/inbox/messages"),
                     headers=bearer(token))
    assert sub.status_code == 201, sub.text
    assert graph.post(f"users/{people['alice']['id']}/mailFolders/inbox/messages", json={"subject": "x"}).status_code == 201
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(sub.json()["id"] in str(r.body) for r in receiver.received):
        time.sleep(0.05)
    assert any(sub.json()["id"] in str(r.body) for r in receiver.received)


def test_a_users_to_do_subscription_needs_tasks_readwrite_not_tasks_read(
    graph: EmulatorClient, people: dict[str, dict[str, Any]], receiver: Receiver
) -> None:
    """Tasks.Read reads a user's tasks; subscribing to them takes Tasks.ReadWrite, for work and personal accounts
    alike (https://learn.microsoft.com/graph/api/subscription-post-subscriptions#permissions)."""
    alice = people["alice"]
    writer = user_token(graph, alice["id"], "Tasks.ReadWrite")
    created = graph.post("me/todo/lists", json={"displayName": "Errands"}, headers=bearer(writer))
    assert created.status_code == 201, created.text
    resource = f"me/todo/lists/{created.json()['id']}/tasks"
    reader = user_token(graph, alice["id"], "Tasks.Read")
    assert graph.get(resource, headers=bearer(reader)).status_code == 200
    refused = graph.post("subscriptions", json=_subscription(receiver.url("n"), resource), headers=bearer(reader))
    assert refused.status_code == 403, refused.text
    accepted = graph.post("subscriptions", json=_subscription(receiver.url("n"), resource), headers=bearer(writer))
    assert accepted.status_code == 201, accepted.text
