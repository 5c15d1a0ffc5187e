"""POST /users/{id}/sendMail delivers to the tenant's inboxes and the sender's Sent Items, with the notifications
and delta changes new mail brings (https://learn.microsoft.com/graph/api/user-sendmail)."""

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


def _to(*addresses: str) -> list[dict[str, Any]]:
    return [{"emailAddress": {"address": a}} for a in addresses]


def _in(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def test_send_mail_delivers_and_notifies(graph: EmulatorClient, receiver: Receiver) -> None:
    ann, ben, cat = graph.create_user("ann"), graph.create_user("ben"), graph.create_user("cat")
    sub = {"resource": f"users/{ben['id']}/mailFolders('inbox')/messages", "changeType": "created",
           "notificationUrl": receiver.url("ben"), "expirationDateTime": _in(600)}
    assert graph.post("subscriptions", json=sub).status_code == 201
    _, ben_link = graph.delta_all(f"users/{ben['id']}/mailFolders/inbox/messages/delta")
    r = graph.post(f"users/{ann['userPrincipalName']}/sendMail", json={"message": {
        "subject": "Lunch?", "body": {"contentType": "text", "content": "At noon"},
        "toRecipients": _to(ben["userPrincipalName"], "someone@example.org"),
        "bccRecipients": _to(cat["userPrincipalName"], ben["userPrincipalName"].upper())}})
    assert r.status_code == 202 and r.content == b""
    note = receiver.wait_items(1, path="ben")
    assert note[0]["changeType"] == "created"
    got, _ = graph.delta_all(ben_link)
    assert [m["subject"] for m in got] == ["Lunch?"]
    inbox = graph.get(f"users/{ben['id']}/mailFolders/inbox/messages").json()["value"]
    assert len(inbox) == 1  # one copy, though ben is in to and bcc
    message = inbox[0]
    assert message["isRead"] is False and message["isDraft"] is False
    assert message["from"]["emailAddress"]["address"] == ann["userPrincipalName"]
    assert message["bccRecipients"] == []
    cat_inbox = graph.get(f"users/{cat['id']}/mailFolders/inbox/messages").json()["value"]
    assert [m["internetMessageId"] for m in cat_inbox] == [message["internetMessageId"]]
    sent = graph.get(f"users/{ann['id']}/mailFolders/sentitems/messages").json()["value"]
    assert len(sent) == 1 and sent[0]["isRead"] is True and len(sent[0]["bccRecipients"]) == 2
    assert sent[0]["conversationId"] == message["conversationId"]


def test_send_mail_rules(graph: EmulatorClient) -> None:
    ann, ben = graph.create_user("ann"), graph.create_user("ben")
    url = f"users/{ann['id']}/sendMail"
    assert graph.post(url, json={"message": {"subject": "x"}}).status_code == 400  # no recipient
    assert graph.post(url, json={"message": {"toRecipients": [{"emailAddress": {}}]}}).status_code == 400
    assert graph.post(url, json={}).status_code == 400
    assert graph.post(url, json={"message": {"toRecipients": _to(ben["userPrincipalName"]), "colour": 1}}).status_code == 400
    assert graph.post("users/nobody@contoso.onmicrosoft.com/sendMail",
                      json={"message": {"toRecipients": _to(ben["userPrincipalName"])}}).status_code == 404
    r = graph.post(url, json={"message": {"toRecipients": _to(ben["userPrincipalName"])}, "saveToSentItems": False})
    assert r.status_code == 202
    assert graph.get(f"users/{ann['id']}/mailFolders/sentitems/messages").json()["value"] == []
    app = graph.admin("POST", "apps", json={"roles": ["Mail.ReadWrite"]}).json()
    token = graph.admin("POST", "token", json={"clientId": app["clientId"]}).json()["access_token"]
    r = graph.post(url, json={"message": {"toRecipients": _to(ben["userPrincipalName"])}},
                   headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403  # Mail.Send, not Mail.ReadWrite
