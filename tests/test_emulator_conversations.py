"""Group conversations in the emulator: conversations, threads and posts with Graph's write API and paging, and
delegated-only subscriptions on groups/{id}/conversations (https://learn.microsoft.com/graph/api/resources/conversation),
over real HTTPS."""

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


def _in(graph: EmulatorClient, minutes: float) -> str:
    now = datetime.fromisoformat(graph.admin("GET", "clock").json()["now"].replace("Z", "+00:00"))
    return (now + timedelta(minutes=minutes)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _group(graph: EmulatorClient, name: str, *, unified: bool = True) -> dict[str, Any]:
    body = {"displayName": name, "mailEnabled": unified, "mailNickname": name, "securityEnabled": not unified,
            "groupTypes": ["Unified"] if unified else []}
    r = graph.post("groups", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _start(graph: EmulatorClient, gid: str, topic: str, text: str, **kw: Any) -> dict[str, Any]:
    r = graph.post(f"groups/{gid}/conversations", json={"topic": topic, "threads": [
        {"posts": [{"body": {"contentType": "html", "content": text}}]}]}, **kw)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_conversations_threads_posts_and_paging(graph: EmulatorClient) -> None:
    group = _group(graph, "team")
    made = [_start(graph, group["id"], f"topic {i}", f"hello {i}") for i in range(12)]
    first = graph.get(f"groups/{group['id']}/conversations").json()
    assert len(first["value"]) == 10 and "@odata.nextLink" in first
    rest = graph.get(first["@odata.nextLink"]).json()
    assert len(rest["value"]) == 2 and "@odata.nextLink" not in rest
    assert {c["id"] for c in first["value"] + rest["value"]} == {c["id"] for c in made}
    assert graph.get(f"groups/{group['id']}/conversations?$top=101").status_code == 400
    assert graph.get(f"groups/{group['id']}/conversations?$orderby=topic").status_code == 400

    conversation = made[0]
    thread = conversation["threads"][0]
    assert graph.get(f"groups/{group['id']}/conversations/{conversation['id']}").json()["preview"] == "hello 0"
    threads = graph.get(f"groups/{group['id']}/conversations/{conversation['id']}/threads").json()["value"]
    assert [t["id"] for t in threads] == [thread["id"]] and "conversationId" not in threads[0]
    reply = graph.post(f"groups/{group['id']}/threads/{thread['id']}/reply",
                       json={"post": {"body": {"contentType": "text", "content": "a reply"}}})
    assert reply.status_code == 202 and not reply.content
    posts = graph.get(f"groups/{group['id']}/threads/{thread['id']}/posts").json()["value"]
    assert [p["body"]["content"] for p in posts] == ["hello 0", "a reply"]
    assert posts[1]["conversationId"] == conversation["id"]
    after = graph.get(f"groups/{group['id']}/conversations/{conversation['id']}?$select=preview").json()
    assert after["preview"] == "a reply" and "topic" not in after

    assert graph.delete(f"groups/{group['id']}/conversations/{conversation['id']}").status_code == 204
    assert graph.get(f"groups/{group['id']}/conversations/{conversation['id']}").status_code == 404
    assert graph.get(f"groups/{group['id']}/threads/{thread['id']}").status_code == 404

    security = _group(graph, "sec", unified=False)
    assert graph.get(f"groups/{security['id']}/conversations").status_code == 404


def test_subscriptions_are_delegated_only_one_per_group(graph: EmulatorClient, receiver: Receiver) -> None:
    group = _group(graph, "team")
    other = _group(graph, "other")
    ana = graph.create_user("ana")
    url = receiver.url("conversations")
    body = {"resource": f"groups/{group['id']}/conversations", "changeType": "created,updated,deleted",
            "notificationUrl": url, "clientState": "s", "expirationDateTime": _in(graph, 4_000)}
    assert graph.post("subscriptions", json=body).status_code == 403  # app-only token
    weak = graph.user_token(ana["userPrincipalName"], "Group-Conversation.Read.All")
    assert graph.post("subscriptions", json=body, headers=_bearer(weak)).status_code == 403
    headers = _bearer(graph.user_token(ana["userPrincipalName"], "Group.Read.All Group.ReadWrite.All"))
    assert graph.post("subscriptions", json={**body, "expirationDateTime": _in(graph, 4_300)},
                      headers=headers).status_code == 400
    rich = {**body, "includeResourceData": True, "encryptionCertificate": "x", "encryptionCertificateId": "1"}
    assert graph.post("subscriptions", json=rich, headers=headers).status_code == 400
    made = graph.post("subscriptions", json=body, headers=headers)
    assert made.status_code == 201, made.text
    again = graph.post("subscriptions", json={**body, "changeType": "created"}, headers=headers)
    assert again.status_code == 403, again.text  # one per group

    conversation = _start(graph, group["id"], "hi", "first", headers=headers)
    _start(graph, other["id"], "elsewhere", "not ours")
    thread = conversation["threads"][0]["id"]
    r = graph.admin("POST", f"groups/{group['id']}/threads/{thread}/reply", json={"from": ana["id"], "content": "re"})
    assert r.status_code == 201, r.text
    assert graph.delete(f"groups/{group['id']}/conversations/{conversation['id']}").status_code == 204
    items = receiver.wait_items(3, path="conversations")
    # Graph promises no order, and the emulator may have two POSTs to one URL in flight at once.
    assert sorted(i["changeType"] for i in items) == ["created", "deleted", "updated"]
    resource = f"Groups/{group['id']}/Conversations/{conversation['id']}"
    assert {i["resource"] for i in items} == {resource}
    assert items[0]["resourceData"] == {"@odata.type": "#Microsoft.Graph.Conversation", "@odata.id": resource,
                                        "id": conversation["id"]}
    posts = conversation["threads"][0]
    assert posts["uniqueSenders"] == ["Ana"]  # the signed-in user wrote it
