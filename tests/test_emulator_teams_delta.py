"""Teams message delta in the emulator: channel roots (https://learn.microsoft.com/graph/api/chatmessage-delta) and a
user's chats (``/users/{id}/chats/getAllMessages/delta``), over real HTTPS."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from emulator_fixtures import EmulatorClient
from test_emulator_teams import _channel, _say, _seed, _team


def _setup(graph: EmulatorClient) -> tuple[list[dict[str, Any]], str, str]:
    users = _seed(graph)
    team = _team(graph, users[0], users[1])
    channel = _channel(graph, team)["id"]
    return users, team, f"teams/{team}/channels/{quote(channel, safe='')}/messages"


def test_channel_delta_pages_roots_only_then_reports_changes(graph: EmulatorClient) -> None:
    users, _, base = _setup(graph)
    roots = [_say(graph, base, users[0]["id"], f"m{i}") for i in range(5)]
    _say(graph, f"{base}/{roots[0]['id']}/replies", users[1]["id"], "a reply")
    first = graph.get(f"{base}/delta", params={"$top": "2"}).json()
    assert first["@odata.context"].endswith("$metadata#Collection(chatMessage)")
    assert len(first["value"]) == 2 and "$skiptoken=" in first["@odata.nextLink"]
    items, delta_link = graph.delta_all(first["@odata.nextLink"])
    items = first["value"] + items
    assert sorted(m["id"] for m in items) == sorted(r["id"] for r in roots)  # no reply
    assert "$deltatoken=" in delta_link
    assert graph.get(delta_link).json()["value"] == []
    graph.admin("PATCH", f"{base}/{roots[1]['id']}", json={"body": {"content": "edited"}})
    graph.admin("DELETE", f"{base}/{roots[2]['id']}")
    _say(graph, f"{base}/{roots[3]['id']}/replies", users[1]["id"], "another reply")  # not a root change
    new = _say(graph, base, users[1]["id"], "new root")
    changed, delta_link = graph.delta_all(delta_link)
    by_id = {m["id"]: m for m in changed}
    assert set(by_id) == {roots[1]["id"], roots[2]["id"], new["id"]}
    assert by_id[roots[1]["id"]]["body"]["content"] == "edited"
    assert by_id[roots[2]["id"]]["deletedDateTime"] is not None and "@removed" not in by_id[roots[2]["id"]]


def test_channel_delta_options(graph: EmulatorClient) -> None:
    users, _, base = _setup(graph)
    _say(graph, base, users[0]["id"], "old")
    graph.admin("POST", "clock", json={"advance": 60})
    newer = _say(graph, base, users[0]["id"], "newer")
    since = newer["createdDateTime"]
    assert graph.get(f"{base}/delta", params={"$top": "51"}).status_code == 400
    assert graph.get(f"{base}/delta", params={"$filter": f"lastModifiedDateTime ge {since}"}).status_code == 400
    assert graph.get(f"{base}/delta", params={"$filter": "subject eq 'x'"}).status_code == 400
    earlier = "2000-01-01T00:00:00Z"
    items, link = graph.delta_all(f"{base}/delta?$filter=lastModifiedDateTime gt {earlier}")
    assert len(items) == 2
    future = "2999-01-01T00:00:00Z"
    items, link = graph.delta_all(f"{base}/delta?$filter=lastModifiedDateTime gt {future}")
    assert items == []
    # the filter is frozen into the link: a later message newer than 'now' but older than the bound stays out
    _say(graph, base, users[0]["id"], "later")
    assert graph.delta_all(link)[0] == []
    assert graph.get(link + "&$filter=lastModifiedDateTime gt 2000-01-01T00:00:00Z").status_code == 400


def test_channel_delta_keeps_to_eight_months(graph: EmulatorClient) -> None:
    users, _, base = _setup(graph)
    old = _say(graph, base, users[0]["id"], "ancient")
    graph.admin("POST", "clock", json={"advance": 250 * 86400})
    graph._token = None  # the old access token expired with the jump
    recent = _say(graph, base, users[0]["id"], "recent")
    items, _ = graph.delta_all(f"{base}/delta")
    assert [m["id"] for m in items] == [recent["id"]]
    assert graph.get(f"{base}/{old['id']}").status_code == 200  # still readable by id


def test_channel_delta_token_expiry_is_410(graph: EmulatorClient) -> None:
    users, _, base = _setup(graph)
    _say(graph, base, users[0]["id"], "m")
    _, link = graph.delta_all(f"{base}/delta")
    assert graph.admin("POST", "delta/expire", json={}).status_code in (200, 204)
    r = graph.get(link)
    assert r.status_code == 410 and r.json()["error"]["code"] == "SyncStateNotFound"
    assert graph.get(f"{base}/delta?$deltatoken=garbage").status_code == 400


def test_user_chats_delta(graph: EmulatorClient) -> None:
    users = _seed(graph)
    a, b, c = users[:3]
    chats = []
    for people in ((a, b), (a, b, c)):
        r = graph.post("chats", json={"chatType": "oneOnOne" if len(people) == 2 else "group", "members": [
            {"roles": ["owner"], "user@odata.bind": f"users('{p['id']}')"} for p in people]})
        assert r.status_code == 201, r.text
        chats.append(r.json()["id"])
    m1 = _say(graph, f"chats/{quote(chats[0], safe='')}/messages", a["id"], "one")
    m2 = _say(graph, f"chats/{quote(chats[1], safe='')}/messages", c["id"], "two")
    items, link = graph.delta_all(f"users/{a['userPrincipalName']}/chats/getAllMessages/delta")
    assert sorted(m["id"] for m in items) == sorted([m1["id"], m2["id"]])
    assert {m["chatId"] for m in items} == set(chats)
    only_c, _ = graph.delta_all(f"users/{c['id']}/chats/getAllMessages/delta")
    assert [m["id"] for m in only_c] == [m2["id"]]
    graph.admin("PATCH", f"chats/{quote(chats[0], safe='')}/messages/{m1['id']}", json={"body": {"content": "1!"}})
    changed, _ = graph.delta_all(link)
    assert [(m["id"], m["body"]["content"]) for m in changed] == [(m1["id"], "1!")]


def test_channel_delta_expands_replies_on_every_page(graph: EmulatorClient) -> None:
    users, _, base = _setup(graph)
    roots = [_say(graph, base, users[0]["id"], f"m{i}") for i in range(3)]
    reply = _say(graph, f"{base}/{roots[2]['id']}/replies", users[1]["id"], "r")
    items, link = graph.delta_all(f"{base}/delta?$expand=replies&$top=1")
    assert len(items) == 3 and all("replies" in m for m in items)
    by_id = {m["id"]: m for m in items}
    assert [r["id"] for r in by_id[roots[2]["id"]]["replies"]] == [reply["id"]]
    assert "$expand=replies" in link
    graph.admin("PATCH", f"{base}/{roots[0]['id']}", json={"body": {"content": "e"}})
    changed, _ = graph.delta_all(link)
    assert [m["replies"] for m in changed] == [[]]
    assert graph.get(f"{base}/delta", params={"$expand": "members"}).status_code == 400


def test_ten_thousand_seeded_channel_messages_page_through_delta(graph: EmulatorClient) -> None:
    import time
    started = time.perf_counter()
    r = graph.admin("POST", "seed", json={"users": 3, "contentUsers": 1, "channelMessagesPerUser": 10_000})
    assert r.status_code == 200, r.text
    seeded = time.perf_counter() - started
    team = graph.get("teams").json()["value"][0]["id"]
    base = f"teams/{team}/channels/{quote(_channel(graph, team)['id'], safe='')}/messages"
    started = time.perf_counter()
    items, _ = graph.delta_all(f"{base}/delta?$top=50")
    paged = time.perf_counter() - started
    assert len(items) == 10_000 and len({m["id"] for m in items}) == 10_000
    assert seeded < 10 and paged < 30, (seeded, paged)


def test_a_new_chat_member_sees_the_history_in_its_chats_delta(graph: EmulatorClient) -> None:
    users = _seed(graph)
    a, b, c = users[:3]
    chat = graph.post("chats", json={"chatType": "group", "topic": "T", "members": [
        {"roles": ["owner"], "user@odata.bind": f"users('{p['id']}')"} for p in (a, b)]}).json()
    old = _say(graph, f"chats/{quote(chat['id'], safe='')}/messages", a["id"], "before c joined")
    assert graph.delta_all(f"users/{c['id']}/chats/getAllMessages/delta")[0] == []
    r = graph.post(f"chats/{quote(chat['id'], safe='')}/members", json={
        "roles": ["owner"], "user@odata.bind": f"users('{c['id']}')"})
    assert r.status_code == 201, r.text
    items, _ = graph.delta_all(f"users/{c['id']}/chats/getAllMessages/delta")
    assert old["id"] in {m["id"] for m in items}
