"""Microsoft Teams in the emulator over real HTTPS: the model, the read API, the admin API posting as a user and
Graph's writes (https://learn.microsoft.com/graph/teams-concept-overview)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from emulator_fixtures import EmulatorClient

from syncer.emulator import EmulatorConfig


def _seed(graph: EmulatorClient, users: int = 6) -> list[dict[str, Any]]:
    r = graph.admin("POST", "seed", json={"users": users})
    assert r.status_code == 200, r.text
    return graph.get("users", params={"$top": users}).json()["value"]


def _team(graph: EmulatorClient, owner: dict[str, Any], *others: dict[str, Any], name: str = "Project X") -> str:
    """POST /teams, then wait (emulator clock) for the operation; returns the team id."""
    members = [{"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
                "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{owner['id']}')"}]
    members += [{"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": [],
                 "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{u['id']}')"} for u in others]
    r = graph.post("teams", json={"template@odata.bind": "https://graph.microsoft.com/v1.0/teamsTemplates('standard')",
                                  "displayName": name, "description": "d", "members": members})
    assert r.status_code == 202, r.text
    assert r.content == b""
    m = re.fullmatch(r"/teams\('([^']+)'\)/operations\('([^']+)'\)", r.headers["Location"])
    assert m is not None, r.headers["Location"]
    assert r.headers["Content-Location"] == f"/teams('{m.group(1)}')"
    graph.admin("POST", "clock", json={"advance": 5})
    op = graph.get(f"teams/{m.group(1)}/operations/{m.group(2)}").json()
    assert op["status"] == "succeeded" and op["targetResourceId"] == m.group(1)
    return m.group(1)


def _channel(graph: EmulatorClient, team: str, name: str = "General") -> dict[str, Any]:
    channels = graph.get(f"teams/{team}/channels").json()["value"]
    return next(c for c in channels if c["displayName"] == name)


def _say(graph: EmulatorClient, path: str, sender: str, text: str, **extra: Any) -> dict[str, Any]:
    r = graph.admin("POST", path, json={"from": sender, "body": {"contentType": "html", "content": text}, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def _enc(channel_id: str) -> str:
    return quote(channel_id, safe="")


def test_create_team_is_asynchronous_and_the_team_is_its_group(graph: EmulatorClient) -> None:
    users = _seed(graph)
    graph.admin("POST", "clock", json={"freeze": True})
    members = [{"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
                "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{users[0]['id']}')"}]
    r = graph.post("teams", json={"template@odata.bind": "https://graph.microsoft.com/v1.0/teamsTemplates('standard')",
                                  "displayName": "Async", "members": members})
    assert r.status_code == 202
    team_id, op_id = re.findall(r"'([^']+)'", r.headers["Location"])
    assert graph.get(f"teams/{team_id}/operations/{op_id}").json()["status"] == "notStarted"
    assert graph.get(f"teams/{team_id}").status_code == 404  # not there before the operation succeeded
    graph.admin("POST", "clock", json={"advance": 0.5})
    assert graph.get(f"teams/{team_id}/operations/{op_id}").json()["status"] == "inProgress"
    graph.admin("POST", "clock", json={"advance": 1})
    assert graph.get(f"teams/{team_id}/operations/{op_id}").json()["status"] == "succeeded"
    team = graph.get(f"teams/{team_id}").json()
    assert team["displayName"] == "Async" and team["id"] == team_id
    group = graph.get(f"groups/{team_id}").json()
    assert group["groupTypes"] == ["Unified"] and group["displayName"] == "Async"
    listed = graph.get("teams").json()["value"]
    assert [t["id"] for t in listed] == [team_id]
    assert listed[0]["webUrl"] is None and listed[0]["visibility"] == "private"  # only four properties filled
    general = _channel(graph, team_id)
    assert re.fullmatch(r"19:[0-9a-f]{32}@thread\.tacv2", general["id"])
    assert general["membershipType"] == "standard"


def test_app_created_team_needs_an_owner(graph: EmulatorClient) -> None:
    users = _seed(graph)
    r = graph.post("teams", json={"template@odata.bind": "https://graph.microsoft.com/v1.0/teamsTemplates('standard')",
                                  "displayName": "No owner", "members": [
                                      {"roles": [], "user@odata.bind": f"users('{users[1]['id']}')"}]})
    assert r.status_code == 400


def test_channels_members_and_their_rules(graph: EmulatorClient) -> None:
    users = _seed(graph)
    team = _team(graph, users[0], users[1])
    members = graph.get(f"teams/{team}/members").json()["value"]
    assert {m["userId"]: m["roles"] for m in members} == {users[0]["id"]: ["owner"], users[1]["id"]: []}
    assert all(m["@odata.type"] == "#microsoft.graph.aadUserConversationMember" for m in members)
    r = graph.post(f"teams/{team}/members", json={"@odata.type": "#microsoft.graph.aadUserConversationMember",
                                                  "roles": [], "user@odata.bind": f"users('{users[2]['id']}')"})
    assert r.status_code == 201, r.text
    added = r.json()
    group_members = graph.get(f"groups/{team}/members").json()["value"]
    assert users[2]["id"] in {m["id"] for m in group_members}  # a team member is a member of the group
    owners = graph.get(f"teams/{team}/members", params={"$filter": "roles/any(r:r eq 'owner')"}).json()["value"]
    assert [m["userId"] for m in owners] == [users[0]["id"]]
    one = graph.get(f"teams/{team}/members", params={
        "$filter": f"(microsoft.graph.aadUserConversationMember/userId eq '{users[2]['id']}')"}).json()["value"]
    assert [m["id"] for m in one] == [added["id"]]
    assert [t["id"] for t in graph.get(f"users/{users[2]['userPrincipalName']}/joinedTeams").json()["value"]] == [team]
    assert graph.get(f"users/{users[3]['id']}/joinedTeams").json()["value"] == []
    assert len(graph.get(f"teams/{team}/allChannels").json()["value"]) == 1
    assert graph.get(f"teams/{team}/incomingChannels").json()["value"] == []
    assert graph.delete(f"teams/{team}/members/{added['id']}").status_code == 204
    assert len(graph.get(f"teams/{team}/members").json()["value"]) == 2
    assert graph.post(f"teams/{team}/members", json={"roles": [], "user@odata.bind": "users('nobody')"}).status_code == 404
    r = graph.post(f"teams/{team}/channels", json={"displayName": "Leads", "membershipType": "private", "members": [
        {"roles": ["owner"], "user@odata.bind": f"users('{users[0]['id']}')"}]})
    assert r.status_code == 201, r.text
    private = r.json()
    assert private["membershipType"] == "private"
    assert [m["userId"] for m in graph.get(f"teams/{team}/channels/{_enc(private['id'])}/members").json()["value"]] \
        == [users[0]["id"]]
    assert graph.post(f"teams/{team}/channels", json={"displayName": "x" * 51}).status_code == 400
    assert graph.post(f"teams/{team}/channels", json={"displayName": "Shared", "membershipType": "shared", "members": [
        {"roles": ["owner"], "user@odata.bind": f"users('{u['id']}')"} for u in users[:2]]}).status_code == 400
    assert graph.patch(f"teams/{team}/channels/{_enc(private['id'])}", json={"description": "new"}).status_code == 204
    assert graph.get(f"teams/{team}/channels/{_enc(private['id'])}").json()["description"] == "new"
    assert graph.delete(f"teams/{team}/channels/{_enc(private['id'])}").status_code == 204
    assert graph.get(f"teams/{team}/channels/{_enc(private['id'])}").status_code == 404


def test_channel_messages_replies_edits_and_soft_deletes(graph: EmulatorClient) -> None:
    users = _seed(graph)
    team = _team(graph, users[0], users[1])
    channel = _channel(graph, team)["id"]
    base = f"teams/{team}/channels/{_enc(channel)}/messages"
    root = _say(graph, base, users[0]["userPrincipalName"], "<p>Hello</p>", subject="Topic")
    assert re.fullmatch(r"\d{13}", root["id"]) and root["etag"] == root["id"]
    assert root["from"]["user"]["id"] == users[0]["id"] and root["replyToId"] is None
    assert root["channelIdentity"] == {"teamId": team, "channelId": channel} and root["chatId"] is None
    reply = _say(graph, f"{base}/{root['id']}/replies", users[1]["id"], "Reply")
    assert reply["replyToId"] == root["id"] and int(reply["id"]) > int(root["id"])
    listed = graph.get(base).json()
    assert [m["id"] for m in listed["value"]] == [root["id"]]  # roots only
    expanded = graph.get(base, params={"$expand": "replies"}).json()["value"][0]
    assert [r["id"] for r in expanded["replies"]] == [reply["id"]]
    assert graph.get(f"{base}/{root['id']}/replies").json()["value"][0]["body"]["content"] == "Reply"
    assert graph.get(f"{base}/{root['id']}/replies/{reply['id']}").json()["id"] == reply["id"]
    r = graph.admin("PATCH", f"{base}/{root['id']}", json={"body": {"content": "Hello again"}})
    assert r.status_code == 200, r.text
    edited = graph.get(f"{base}/{root['id']}").json()
    assert edited["body"]["content"] == "Hello again" and edited["lastEditedDateTime"] is not None
    assert int(edited["etag"]) > int(root["etag"])
    assert graph.admin("DELETE", f"{base}/{root['id']}/replies/{reply['id']}").status_code == 204
    gone = graph.get(f"{base}/{root['id']}/replies/{reply['id']}").json()
    assert gone["deletedDateTime"] is not None and gone["body"]["content"] == ""
    assert "@emulator.body" not in gone
    assert graph.admin("POST", f"{base}/{root['id']}/replies/{reply['id']}/undoSoftDelete").status_code == 204
    back = graph.get(f"{base}/{root['id']}/replies/{reply['id']}").json()
    assert back["deletedDateTime"] is None and back["body"]["content"] == "Reply"


def test_message_list_limits(graph: EmulatorClient) -> None:
    users = _seed(graph)
    team = _team(graph, users[0])
    base = f"teams/{team}/channels/{_enc(_channel(graph, team)['id'])}/messages"
    for i in range(23):
        _say(graph, base, users[0]["id"], f"m{i}")
    first = graph.get(base).json()
    assert len(first["value"]) == 20  # default page
    second = graph.get(first["@odata.nextLink"]).json()
    assert len(second["value"]) == 3 and "@odata.nextLink" not in second
    assert len({m["id"] for m in first["value"] + second["value"]}) == 23
    assert graph.get(base, params={"$top": "51"}).status_code == 400
    assert len(graph.get(base, params={"$top": "50"}).json()["value"]) == 23
    assert graph.get(base, params={"$filter": "subject eq 'x'"}).status_code == 400
    assert graph.get(base, params={"$expand": "hostedContents"}).status_code == 400


def test_app_tokens_may_not_post_or_soft_delete(graph: EmulatorClient) -> None:
    users = _seed(graph)
    team = _team(graph, users[0])
    base = f"teams/{team}/channels/{_enc(_channel(graph, team)['id'])}/messages"
    r = graph.post(base, json={"body": {"content": "hi"}})
    assert r.status_code == 403 and "application-only" in r.json()["error"]["message"]
    root = _say(graph, base, users[0]["id"], "hi")
    refused = graph.post(f"{base}/{root['id']}/softDelete")
    assert refused.status_code == 403 and "application-only" in refused.json()["error"]["message"]


def test_permissions_are_checked_against_the_token(graph: EmulatorClient) -> None:
    users = _seed(graph)
    team = _team(graph, users[0])
    app = graph.admin("POST", "apps", json={"displayName": "basic", "roles": ["Team.ReadBasic.All"]}).json()
    r = graph.session.post(f"{graph.info['authority']}/oauth2/v2.0/token", data={
        "client_id": app["clientId"], "client_secret": app["secret"], "grant_type": "client_credentials",
        "scope": "https://graph.microsoft.com/.default"}, timeout=10)
    headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert graph.get("teams", auth=False, headers=headers).status_code == 200
    denied = graph.get(f"teams/{team}/channels", auth=False, headers=headers)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "Forbidden" and "Channel.ReadBasic.All" in denied.json()["error"]["message"]


def test_chats_members_and_messages(graph: EmulatorClient) -> None:
    users = _seed(graph)
    a, b, c = users[:3]

    def chat(kind: str, *people: dict[str, Any], **extra: Any) -> Any:
        return graph.post("chats", json={"chatType": kind, **extra, "members": [
            {"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
             "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{p['id']}')"} for p in people]})

    r = chat("oneOnOne", a, b)
    assert r.status_code == 201, r.text
    one = r.json()
    assert one["id"] == f"19:{min(a['id'], b['id'])}_{max(a['id'], b['id'])}@unq.gbl.spaces"
    again = chat("oneOnOne", b, a)
    assert again.status_code == 201 and again.json()["id"] == one["id"]  # idempotent
    group = chat("group", a, b, c, topic="Plans").json()
    assert re.fullmatch(r"19:[0-9a-f]{32}@thread\.v2", group["id"]) and group["topic"] == "Plans"
    assert "members" not in group
    _say(graph, f"chats/{_enc(group['id'])}/messages", a["id"], "first")
    second = _say(graph, f"chats/{_enc(group['id'])}/messages", b["id"], "second")
    assert second["chatId"] == group["id"] and second["channelIdentity"] is None
    listed = graph.get(f"chats/{_enc(group['id'])}/messages").json()["value"]
    assert [m["body"]["content"] for m in listed] == ["second", "first"]  # lastModifiedDateTime desc
    assert graph.get(f"chats/{_enc(group['id'])}/messages", params={"$orderby": "createdDateTime asc"}).status_code == 400
    # $filter is ignored unless $orderby names the same property
    future = "2999-01-01T00:00:00Z"
    assert len(graph.get(f"chats/{_enc(group['id'])}/messages",
                         params={"$filter": f"lastModifiedDateTime gt {future}"}).json()["value"]) == 2
    assert graph.get(f"chats/{_enc(group['id'])}/messages", params={
        "$filter": f"lastModifiedDateTime gt {future}", "$orderby": "lastModifiedDateTime desc"}).json()["value"] == []
    mine = graph.get(f"users/{c['userPrincipalName']}/chats", params={"$expand": "members"}).json()["value"]
    assert [x["id"] for x in mine] == [group["id"]] and len(mine[0]["members"]) == 3
    members = graph.get(f"chats/{_enc(group['id'])}/members").json()["value"]
    gone = next(m for m in members if m["userId"] == c["id"])
    assert graph.delete(f"chats/{_enc(group['id'])}/members/{gone['id']}").status_code == 204
    assert graph.get(f"users/{c['id']}/chats").json()["value"] == []
    # removing c posted a system message, an evolvable enum member shown only on request
    everything = graph.get(f"users/{a['id']}/chats/getAllMessages").json()
    assert everything["@odata.count"] == 3
    system = next(m for m in everything["value"] if m["from"] is None)
    assert system["messageType"] == "unknownFutureValue"
    assert system["eventDetail"]["@odata.type"] == "#microsoft.graph.membersDeletedEventMessageDetail"
    assert [m["id"] for m in system["eventDetail"]["members"]] == [c["id"]]
    shown = graph.get(f"chats/{_enc(group['id'])}/messages/{system['id']}",
                      headers={"Prefer": "include-unknown-enum-members"}).json()
    assert shown["messageType"] == "systemEventMessage"
    listed_all = graph.get("chats")  # delegated only
    assert listed_all.status_code == 403 and "application-only" in listed_all.json()["error"]["message"]
    assert graph.patch(f"chats/{_enc(group['id'])}", json={"topic": "New"}).json()["topic"] == "New"
    assert graph.delete(f"chats/{_enc(group['id'])}").status_code == 204
    assert graph.get(f"chats/{_enc(group['id'])}").status_code == 404
    assert [x["id"] for x in graph.get(f"users/{a['id']}/chats").json()["value"]] == [one["id"]]


@pytest.mark.parametrize("users", [5])
def test_seed_creates_teams_channels_members_and_chats(graph: EmulatorClient, users: int) -> None:
    r = graph.admin("POST", "seed", json={"users": users, "teamsPerUser": 1, "chatsPerUser": 1, "contentUsers": 2})
    assert r.status_code == 200, r.text
    teams = graph.get("teams").json()["value"]
    assert len(teams) == 2
    team = teams[0]["id"]
    channels = graph.get(f"teams/{team}/channels").json()["value"]
    assert {c["membershipType"] for c in channels} == {"standard", "private"}
    general = _channel(graph, team)["id"]
    messages = graph.get(f"teams/{team}/channels/{_enc(general)}/messages", params={"$expand": "replies"}).json()
    assert len(messages["value"]) == 2 and all(len(m["replies"]) == 1 for m in messages["value"])
    assert len(graph.get(f"teams/{team}/members").json()["value"]) >= 2
    someone = graph.get("users", params={"$top": 1}).json()["value"][0]["id"]
    assert len(graph.get(f"users/{someone}/chats").json()["value"]) >= 2


def test_a_team_dies_and_comes_back_with_its_group(graph: EmulatorClient) -> None:
    users = _seed(graph)
    team = _team(graph, users[0])
    assert graph.delete(f"groups/{team}").status_code == 204
    assert graph.get(f"teams/{team}").status_code == 404
    assert graph.get("teams").json()["value"] == []
    assert graph.post(f"directory/deletedItems/{team}/restore").status_code in (200, 201)
    assert graph.get(f"teams/{team}").json()["id"] == team
    assert [c["displayName"] for c in graph.get(f"teams/{team}/channels").json()["value"]] == ["General"]


def test_system_messages_for_membership_and_new_channels(graph: EmulatorClient) -> None:
    users = _seed(graph)
    team = _team(graph, users[0])
    general = f"teams/{team}/channels/{_enc(_channel(graph, team)['id'])}/messages"
    assert graph.get(general).json()["value"] == []  # creation itself posts nothing
    graph.post(f"teams/{team}/members", json={"roles": [], "user@odata.bind": f"users('{users[1]['id']}')"})
    graph.post(f"teams/{team}/channels", json={"displayName": "Ops"})
    prefer = {"Prefer": "include-unknown-enum-members"}
    listed = graph.get(general, headers=prefer).json()["value"]
    assert [m["eventDetail"]["@odata.type"] for m in listed] == [
        "#microsoft.graph.channelAddedEventMessageDetail", "#microsoft.graph.membersAddedEventMessageDetail"]
    assert all(m["messageType"] == "systemEventMessage" and m["from"] is None for m in listed)
    assert listed[0]["eventDetail"]["channelDisplayName"] == "Ops"
    items, _ = graph.delta_all(f"{general}/delta")
    assert {m["messageType"] for m in items} == {"unknownFutureValue"}
    assert {m["messageType"] for m in graph.delta_all(f"{general}/delta", headers=prefer)[0]} == {"systemEventMessage"}


@pytest.mark.parametrize("emulator_config", [EmulatorConfig(seed=5, teams_system_messages=False)])
def test_system_messages_can_be_turned_off(graph: EmulatorClient) -> None:
    users = _seed(graph)
    team = _team(graph, users[0])
    graph.post(f"teams/{team}/members", json={"roles": [], "user@odata.bind": f"users('{users[1]['id']}')"})
    assert graph.get(f"teams/{team}/channels/{_enc(_channel(graph, team)['id'])}/messages").json()["value"] == []


def test_admin_api_refuses_what_a_user_could_not_do(graph: EmulatorClient) -> None:
    users = _seed(graph)
    team = _team(graph, users[0])
    base = f"teams/{team}/channels/{_enc(_channel(graph, team)['id'])}/messages"
    assert graph.admin("POST", base, json={"body": {"content": "x"}}).status_code == 400  # no from
    assert graph.admin("POST", base, json={"from": "ghost@nowhere", "body": {"content": "x"}}).status_code == 404
    assert graph.admin("POST", base, json={"from": users[0]["id"]}).status_code == 400  # no body
    assert graph.admin("POST", base, json={"from": users[0]["id"], "body": {"content": "x"},
                                           "createdDateTime": "2020-01-01T00:00:00Z"}).status_code == 400
    assert graph.admin("POST", f"teams/{team}/channels/19:nope@thread.tacv2/messages",
                       json={"from": users[0]["id"], "body": {"content": "x"}}).status_code == 404
    root = _say(graph, base, users[0]["id"], "x")
    assert graph.admin("PATCH", f"{base}/{root['id']}", json={"chatId": "x"}).status_code == 400
    assert graph.admin("PATCH", f"{base}/1", json={"body": {"content": "y"}}).status_code == 404
    assert graph.admin("DELETE", f"{base}/{root['id']}").status_code == 204
    assert graph.admin("PATCH", f"{base}/{root['id']}", json={"body": {"content": "y"}}).status_code == 400
    # `from` may also be a Graph identity set
    by_object = _say(graph, base, users[1]["userPrincipalName"], "z", **{"from": {"user": {"id": users[1]["id"]}}})
    assert by_object["from"]["user"]["displayName"] == users[1]["displayName"]
