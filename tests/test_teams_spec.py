"""Teams declarations (issue 14): the catalogue of Graph's Teams paths, what validation refuses before any call
(https://learn.microsoft.com/en-us/graph/teams-changenotifications-chatmessage and its sibling pages), Teams
quotas in reconcile's check, and for_each over teams and their channels."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from test_spec import HEADER, at, load, problem, problems

from syncer import resources
from syncer.reconcile.desired import Expansion, desired_from_spec
from syncer.reconcile.quotas import Placed, check_quotas

# Every path of Graph's Teams subscription table: change types, application permission, model values.
TEAMS_PATHS = [
    ("teams/T/channels/C/messages", {"created", "updated", "deleted"}, "ChannelMessage.Read.All", set()),
    ("teams/getAllMessages", {"created", "updated", "deleted"}, "ChannelMessage.Read.All", {"A", "B"}),
    ("chats/X/messages", {"created", "updated", "deleted"}, "Chat.Read.All", set()),
    ("chats/getAllMessages", {"created", "updated", "deleted"}, "Chat.Read.All", {"A", "B"}),
    ("users/U/chats/getAllMessages", {"created", "updated", "deleted"}, "Chat.Read.All", {"B"}),
    ("appCatalogs/teamsApps/A/installedToChats/getAllMessages", {"created", "updated"}, "Chat.Read.WhereInstalled", {"B"}),
    ("chats", {"created", "updated"}, "Chat.ReadBasic.All", set()),
    ("chats/X", {"updated"}, "Chat.ReadBasic.All", set()),
    ("users/U/chats", {"created", "updated"}, "Chat.ReadBasic.All", set()),
    ("appCatalogs/teamsApps/A/installedToChats", {"created", "updated"}, "Chat.ReadBasic.WhereInstalled", {"B"}),
    ("teams/getAllChannels", {"created", "updated", "deleted"}, "Channel.ReadBasic.All", set()),
    ("teams/T/channels", {"created", "updated", "deleted"}, "Channel.ReadBasic.All", set()),
    ("teams", {"created", "updated", "deleted"}, "Team.ReadBasic.All", set()),
    ("teams/T", {"updated", "deleted"}, "Team.ReadBasic.All", set()),
    ("teams/T/members", {"created", "updated", "deleted"}, "TeamMember.Read.All", set()),
    ("teams/getAllMembers", {"created", "updated", "deleted"}, "TeamMember.Read.All", {"A", "B"}),
    ("teams/T/channels/getAllMembers", {"created", "updated", "deleted"}, "ChannelMember.Read.All", set()),
    ("chats/X/members", {"created", "deleted"}, "ChatMember.Read.All", set()),
    ("chats/getAllMembers", {"created", "deleted"}, "ChatMember.Read.All", {"A", "B"}),
    ("appCatalogs/teamsApps/A/installedToChats/getAllMembers", {"created", "updated"}, "ChatMember.Read.WhereInstalled", {"B"}),
]


@pytest.mark.parametrize(("path", "change_types", "permission", "models"), TEAMS_PATHS)
def test_every_teams_path_is_in_the_catalogue(path: str, change_types: set[str], permission: str, models: set[str]) -> None:
    matched = resources.match_resource(path)
    assert matched is not None, path
    rt = matched[0]
    assert (set(rt.change_types), rt.permission, set(rt.models)) == (change_types, permission, models)
    assert rt.max_lifetime == rt.max_lifetime_rich == timedelta(minutes=4_320)
    assert rt.lifecycle_url_over == timedelta(hours=1)
    assert rt.quota.pool == "teams" and rt.quota.per_tenant == 10_000


NO_LIFECYCLE = HEADER.replace("subscriptions:", "receiver: {lifecycle_url: null}\nsubscriptions:")
CHANNELS = "  - name: cm\n    resource: 'teams/{team}/channels/{channel}/messages'\n    for_each: {teams: [t1]}\n"


def test_past_an_hour_a_teams_subscription_needs_a_lifecycle_url(tmp_path: Path) -> None:
    # The default lifetime (the maximum, 3 days) is past an hour too.
    error = problem(tmp_path, CHANNELS, header=NO_LIFECYCLE)
    at(error, 10, "subscriptions[0].lifetime")
    assert error.expected == "at most 1h when receiver.lifecycle_url is null"
    assert "Graph needs a lifecycle URL for chatMessage past 1h" in str(error)
    assert load(tmp_path, CHANNELS + "    lifetime: 1h\n", header=NO_LIFECYCLE).subscriptions[0].lifetime == timedelta(hours=1)


def test_teams_lifetime_at_most_three_days(tmp_path: Path) -> None:
    error = problem(tmp_path, CHANNELS + "    lifetime: 4321m\n")
    at(error, 12, "subscriptions[0].lifetime")
    assert error.expected.startswith("at most 3d (4320 minutes)")


def test_rich_teams_notifications_need_a_certificate(tmp_path: Path) -> None:
    errors = problems(tmp_path, CHANNELS + "    include_resource_data: true\n")
    assert any(e.location.path.startswith("subscriptions[0].encryption") or "encryption" in e.expected for e in errors), errors


@pytest.mark.parametrize(
    ("resource", "change_types", "found"),
    [("chats", "[created, deleted]", "'deleted'"), ("chats/c1/members", "[updated]", "'updated'"), ("teams/t1", "[created]", "'created'")],
)
def test_change_types_graph_refuses_for_teams(tmp_path: Path, resource: str, change_types: str, found: str) -> None:
    error = problem(tmp_path, f"  - {{name: x, resource: '{resource}', change_types: {change_types}}}\n")
    assert error.found == found and error.location.path.startswith("subscriptions[0].change_types")


def test_model_is_a_or_b_where_graph_takes_it(tmp_path: Path) -> None:
    spec = load(
        tmp_path,
        "  - {name: a, resource: teams/getAllMessages, model: A}\n"
        "  - {name: b, resource: 'users/{user}/chats/getAllMessages', model: B, for_each: {users: [u1]}}\n"
        "  - {name: c, resource: 'chats/getAllMembers?model=B'}\n",
    )
    assert [s.graph_resource for s in spec.subscriptions] == [
        "teams/getAllMessages?model=A",
        "users/{user}/chats/getAllMessages?model=B",
        "chats/getAllMembers?model=B",
    ]
    errors = problems(
        tmp_path,
        "  - {name: a, resource: teams/getAllMessages, model: C}\n"
        "  - {name: b, resource: 'users/{user}/chats/getAllMessages', model: A, for_each: {users: [u1]}}\n"
        "  - {name: c, resource: 'teams/t1/channels/c1/messages', model: A}\n"
        "  - {name: d, resource: 'chats/getAllMessages?model=A', model: B}\n"
        "  - {name: e, resource: 'chats/getAllMembers?model=X'}\n",
    )
    assert [(e.location.line, e.location.path) for e in errors] == [
        (9, "subscriptions[0].model"),
        (10, "subscriptions[1].model"),
        (11, "subscriptions[2].model"),
        (12, "subscriptions[3].model"),
        (13, "subscriptions[4].resource"),
    ]
    assert errors[1].expected == "model B for chatMessage.user"
    assert errors[2].expected.startswith("no model for chatMessage.channel")


def test_one_subscription_per_teams_path_whatever_its_change_types(tmp_path: Path) -> None:
    error = problem(
        tmp_path,
        "  - {name: a, resource: teams/t1/channels, change_types: [created]}\n"
        "  - {name: b, resource: teams/t1/channels, change_types: [updated]}\n",
    )
    at(error, 10, "subscriptions[1].resource")
    assert error.expected == "one subscription per Teams resource"


def test_for_each_over_teams_and_channels(tmp_path: Path) -> None:
    errors = problems(
        tmp_path,
        "  - {name: a, resource: 'teams/{team}/channels/{channel}/messages'}\n"
        "  - {name: b, resource: 'teams/t1/channels/{channel}/messages', for_each: {teams: [t1]}}\n"
        "  - {name: c, resource: 'teams/{team}/members', for_each: {users: all}}\n"
        "  - {name: d, resource: teams/getAllMessages, for_each: {teams: all}}\n"
        "  - {name: e, resource: 'teams/{team}/channels', for_each: {teams: []}}\n",
    )
    assert [(e.location.line, e.location.path) for e in errors] == [
        (9, "subscriptions[0].resource"),
        (10, "subscriptions[1].resource"),
        (11, "subscriptions[2].for_each.users"),
        (12, "subscriptions[3].for_each"),
        (13, "subscriptions[4].for_each.teams"),
    ]
    assert errors[0].found == "{team} without for_each"
    spec = load(
        tmp_path,
        "  - {name: a, resource: 'teams/{team}/channels/{channel}/messages', for_each: {teams: all}, lifetime: 1h}\n"
        "  - {name: b, resource: 'teams/{team}/members', for_each: {teams: [t1, t2]}}\n",
    )
    a, b = spec.subscriptions
    assert a.fan_out is not None and a.fan_out.all_teams and a.fan_out.channels
    assert b.fan_out is not None and b.fan_out.teams == ("t1", "t2") and not b.fan_out.channels
    tenant = spec.tenants[0].tenant_id
    binding = (("team", "t1"), ("channel", "19:a@thread.tacv2"))
    desired = desired_from_spec(
        spec,
        {
            "a": Expansion("a", tenant, "all teams", ("t1/19:a@thread.tacv2",), (binding,), noun="channels"),
            "b": Expansion("b", tenant, "listed", ("t1", "t2"), ((("team", "t1"),), (("team", "t2"),)), noun="teams"),
        },
    )
    assert [d.resource for d in desired] == [
        "teams/t1/channels/19:a@thread.tacv2/messages",
        "teams/t1/members",
        "teams/t2/members",
    ]
    assert desired[0].lifecycle_url is not None and desired[0].lifetime == timedelta(hours=1)


def _placed(resource: str, tenant: str = "t") -> Placed:
    return Placed(tenant, resource)


def test_teams_quotas_in_reconciles_check() -> None:
    # One subscription of an app per chat, channel or team path.
    problems_ = check_quotas([], [_placed("teams/t1/channels"), _placed("teams/T1/channels?x=1")])
    assert [p.bucket for p in problems_] == ["subscriptions of this app on teams/t1/channels"]
    # Ten per user on the user-scoped paths: the 11th is refused.
    users = [_placed("users/u1/chats/getAllMessages") for _ in range(10)]
    assert check_quotas([], users) == []
    eleven = check_quotas([], [*users, _placed("users/U1/chats/getAllMessages")])
    assert [(p.bucket.lower(), p.limit, p.planned) for p in eleven] == [("teams subscriptions of user u1", 10, 11)]
    # One pool of 10,000 per tenant, shared by every Teams type.
    pool = [_placed(f"chats/c{i}/messages") for i in range(9_999)] + [_placed("teams/t1/members")]
    assert check_quotas([], pool) == []
    over = check_quotas(pool, [*pool, _placed("teams")])
    assert [(p.bucket, p.limit, p.planned, p.existing) for p in over] == [("teams subscriptions in tenant t", 10_000, 10_001, 10_000)]


def test_a_users_chat_messages_are_declared_for_one_user(tmp_path: Path) -> None:
    """Two members of a chat both list its messages; a mirror row belongs to one scope, so a fan-out over
    several users would leave each shared message under one user only (verify: missing)."""
    errors = problems(
        tmp_path,
        "  - {name: a, resource: 'users/{user}/chats/getAllMessages', for_each: {users: [u1, u2]}}\n"
        "  - {name: b, resource: 'users/{user}/chats/getAllMessages', for_each: {users: all}}\n",
    )
    assert [(e.location.line, e.location.path, e.found) for e in errors] == [
        (9, "subscriptions[0].for_each", "several users"),
        (10, "subscriptions[1].for_each", "a set of users"),
    ]
    assert "chats/getAllMessages" in str(errors[0]) and "one subscription (and table) per user" in str(errors[0])
    spec = load(tmp_path, "  - {name: a, resource: 'users/{user}/chats/getAllMessages', for_each: {users: [u1]}}\n")
    assert spec.subscriptions[0].fan_out is not None and spec.subscriptions[0].fan_out.users == ("u1",)


def test_a_users_chats_are_declared_for_one_user(tmp_path: Path) -> None:
    """Chats are shared as their messages are (users/{user}/chats): one user per declaration; 10 per user in Graph."""
    errors = problems(tmp_path, "  - {name: a, resource: 'users/{user}/chats', for_each: {users: [u1, u2]}}\n")
    assert [(e.location.line, e.location.path, e.found) for e in errors] == [(9, "subscriptions[0].for_each", "several users")]
    rt = resources.match_resource("users/u1/chats")
    assert rt is not None and rt[0].quota.per_user == 10 and rt[0].quota.pool == "teams"
