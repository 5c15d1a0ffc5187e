"""Teams subscriptions in the emulator over real HTTPS, against a real webhook receiver: paths, rules, quotas,
``model``, notification shapes and rich payloads (https://learn.microsoft.com/graph/teams-changenotifications-chatmessage)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from emulator_fixtures import EmulatorClient
from test_emulator_rich import _b64_der, _certificate, _decrypt_as_documented
from test_emulator_teams import _channel, _say, _seed, _team
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


def _subscribe(graph: EmulatorClient, receiver: Receiver, resource: str, change_type: str = "created,updated,deleted",
               minutes: float = 50, **extra: Any) -> Any:
    body = {"resource": resource, "changeType": change_type, "notificationUrl": receiver.url("hook"),
            "expirationDateTime": _in(minutes), "clientState": "cs", **extra}
    return graph.post("subscriptions", json=body)


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    return dict(response.json())


def _setup(graph: EmulatorClient) -> tuple[list[dict[str, Any]], str, str]:
    users = _seed(graph)
    team = _team(graph, users[0], users[1])
    return users, team, _channel(graph, team)["id"]


def test_channel_subscription_hears_roots_replies_edits_and_soft_deletes(graph: EmulatorClient, receiver: Receiver) -> None:
    users, team, channel = _setup(graph)
    sub = _ok(_subscribe(graph, receiver, f"/teams/{team}/channels/{channel}/messages"))
    base = f"teams/{team}/channels/{quote(channel, safe='')}/messages"
    root = _say(graph, base, users[0]["id"], "hi")
    reply = _say(graph, f"{base}/{root['id']}/replies", users[1]["id"], "yo")
    graph.admin("PATCH", f"{base}/{root['id']}", json={"body": {"content": "hi!"}})
    graph.admin("DELETE", f"{base}/{root['id']}/replies/{reply['id']}")
    items = receiver.wait_items(4)
    root_resource = f"teams('{team}')/channels('{channel}')/messages('{root['id']}')"
    reply_resource = f"{root_resource}/replies('{reply['id']}')"
    # two POSTs may be in flight at once, so compare without order
    assert sorted((i["changeType"], i["resource"]) for i in items) == sorted([
        ("created", root_resource), ("created", reply_resource), ("updated", root_resource),
        ("deleted", reply_resource)])
    first = next(i for i in items if i["changeType"] == "created" and i["resource"] == root_resource)
    assert first["resourceData"] == {"@odata.type": "#microsoft.graph.chatMessage", "@odata.id": root_resource,
                                        "id": root["id"]}
    assert all(i["subscriptionId"] == sub["id"] and i["clientState"] == "cs" for i in items)


def test_rich_channel_notification_carries_the_message(graph: EmulatorClient, receiver: Receiver) -> None:
    users, team, channel = _setup(graph)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _subscribe(graph, receiver, f"/teams/{team}/channels/{channel}/messages",
                      includeResourceData=True).status_code == 400  # certificate required
    _ok(_subscribe(graph, receiver, f"/teams/{team}/channels/{channel}/messages", includeResourceData=True,
                   encryptionCertificate=_b64_der(_certificate(key)), encryptionCertificateId="c1"))
    base = f"teams/{team}/channels/{quote(channel, safe='')}/messages"
    root = _say(graph, base, users[0]["id"], "<p>secret</p>")
    graph.admin("DELETE", f"{base}/{root['id']}")
    # two POSTs may be in flight at once: find each notification by its changeType, not its position
    items = {i["changeType"]: i for i in receiver.wait_items(2)}
    created = json.loads(_decrypt_as_documented(items["created"]["encryptedContent"], key))
    assert created["id"] == root["id"] and created["body"]["content"] == "<p>secret</p>"
    assert created["channelIdentity"] == {"teamId": team, "channelId": channel}
    assert created["@odata.type"] == "#microsoft.graph.chatMessage"
    deleted = json.loads(_decrypt_as_documented(items["deleted"]["encryptedContent"], key))
    assert deleted["deletedDateTime"] is not None
    assert not any(k.startswith("@emulator") for k in deleted)


def test_lifetime_and_lifecycle_url_rules(graph: EmulatorClient, receiver: Receiver) -> None:
    _, team, channel = _setup(graph)
    resource = f"/teams/{team}/channels/{channel}/messages"
    r = _subscribe(graph, receiver, resource, minutes=120)
    assert r.status_code == 400 and "lifecycleNotificationUrl" in r.json()["error"]["message"]
    assert _subscribe(graph, receiver, resource, minutes=4400, lifecycleNotificationUrl=receiver.url("lc")).status_code == 400
    sub = _ok(_subscribe(graph, receiver, resource, minutes=4300, lifecycleNotificationUrl=receiver.url("lc")))
    assert sub["lifecycleNotificationUrl"] == receiver.url("lc")
    short = _ok(_subscribe(graph, receiver, f"/teams/{team}/channels", minutes=55))
    r = graph.patch(f"subscriptions/{short['id']}", json={"expirationDateTime": _in(180)})
    assert r.status_code == 400  # renewing past an hour needs the lifecycle URL too


def test_one_per_app_per_resource_and_unknown_targets(graph: EmulatorClient, receiver: Receiver) -> None:
    _, team, channel = _setup(graph)
    resource = f"/teams/{team}/channels/{channel}/messages"
    _ok(_subscribe(graph, receiver, resource, change_type="created"))
    assert _subscribe(graph, receiver, resource, change_type="created").status_code == 409  # shared duplicate rule
    second = _subscribe(graph, receiver, resource, change_type="updated")
    assert second.status_code == 403 and "Maximum number of subscriptions" in second.json()["error"]["message"]
    assert _subscribe(graph, receiver, f"/teams/{team}/channels/19:nope@thread.tacv2/messages").status_code == 404
    assert _subscribe(graph, receiver, "/chats/19:nope@thread.v2/messages").status_code == 404
    assert _subscribe(graph, receiver, f"/teams/{team}", change_type="created").status_code == 400


@pytest.mark.parametrize("emulator_config", [{"teams_subscription_pool": 2, "teams_subscriptions_per_user": 1}],
                         indirect=True)
def test_tenant_pool_and_per_user_quota(graph: EmulatorClient, receiver: Receiver) -> None:
    users, _, _ = _setup(graph)
    _ok(_subscribe(graph, receiver, f"/users/{users[0]['userPrincipalName']}/chats/getAllMessages"))
    r = _subscribe(graph, receiver, f"/users/{users[0]['id']}/chats", change_type="created")
    assert r.status_code == 403 and "per user" in r.json()["error"]["message"]
    _ok(_subscribe(graph, receiver, "/teams/getAllChannels"))
    r = _subscribe(graph, receiver, "/teams")
    assert r.status_code == 403 and "per tenant" in r.json()["error"]["message"]
    assert _subscribe(graph, receiver, "/users/nobody@nowhere/chats/getAllMessages").status_code == 404


def test_model_rules_and_tenant_wide_paths(graph: EmulatorClient, receiver: Receiver) -> None:
    users, team, channel = _setup(graph)
    assert _subscribe(graph, receiver, "/teams/getAllMessages?model=C").status_code == 400
    assert _subscribe(graph, receiver, f"/users/{users[0]['id']}/chats/getAllMessages?model=A").status_code == 400
    all_messages = _ok(_subscribe(graph, receiver, "/teams/getAllMessages?model=A"))
    assert all_messages["resource"] == "/teams/getAllMessages?model=A"
    _ok(_subscribe(graph, receiver, f"/users/{users[1]['id']}/chats/getAllMessages?model=B", change_type="created"))
    _ok(_subscribe(graph, receiver, "/chats/getAllMembers", change_type="created,deleted"))
    _ok(_subscribe(graph, receiver, "/teams/getAllMembers", change_type="created"))
    base = f"teams/{team}/channels/{quote(channel, safe='')}/messages"
    root = _say(graph, base, users[0]["id"], "tenant-wide")
    chat = graph.post("chats", json={"chatType": "oneOnOne", "members": [
        {"roles": ["owner"], "user@odata.bind": f"users('{u['id']}')"} for u in users[:2]]}).json()
    message = _say(graph, f"chats/{quote(chat['id'], safe='')}/messages", users[0]["id"], "dm")
    graph.post(f"teams/{team}/members", json={"roles": [], "user@odata.bind": f"users('{users[3]['id']}')"})
    # ... and the member added to the team posts a system message in General, which getAllMessages hears too
    items = receiver.wait_items(6)
    assert graph.admin("POST", "delivery/wait", json={"timeoutSeconds": 10}).json()["idle"]
    assert len(receiver.items()) == 6
    resources = {i["resource"] for i in items}
    assert sum(1 for r in resources if r.startswith(f"teams('{team}')/channels('{channel}')/messages(")) == 2
    assert f"teams('{team}')/channels('{channel}')/messages('{root['id']}')" in resources
    assert f"chats('{chat['id']}')/messages('{message['id']}')" in resources
    assert sum(1 for r in resources if r.startswith(f"chats('{chat['id']}')/members(")) == 2
    assert any(r.startswith(f"teams('{team}')/members(") for r in resources)


def test_chat_subscriptions(graph: EmulatorClient, receiver: Receiver) -> None:
    users = _seed(graph)
    _ok(_subscribe(graph, receiver, "/chats", change_type="created,updated"))
    _ok(_subscribe(graph, receiver, f"/users/{users[2]['id']}/chats", change_type="created"))
    chat = graph.post("chats", json={"chatType": "group", "topic": "T", "members": [
        {"roles": ["owner"], "user@odata.bind": f"users('{u['id']}')"} for u in users[:3]]}).json()
    items = receiver.wait_items(2)
    assert all(i["resource"] == f"chats('{chat['id']}')" and i["changeType"] == "created" for i in items)
    assert items[0]["resourceData"]["@odata.type"] == "#microsoft.graph.chat"
    _ok(_subscribe(graph, receiver, f"/chats/{chat['id']}", change_type="updated"))
    graph.patch(f"chats/{quote(chat['id'], safe='')}", json={"topic": "U"})
    items = receiver.wait_items(4)
    assert sorted(i["changeType"] for i in items[2:]) == ["updated", "updated"]


def test_permissions_per_path(graph: EmulatorClient, receiver: Receiver) -> None:
    _, team, channel = _setup(graph)
    app = graph.admin("POST", "apps", json={"displayName": "chan", "roles": ["Channel.ReadBasic.All"]}).json()
    token = graph.session.post(f"{graph.info['authority']}/oauth2/v2.0/token", data={
        "client_id": app["clientId"], "client_secret": app["secret"], "grant_type": "client_credentials",
        "scope": "https://graph.microsoft.com/.default"}, timeout=10).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    def sub(resource: str) -> int:
        return graph.post("subscriptions", auth=False, headers=headers, json={
            "resource": resource, "changeType": "created", "notificationUrl": receiver.url("hook"),
            "expirationDateTime": _in(50)}).status_code
    assert sub(f"/teams/{team}/channels") == 201
    assert sub(f"/teams/{team}/channels/{channel}/messages") == 403
    assert sub("/teams/getAllMessages") == 403


def test_team_and_channel_lifecycle_notifications(graph: EmulatorClient, receiver: Receiver) -> None:
    users = _seed(graph)
    _ok(_subscribe(graph, receiver, "/teams"))
    _ok(_subscribe(graph, receiver, "/teams/getAllChannels"))
    team = _team(graph, users[0])
    graph.patch(f"teams/{team}", json={"description": "new"})
    items = receiver.wait_items(3)
    general = _channel(graph, team)["id"]
    assert sorted((i["changeType"], i["resource"]) for i in items) == [
        ("created", f"teams('{team}')"), ("created", f"teams('{team}')/channels('{general}')"),
        ("updated", f"teams('{team}')")]
    assert {i["resourceData"]["@odata.type"] for i in items} == {"#microsoft.graph.team", "#microsoft.graph.channel"}
    assert graph.delete(f"groups/{team}").status_code == 204
    items = receiver.wait_items(5)
    assert sorted((i["changeType"], i["resource"]) for i in items[3:]) == [
        ("deleted", f"teams('{team}')"), ("deleted", f"teams('{team}')/channels('{general}')")]


def test_search_and_mention_filters_narrow_message_subscriptions(graph: EmulatorClient, receiver: Receiver) -> None:
    users, team, channel = _setup(graph)
    resource = f"/teams/{team}/channels/{channel}/messages"
    assert _subscribe(graph, receiver, f"{resource}?$filter=subject eq 'x'").status_code == 400
    assert _subscribe(graph, receiver, "/teams/getAllChannels?$search=x").status_code == 400
    _ok(_subscribe(graph, receiver, f"{resource}?$filter=mentions/any(u: u/mentioned/user/id eq '{users[1]['id']}')",
                   change_type="created"))
    chat = graph.post("chats", json={"chatType": "oneOnOne", "members": [
        {"roles": ["owner"], "user@odata.bind": f"users('{u['id']}')"} for u in users[:2]]}).json()
    _ok(_subscribe(graph, receiver, f"/chats/{chat['id']}/messages?$search=\"urgent\"", change_type="created"))
    base = f"teams/{team}/channels/{quote(channel, safe='')}/messages"
    _say(graph, base, users[0]["id"], "nobody mentioned")
    hit = _say(graph, base, users[0]["id"], f"<at id=\"0\">{users[1]['displayName']}</at> look", mentions=[
        {"id": 0, "mentionText": users[1]["displayName"], "mentioned": {"user": {"id": users[1]["id"]}}}])
    chat_path = f"chats/{quote(chat['id'], safe='')}/messages"
    _say(graph, chat_path, users[0]["id"], "lunch?")
    urgent = _say(graph, chat_path, users[0]["id"], "This is URGENT")
    items = receiver.wait_items(2)
    assert sorted(i["resourceData"]["id"] for i in items) == sorted([hit["id"], urgent["id"]])
    assert graph.admin("POST", "delivery/wait", json={"timeoutSeconds": 10}).json()["idle"]
    assert len(receiver.items()) == 2


@pytest.mark.parametrize("emulator_config", [{"teams_evaluation_cap": 3}], indirect=True)
def test_legacy_evaluation_mode_caps_notifications_and_exports(graph: EmulatorClient, receiver: Receiver) -> None:
    users, team, channel = _setup(graph)
    evaluation = _ok(_subscribe(graph, receiver, "/teams/getAllMessages", change_type="created"))
    billed = _ok(_subscribe(graph, receiver, "/teams/getAllMessages?model=B", change_type="created,updated"))
    base = f"teams/{team}/channels/{quote(channel, safe='')}/messages"
    for i in range(5):
        _say(graph, base, users[0]["id"], f"m{i}")
    receiver.wait_items(8)
    assert graph.admin("POST", "delivery/wait", json={"timeoutSeconds": 10}).json()["idle"]
    by_sub = [i["subscriptionId"] for i in receiver.items()]
    assert (by_sub.count(evaluation["id"]), by_sub.count(billed["id"])) == (3, 5)
    r = graph.get(f"teams/{team}/channels/getAllMessages")
    assert r.status_code == 402 and r.json()["error"]["code"] == "PaymentRequired"
    assert len(graph.get(f"teams/{team}/channels/getAllMessages", params={"model": "A"}).json()["value"]) == 5
    assert graph.get(f"teams/{team}/channels/getAllMessages", params={"model": "C"}).status_code == 400


def test_unmetered_by_default(graph: EmulatorClient) -> None:
    users, team, channel = _setup(graph)
    base = f"teams/{team}/channels/{quote(channel, safe='')}/messages"
    for i in range(3):
        _say(graph, base, users[0]["id"], f"m{i}")
    for _ in range(3):
        assert graph.get(f"teams/{team}/channels/getAllMessages").status_code == 200


def test_every_subscribable_path_has_its_delegated_entry() -> None:
    from syncer.emulator.families.teams.subscribable import DELEGATED_SCOPES, SUBSCRIBABLE

    assert {spec.shapes[0] for spec in SUBSCRIBABLE} == set(DELEGATED_SCOPES)
    assert all(spec.max_minutes == spec.max_minutes_rich == 4_320 for spec in SUBSCRIBABLE)


def test_a_finished_team_creation_can_be_subscribed_to_at_once(graph: EmulatorClient, receiver: Receiver) -> None:
    users = _seed(graph)
    r = graph.post("teams", json={"template@odata.bind": "https://graph.microsoft.com/v1.0/teamsTemplates('standard')",
                                  "displayName": "Quiet", "members": [
                                      {"roles": ["owner"], "user@odata.bind": f"users('{users[0]['id']}')"}]})
    team_id = r.headers["Content-Location"].split("'")[1]
    assert _subscribe(graph, receiver, f"/teams/{team_id}", change_type="updated").status_code == 404  # not yet
    graph.admin("POST", "clock", json={"advance": 5})
    graph._token = None
    # no Teams call has looked since the operation finished: subscribing must still find the team
    _ok(_subscribe(graph, receiver, f"/teams/{team_id}", change_type="updated"))


def test_shared_channel_messages_raise_no_notifications(graph: EmulatorClient, receiver: Receiver) -> None:
    users, team, channel = _setup(graph)
    shared = graph.post(f"teams/{team}/channels", json={"displayName": "Partners", "membershipType": "shared", "members": [
        {"roles": ["owner"], "user@odata.bind": f"users('{users[0]['id']}')"}]}).json()
    _ok(_subscribe(graph, receiver, f"/teams/{team}/channels/{shared['id']}/messages", change_type="created"))
    _ok(_subscribe(graph, receiver, "/teams/getAllMessages?model=B", change_type="created"))
    _say(graph, f"teams/{team}/channels/{quote(shared['id'], safe='')}/messages", users[0]["id"], "quiet")
    loud = _say(graph, f"teams/{team}/channels/{quote(channel, safe='')}/messages", users[0]["id"], "loud")
    items = receiver.wait_items(1)
    assert graph.admin("POST", "delivery/wait", json={"timeoutSeconds": 10}).json()["idle"]
    assert [i["resourceData"]["id"] for i in receiver.items()] == [loud["id"]]
    assert items
