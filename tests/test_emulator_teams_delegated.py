"""Teams for a signed-in user (a delegated token): the reads and subscriptions Graph serves a user, only in the teams,
channels and chats the user is a member of; application-only paths refused; no Teams for personal accounts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from emulator_fixtures import EmulatorClient

from syncer.emulator import EmulatorConfig
from syncer.emulator.families.teams import subscribable
from syncer.graph.times import parse_datetime

SCOPES = "ChannelMessage.Read.All Chat.Read Channel.ReadBasic.All"


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return EmulatorConfig(seed=5, personal_users=("pat@outlook.com",))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _world(graph: EmulatorClient) -> dict[str, Any]:
    """Ada owns a team with Alan; Grace is in neither. A private channel holds Alan only; Ada and Alan chat."""
    ada, alan, grace = (graph.create_user(n) for n in ("ada", "alan", "grace"))
    people = [{"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"] if u is ada else [],
               "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{u['id']}')"} for u in (ada, alan)]
    r = graph.post("teams", json={"template@odata.bind": "https://graph.microsoft.com/v1.0/teamsTemplates('standard')",
                                  "displayName": "Project X", "members": people})
    assert r.status_code == 202, r.text
    team = r.headers["Content-Location"].split("'")[1]
    graph.admin("POST", "clock", json={"advance": 5})
    graph._token = None
    general = graph.get(f"teams/{team}/channels").json()["value"][0]["id"]
    private = graph.post(f"teams/{team}/channels", json={
        "displayName": "Leads", "membershipType": "private",
        "members": [{"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
                     "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{alan['id']}')"}]})
    assert private.status_code == 201, private.text
    chat = graph.post("chats", json={"chatType": "oneOnOne", "members": [
        {"roles": ["owner"], "user@odata.bind": f"users('{u['id']}')"} for u in (ada, alan)]}).json()["id"]
    graph.admin("POST", f"teams/{team}/channels/{quote(general, safe='')}/messages",
                json={"from": alan["id"], "body": {"content": "hello"}})
    graph.admin("POST", f"chats/{quote(chat, safe='')}/messages", json={"from": alan["id"], "body": {"content": "hi"}})
    return {"ada": ada, "alan": alan, "grace": grace, "team": team, "general": general,
            "private": private.json()["id"], "chat": chat}


def test_a_member_reads_her_channels_and_chats_and_nothing_else(graph: EmulatorClient) -> None:
    w = _world(graph)
    ada = bearer(graph.user_token(w["ada"]["userPrincipalName"], SCOPES))
    grace = bearer(graph.user_token(w["grace"]["userPrincipalName"], SCOPES))
    team, general, chat = w["team"], quote(w["general"], safe=""), quote(w["chat"], safe="")
    channels = graph.get(f"teams/{team}/channels", headers=ada)
    assert channels.status_code == 200, channels.text
    assert [c["displayName"] for c in channels.json()["value"]] == ["General"], "Leads is private to Alan"
    for path in (f"teams/{team}/channels/{general}/messages", f"teams/{team}/channels/{general}/messages/delta",
                 f"chats/{chat}/messages"):
        assert graph.get(path, headers=ada).status_code == 200, path
        assert graph.get(path, headers=grace).status_code == 403, path  # not a member
    assert graph.get(f"teams/{team}/channels/{quote(w['private'], safe='')}/messages", headers=ada).status_code == 403
    # The per-user chats delta serves applications only.
    r = graph.get("me/chats/getAllMessages/delta", headers=ada)
    assert r.status_code == 412 and r.json()["error"]["code"] == "PreconditionFailed", r.text
    # A token without the permission the read needs.
    mail_only = bearer(graph.user_token(w["ada"]["userPrincipalName"], "Mail.Read"))
    assert graph.get(f"chats/{chat}/messages", headers=mail_only).status_code == 403


def _subscribe(graph: EmulatorClient, headers: dict[str, str], resource: str) -> Any:
    now = parse_datetime(graph.admin("GET", "clock").json()["now"])
    expires = (now + timedelta(minutes=50)).isoformat().replace("+00:00", "Z")
    return graph.post("subscriptions", headers=headers, json={
        "changeType": "created,updated", "notificationUrl": "https://example.invalid/n", "resource": resource,
        "expirationDateTime": expires, "clientState": "x"})


def test_delegated_subscriptions_follow_the_per_path_table(graph: EmulatorClient) -> None:
    w = _world(graph)
    ada = bearer(graph.user_token(w["ada"]["userPrincipalName"], SCOPES))
    team, general = w["team"], w["general"]
    # Application-only paths refuse a user; so do channels and chats she is not a member of, and another user's chats.
    for resource in ("teams/getAllMessages", "chats/getAllMessages", "teams", "chats",
                     f"teams/{team}/channels/{w['private']}/messages", f"users/{w['alan']['id']}/chats/getAllMessages"):
        r = _subscribe(graph, ada, resource)
        assert r.status_code == 403, (resource, r.text)
        why = "not a member" if "/channels/" in resource else "Access denied"
        assert why in r.json()["error"]["message"], (resource, r.text)
    # A permission of another path does not do (Chat.Read is not ChannelMessage.Read.All).
    chat_only = bearer(graph.user_token(w["ada"]["userPrincipalName"], "Chat.Read"))
    assert _subscribe(graph, chat_only, f"teams/{team}/channels/{general}/messages").status_code == 403
    assert subscribable.DELEGATED_SCOPES[("teams", "getallmessages")] == ()


def test_personal_accounts_have_no_teams(graph: EmulatorClient, emulator_info: dict[str, Any]) -> None:
    w = _world(graph)
    pat = bearer(graph.user_token("pat@outlook.com", SCOPES, authority=f"{emulator_info['base_url']}/consumers"))
    assert graph.get(f"chats/{quote(w['chat'], safe='')}/messages", headers=pat).status_code == 403
    assert _subscribe(graph, pat, "me/chats/getAllMessages").status_code == 403
