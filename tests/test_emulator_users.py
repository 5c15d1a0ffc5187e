"""Users through Graph's write API, and the users delta exactly as https://learn.microsoft.com/en-us/graph/delta-query-overview describes it."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from emulator_fixtures import EmulatorClient

from syncer.emulator import EmulatorConfig


def test_create_get_patch_delete_user(graph: EmulatorClient) -> None:
    user = graph.create_user("ada", jobTitle="Engineer")
    assert user["jobTitle"] == "Engineer"
    assert "passwordProfile" not in user
    uid = user["id"]
    r = graph.get(f"users/{uid}?$select=displayName,department")
    assert r.status_code == 200
    assert r.json()["department"] is None and r.json()["displayName"] == "Ada" and r.json()["id"] == uid
    # by UPN, case-insensitively
    assert graph.get(f"users/ADA@{graph.info['tenant_domain']}").json()["id"] == uid
    r = graph.patch(f"users/{uid}", json={"jobTitle": "Countess"})
    assert r.status_code == 204 and r.content == b""
    assert graph.get(f"users/{uid}").json()["jobTitle"] == "Countess"
    assert graph.delete(f"users/{uid}").status_code == 204
    assert graph.get(f"users/{uid}").status_code == 404
    deleted = graph.get("directory/deletedItems/microsoft.graph.user").json()["value"]
    assert [d["id"] for d in deleted] == [uid]
    assert graph.post(f"directory/deletedItems/{uid}/restore").status_code == 200
    assert graph.get(f"users/{uid}").status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"displayName": "x"}, "Invalid value specified for property 'accountEnabled'"),
        ({"favouriteColour": "blue"}, "favouriteColour"),
        ({"id": "abc"}, "read-only"),
        ({"accountEnabled": "yes"}, "Edm.Boolean"),
    ],
)
def test_bad_user_bodies_are_400(graph: EmulatorClient, body: dict[str, Any], fragment: str) -> None:
    full = {"accountEnabled": True, "displayName": "X", "mailNickname": "x",
            "userPrincipalName": f"x@{graph.info['tenant_domain']}", "passwordProfile": {"password": "p4ss!Word"}}
    if "Invalid value" in fragment:
        full = {**body}
    else:
        full.update(body)
    r = graph.post("users", json=full)
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]["message"]
    assert r.json()["error"]["innerError"]["request-id"]


def test_malformed_json_duplicate_upn_and_wrong_method(graph: EmulatorClient) -> None:
    r = graph.post("users", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest"
    graph.create_user("bob")
    r = graph.post("users", json={"accountEnabled": True, "displayName": "B", "mailNickname": "b",
                                  "userPrincipalName": f"BOB@{graph.info['tenant_domain']}",
                                  "passwordProfile": {"password": "p4ss!Word"}})
    assert r.status_code == 400 and "already exists" in r.json()["error"]["message"]
    r = graph.request("PUT", "users")
    assert r.status_code == 405
    assert "error" in r.json()


def test_users_delta_pages_then_reports_changes(graph: EmulatorClient) -> None:
    graph.admin("POST", "seed", json={"users": 250})
    first = graph.get("users/delta")
    assert first.status_code == 200
    body = first.json()
    assert len(body["value"]) == 100  # Graph's default page
    assert "@odata.nextLink" in body and "@odata.deltaLink" not in body
    assert "$skiptoken=" in body["@odata.nextLink"]
    items, delta_link = graph.delta_all("users/delta", headers={"Prefer": "odata.maxpagesize=999"})
    assert len(items) == 250 and len({i["id"] for i in items}) == 250
    assert "$deltatoken=" in delta_link
    # nothing changed: empty page and a new deltaLink
    again, link2 = graph.delta_all(delta_link)
    assert again == []
    u1, u2, u3 = items[0]["id"], items[1]["id"], items[2]["id"]
    assert graph.patch(f"users/{u1}", json={"displayName": "Renamed"}).status_code == 204
    assert graph.delete(f"users/{u2}").status_code == 204  # soft
    assert graph.delete(f"users/{u3}").status_code == 204
    assert graph.delete(f"directory/deletedItems/{u3}").status_code == 204  # permanent
    new = graph.create_user("carol")
    changes, _link3 = graph.delta_all(link2)
    by_id = {c["id"]: c for c in changes}
    assert by_id[u1]["displayName"] == "Renamed"
    assert by_id[u2]["@removed"] == {"reason": "changed"}
    assert by_id[u3]["@removed"] == {"reason": "deleted"}
    assert by_id[new["id"]]["displayName"] == "Carol"
    assert len(changes) == 4
    # replay: the old deltaLink still works and gives the same changes
    replay, _ = graph.delta_all(link2)
    assert {c["id"] for c in replay} == set(by_id)


def test_users_delta_select_and_latest(graph: EmulatorClient) -> None:
    graph.admin("POST", "seed", json={"users": 5})
    items, _ = graph.delta_all("users/delta?$select=displayName,jobTitle")
    assert set(items[0]) == {"id", "displayName", "jobTitle"}
    r = graph.get("users/delta?$select=favouriteColour")
    assert r.status_code == 400
    latest = graph.get("users/delta?$deltatoken=latest").json()
    assert latest["value"] == [] and "@odata.deltaLink" in latest
    user = graph.create_user("dan")
    changes, _ = graph.delta_all(latest["@odata.deltaLink"])
    assert [c["id"] for c in changes] == [user["id"]]


def test_users_delta_maxpagesize_is_capped_at_999(graph: EmulatorClient) -> None:
    graph.admin("POST", "seed", json={"users": 1500})
    r = graph.get("users/delta", headers={"Prefer": "odata.maxpagesize=5000"})
    assert len(r.json()["value"]) == 999
    assert r.headers["Preference-Applied"] == "odata.maxpagesize=999"
    assert graph.get("users/delta?$top=5").status_code == 400


def test_tampered_token_is_400(graph: EmulatorClient) -> None:
    _, link = graph.delta_all("users/delta")
    token = parse_qs(urlsplit(link).query)["$deltatoken"][0]
    r = graph.get(f"users/delta?$deltatoken=x{token}")  # not a token at all
    assert r.status_code == 400
    body, _, _sig = token.partition(".")
    r = graph.get(f"users/delta?$deltatoken={body}.AAAAAAAAAAAAAAAA")  # readable but not signed by us
    assert r.status_code == 410


class TestExpiry:
    @pytest.fixture
    def emulator_config(self) -> EmulatorConfig:
        return EmulatorConfig(seed=7, directory_delta_token_lifetime_s=3600, token_lifetime_s=86400)

    def test_old_delta_token_is_410_sync_state_not_found(self, graph: EmulatorClient) -> None:
        _, link = graph.delta_all("users/delta")
        assert graph.get(link).status_code == 200
        graph.admin("POST", "clock", json={"advance": 3601})
        r = graph.get(link)
        assert r.status_code == 410
        assert r.json()["error"]["code"] == "SyncStateNotFound"
        assert "Location" not in r.headers


def test_delta_reset_fault_gives_410_with_location(graph: EmulatorClient) -> None:
    graph.admin("POST", "seed", json={"users": 3})
    _, link = graph.delta_all("users/delta")
    assert graph.admin("POST", "faults", json={"type": "deltaReset", "scope": "^users$", "kind": "reset"}).status_code == 201
    r = graph.get(link)
    assert r.status_code == 410
    location = r.headers["Location"]
    assert location.endswith("/v1.0/users/delta?$deltatoken=")
    items, _ = graph.delta_all(location)
    assert len(items) == 3  # a full resync
    assert graph.get(link).status_code == 200  # the fault fired once


def test_list_users_pages_with_top(graph: EmulatorClient) -> None:
    graph.admin("POST", "seed", json={"users": 25})
    r = graph.get("users?$top=10&$select=id")
    body = r.json()
    assert len(body["value"]) == 10 and set(body["value"][0]) == {"id"}
    seen = [v["id"] for v in body["value"]]
    while "@odata.nextLink" in body:
        body = graph.get(body["@odata.nextLink"]).json()
        seen += [v["id"] for v in body["value"]]
    assert len(set(seen)) == 25
    assert graph.get("users?$top=1000").status_code == 400


def test_return_minimal_sends_only_changed_properties(graph: EmulatorClient) -> None:
    user = graph.create_user("min", jobTitle="Clerk", department="Ops")
    _, link = graph.delta_all("users/delta?$select=displayName,jobTitle,department")
    graph.patch(f"users/{user['id']}", json={"jobTitle": None})
    new = graph.create_user("fresh")
    r = graph.get(link, headers={"Prefer": "return=minimal"})
    assert "return=minimal" in r.headers["Preference-Applied"]
    by_id = {v["id"]: v for v in r.json()["value"]}
    assert by_id[user["id"]] == {"id": user["id"], "jobTitle": None}  # set to null: still reported
    assert set(by_id[new["id"]]) == {"id", "displayName", "jobTitle", "department"}  # new: everything
    full = {v["id"]: v for v in graph.get(link).json()["value"]}
    assert set(full[user["id"]]) == {"id", "displayName", "jobTitle", "department"}


def test_replay_fault_resends_earlier_changes(graph: EmulatorClient) -> None:
    a = graph.create_user("aa")
    _, link = graph.delta_all("users/delta")
    b = graph.create_user("bb")
    graph.admin("POST", "faults", json={"type": "deltaReset", "scope": "^users$", "kind": "replay", "back": 5})
    changes, _ = graph.delta_all(link)
    assert {c["id"] for c in changes} == {a["id"], b["id"]}  # a was already delivered: a replay
    changes, _ = graph.delta_all(link)
    assert {c["id"] for c in changes} == {b["id"]}


class TestSkiptokenLifetime:
    @pytest.fixture
    def emulator_config(self) -> EmulatorConfig:
        return EmulatorConfig(seed=3, skiptoken_lifetime_s=60, token_lifetime_s=86400)

    def test_an_old_next_link_expires(self, graph: EmulatorClient) -> None:
        graph.admin("POST", "seed", json={"users": 150})
        next_link = graph.get("users/delta").json()["@odata.nextLink"]
        graph.admin("POST", "clock", json={"advance": 61})
        r = graph.get(next_link)
        assert r.status_code == 410 and r.json()["error"]["code"] == "SyncStateNotFound"


def test_admin_evicts_delta_tokens(graph: EmulatorClient) -> None:
    user = graph.create_user("ev")
    mail_link = graph.delta_all(f"users/{user['id']}/mailFolders/inbox/messages/delta")[1]
    users_link = graph.delta_all("users/delta")[1]
    assert graph.admin("POST", "delta/expire", json={"scope": "/messages$"}).json()["collections"] >= 1
    r = graph.get(mail_link)
    assert r.status_code == 410 and r.json()["error"]["code"] == "SyncStateNotFound"
    assert graph.get(users_link).status_code == 200


def test_users_delta_filter_by_ids(graph: EmulatorClient) -> None:
    a, b, _ = graph.create_user("fa"), graph.create_user("fb"), graph.create_user("fc")
    items, link = graph.delta_all(f"users/delta?$filter=id eq '{a['id']}' or id eq '{b['id']}'")
    assert {i["id"] for i in items} == {a["id"], b["id"]}
    graph.patch(f"users/{a['id']}", json={"jobTitle": "x"})
    graph.create_user("fd")
    changes, _ = graph.delta_all(link)
    assert [c["id"] for c in changes] == [a["id"]]  # the filter travels in the token
    assert graph.get("users/delta?$filter=displayName eq 'x'").status_code == 400
    assert graph.get(f"{link}&$filter=id eq 'x'").status_code == 400


def test_concurrent_writes_while_paging_converge(graph: EmulatorClient) -> None:
    import threading

    graph.admin("POST", "seed", json={"users": 500})
    token = graph.token()
    errors: list[str] = []

    def writer(n: int) -> None:
        import requests

        s = requests.Session()
        s.trust_env = False
        for i in range(25):
            r = s.post(f"{graph.graph}/users", verify=graph.ca, timeout=30, headers={"Authorization": f"Bearer {token}"},
                       json={"accountEnabled": True, "displayName": f"W{n}-{i}", "mailNickname": f"w{n}x{i}",
                             "userPrincipalName": f"w{n}x{i}@{graph.info['tenant_domain']}",
                             "passwordProfile": {"password": "p4ss!Word"}})
            if r.status_code != 201:
                errors.append(r.text)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    seen: dict[str, dict] = {}
    items, link = graph.delta_all("users/delta", headers={"Prefer": "odata.maxpagesize=50"})
    seen.update({i["id"]: i for i in items})
    for t in threads:
        t.join()
    changes, _ = graph.delta_all(link)
    seen.update({c["id"]: c for c in changes})
    assert not errors
    assert len(seen) == 600  # every user exactly once across the two rounds, none lost


def test_token_from_another_instance_is_410(graph: EmulatorClient, tmp_path: Any) -> None:
    from syncer.emulator import EmulatorServer

    with EmulatorServer(EmulatorConfig(seed=1234), workdir=tmp_path / "other") as other:
        client = EmulatorClient(other)
        _, link = client.delta_all("users/delta")
        client.close()
    token = parse_qs(urlsplit(link).query)["$deltatoken"][0]
    r = graph.get(f"users/delta?$deltatoken={token}")
    assert r.status_code == 410 and r.json()["error"]["code"] == "SyncStateNotFound"


def test_delta_lag_hides_recent_changes_until_they_replicate(graph: EmulatorClient) -> None:
    graph.admin("POST", "clock", json={"freeze": True})
    _, link = graph.delta_all("users/delta")
    graph.admin("POST", "faults", json={"type": "deltaLag", "scope": "^users$", "seconds": 30})
    user = graph.create_user("lag")
    early, link2 = graph.delta_all(link)
    assert early == []
    graph.admin("POST", "clock", json={"advance": 31})
    late, _ = graph.delta_all(link2)
    assert [u["id"] for u in late] == [user["id"]]
