"""Teams for a signed-in work account (issue 14, delegated): what validation accepts and refuses, and a user's channel
messages and chat messages mirrored end to end (`syncer login`, reconcile, `syncer sync`, changes, the mirror equal to
the emulator's truth), on SQLite and PostgreSQL, against the emulator over real HTTPS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from emulator_fixtures import EmulatorClient
from test_delegated_e2e import cli, mirror_matches, receiver, wait_for
from test_spec_delegated import load, problems
from test_teams_sync import _team
from webhook_receiver import Receiver

from syncer import database
from syncer.spec import load_spec

__all__ = ["receiver"]  # the fixture, imported

TEAMS = """\
- name: teams-{n}
  tenant: {tenant}
  resource: '{resource}'
  {extra}
  lifetime: 55m
  mirror: {{table: t{n}}}
"""


def _decl(tenant: str, *resources: str, extra: str = "") -> str:
    """One declaration per resource; a {team} placeholder gets for_each over one team unless *extra* says otherwise."""
    def more(resource: str) -> str:
        return extra or ("for_each: {teams: [t1]}" if "{team}" in resource else "change_types: [created]")
    return "".join(TEAMS.format(n=n, tenant=tenant, resource=r, extra=more(r)) for n, r in enumerate(resources))


WORK_OK = ("chats/19:abc@thread.v2/messages", "teams/{team}/channels", "teams/{team}/channels/{channel}/messages")
CHANNELS = WORK_OK[2]


def test_a_work_account_declares_its_channels_and_chats(tmp_path: Path) -> None:
    spec = load(tmp_path, _decl("adele", *WORK_OK))
    assert [s.resource for s in spec.subscriptions] == list(WORK_OK)
    assert all(s.tenant == "adele" for s in spec.subscriptions)


@pytest.mark.parametrize("resource", ["teams", "chats", "teams/getAllMessages", "chats/getAllMessages",
                                      "teams/getAllChannels", "teams/getAllMembers", "me/chats/getAllMessages"])
def test_application_only_teams_paths_are_refused_for_a_user(tmp_path: Path, resource: str) -> None:
    errors = [e for e in problems(tmp_path, _decl("adele", resource)) if e.location.path == "subscriptions[0].resource"]
    assert errors, resource
    text = str(errors[0])
    assert "a Teams path a signed-in user may declare" in text and "application permissions only" in text, text
    assert "chats/{chat}/messages" in text  # what may be declared instead
    if resource == "me/chats/getAllMessages":
        assert "its delta serves apps only" in text


def test_all_teams_is_refused_for_a_user(tmp_path: Path) -> None:
    errors = problems(tmp_path, _decl("adele", CHANNELS, extra="for_each: {teams: all}"))
    (error,) = [e for e in errors if e.location.path == "subscriptions[0].for_each"]
    assert "teams: [TEAM-ID, ...]" in str(error) and "member of" in str(error)


@pytest.mark.parametrize("resource", [*WORK_OK, "me/chats/getAllMessages", "teams/{team}"])
def test_a_personal_account_declaring_a_teams_type_is_refused(tmp_path: Path, resource: str) -> None:
    errors = [e for e in problems(tmp_path, _decl("pat", resource))
              if e.location.path == "subscriptions[0].resource"]
    assert errors and "Graph grants no personal-account permission" in str(errors[0]), resource


# --- end to end ------------------------------------------------------------------------------------------------


def write_spec(tmp_path: Path, info: dict[str, Any], database_url: str, receiver: Receiver, upn: str, *, team: str,
               chat: str) -> Path:
    info_file = tmp_path / "emulator.json"
    info_file.write_text(json.dumps(info))
    path = tmp_path / "subscriptions.yaml"
    path.write_text(f"""
version: 1
graph: {{cloud: emulator, emulator_info: {info_file}}}
tenants:
  - {{name: me, auth: delegated, authority: organizations, account: {upn}, token_cache: {tmp_path}/config/me.json}}
receiver:
  notification_url: "{receiver.url("notifications")}"
  lifecycle_url: "{receiver.url("lifecycle")}"
database: {{url: "{database_url}"}}
subscriptions:
  - name: channel-messages
    resource: teams/{{team}}/channels/{{channel}}/messages
    for_each: {{teams: [{team}]}}
    lifetime: 1d
    mirror:
      table: my_channel_messages
      columns: [{{field: body.content, column: body_text}}]
  - name: chat
    resource: "chats/{chat}/messages"
    lifetime: 1d
    mirror:
      table: my_chat_messages
      columns: [{{field: body.content, column: body_text}}]
""")
    return path


def _rows(spec_path: Path, table: str) -> dict[str, dict[str, Any]]:
    engine = database.create_engine(load_spec(spec_path).resolve_emulator().database_url)
    try:
        with engine.connect() as connection:
            found = connection.execute(sa.text(
                f"SELECT id, channel_id, chat_id, reply_to_id, from_user_id, body_text, deleted_date_time, _removed_reason "
                f"FROM {table}")).mappings()
            return {r["id"]: dict(r) for r in found}
    finally:
        engine.dispose()


def test_a_users_channel_and_chat_messages_are_mirrored(
    tmp_path: Path, emulator_info: dict[str, Any], graph: EmulatorClient, database_url: str, receiver: Receiver
) -> None:
    ada, alan = graph.create_user("ada"), graph.create_user("alan")
    team = _team(graph, ada["id"], alan["id"])
    general = graph.get(f"teams/{team}/channels").json()["value"][0]["id"]
    leads = graph.post(f"teams/{team}/channels", json={  # private to Alan: not Ada's to read
        "displayName": "Leads", "membershipType": "private",
        "members": [{"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
                     "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{alan['id']}')"}]})
    assert leads.status_code == 201, leads.text
    chat = graph.post("chats", json={"chatType": "oneOnOne", "members": [
        {"roles": ["owner"], "user@odata.bind": f"users('{u['id']}')"} for u in (ada, alan)]}).json()["id"]
    channel_path = f"teams/{team}/channels/{quote(general, safe='')}/messages"
    chat_path = f"chats/{quote(chat, safe='')}/messages"

    def say(path: str, who: dict[str, Any], text: str) -> dict[str, Any]:
        r = graph.admin("POST", path, json={"from": who["id"], "body": {"content": text}})
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    root = say(channel_path, alan, "plans?")
    say(f"{channel_path}/{root['id']}/replies", ada, "friday")
    first = say(chat_path, alan, "lunch?")

    upn = ada["userPrincipalName"]
    assert graph.admin("POST", "sign-in-as", json={"user": upn}).status_code == 200
    path = write_spec(tmp_path, emulator_info, database_url, receiver, upn, team=team, chat=chat)
    assert (r := cli("login", "--spec", str(path))).exit_code == 0, r.output
    assert (r := cli("db", "upgrade", "--spec", str(path))).exit_code == 0, r.output
    assert (r := cli("reconcile", "--spec", str(path))).exit_code == 0, r.output
    live = graph.get("subscriptions").json()["value"]
    # One subscription per channel Ada can read (not the private one), and the chat; all of them hers.
    assert sorted(s["resource"] for s in live) == sorted([f"teams/{team}/channels/{general}/messages",
                                                          f"chats/{chat}/messages"]), live
    assert {s["creatorId"] for s in live} == {ada["id"]}
    assert (r := cli("sync", "--spec", str(path))).exit_code == 0, r.output
    spec = load_spec(path).resolve_emulator()
    assert mirror_matches(spec) == []
    channel_rows = _rows(path, "my_channel_messages")
    assert {r["body_text"] for r in channel_rows.values() if r["from_user_id"]} >= {"plans?", "friday"}
    assert _rows(path, "my_chat_messages")[first["id"]]["chat_id"] == chat

    # Changes as users make them: a post (notified to Ada's subscription), a reply, an edit, soft deletes.
    second = say(channel_path, alan, "or monday")
    notified = wait_for(receiver, "notifications")["value"][0]
    assert notified["resource"] == f"teams('{team}')/channels('{general}')/messages('{second['id']}')", notified
    reply = say(f"{channel_path}/{second['id']}/replies", ada, "monday it is")
    assert graph.admin("PATCH", f"{channel_path}/{root['id']}", json={"body": {"content": "plans??"}}).ok
    assert graph.admin("DELETE", f"{channel_path}/{second['id']}").status_code == 204
    chat_second = say(chat_path, ada, "sure")
    assert graph.admin("PATCH", f"{chat_path}/{chat_second['id']}", json={"body": {"content": "sure!"}}).ok
    assert graph.admin("DELETE", f"{chat_path}/{first['id']}").status_code == 204
    assert (r := cli("sync", "--spec", str(path))).exit_code == 0, r.output
    assert mirror_matches(spec) == []
    channel_rows = _rows(path, "my_channel_messages")
    assert channel_rows[root["id"]]["body_text"] == "plans??"
    assert channel_rows[reply["id"]]["reply_to_id"] == second["id"]
    assert channel_rows[second["id"]]["_removed_reason"] == "deleted"
    chat_rows = _rows(path, "my_chat_messages")
    assert chat_rows[chat_second["id"]]["body_text"] == "sure!"
    assert chat_rows[first["id"]]["deleted_date_time"] is not None  # Graph keeps it listed, soft-deleted
    assert chat_rows[first["id"]]["_removed_reason"] == "deleted"  # and the row says so (a soft-deleted row)
