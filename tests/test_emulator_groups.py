"""Groups, membership through $ref, members@delta, and the users $filter subset."""

from __future__ import annotations

from emulator_fixtures import EmulatorClient


def _group(graph: EmulatorClient, name: str, **extra: object) -> dict:
    r = graph.post("groups", json={"displayName": name, "mailEnabled": False, "mailNickname": name.lower(),
                                   "securityEnabled": True, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def _ref(graph: EmulatorClient, uid: str) -> dict:
    return {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{uid}"}


def test_membership_write_api_and_members_list(graph: EmulatorClient) -> None:
    a, b = graph.create_user("ann"), graph.create_user("ben")
    g = _group(graph, "Finance")
    assert graph.post(f"groups/{g['id']}/members/$ref", json=_ref(graph, a["id"])).status_code == 204
    assert graph.post(f"groups/{g['id']}/members/$ref", json=_ref(graph, b["id"])).status_code == 204
    again = graph.post(f"groups/{g['id']}/members/$ref", json=_ref(graph, b["id"]))
    assert again.status_code == 400 and "already exist" in again.json()["error"]["message"]
    missing = graph.post(f"groups/{g['id']}/members/$ref", json=_ref(graph, "3f0c1a4e-0000-4000-8000-000000000000"))
    assert missing.status_code == 404
    page = graph.get(f"groups/{g['id']}/members?$select=id&$top=1").json()
    assert page["value"] == [{"@odata.type": "#microsoft.graph.user", "id": a["id"]}]
    page2 = graph.get(page["@odata.nextLink"]).json()
    assert [v["id"] for v in page2["value"]] == [b["id"]] and "@odata.nextLink" not in page2
    assert graph.delete(f"groups/{g['id']}/members/{a['id']}/$ref").status_code == 204
    assert graph.delete(f"groups/{g['id']}/members/{a['id']}/$ref").status_code == 404
    assert graph.get("groups/00000000-0000-0000-0000-000000000000/members").status_code == 404


def test_groups_delta_members_delta(graph: EmulatorClient) -> None:
    a, b = graph.create_user("ann"), graph.create_user("ben")
    g = _group(graph, "Finance")
    graph.post(f"groups/{g['id']}/members/$ref", json=_ref(graph, a["id"]))
    items, link = graph.delta_all("groups/delta?$select=displayName,members")
    assert items[0]["members@delta"] == [{"@odata.type": "#microsoft.graph.user", "id": a["id"]}]
    graph.post(f"groups/{g['id']}/members/$ref", json=_ref(graph, b["id"]))
    graph.delete(f"groups/{g['id']}/members/{a['id']}/$ref")
    changes, _ = graph.delta_all(link)
    assert len(changes) == 1 and changes[0]["id"] == g["id"]
    deltas = {m["id"]: m for m in changes[0]["members@delta"]}
    assert deltas[a["id"]]["@removed"] == {"reason": "deleted"}
    assert "@removed" not in deltas[b["id"]]
    # without members selected there is no members@delta
    plain, _ = graph.delta_all("groups/delta")
    assert "members@delta" not in plain[0]


def test_security_group_delete_is_permanent_m365_is_soft(graph: EmulatorClient) -> None:
    sec = _group(graph, "Sec")
    m365 = _group(graph, "Team", groupTypes=["Unified"], mailEnabled=True)
    _, link = graph.delta_all("groups/delta")
    assert graph.delete(f"groups/{sec['id']}").status_code == 204
    assert graph.delete(f"groups/{m365['id']}").status_code == 204
    changes, _ = graph.delta_all(link)
    reasons = {c["id"]: c["@removed"]["reason"] for c in changes}
    assert reasons == {sec["id"]: "deleted", m365["id"]: "changed"}


def test_users_filter_subset(graph: EmulatorClient) -> None:
    graph.create_user("alice", department="Sales")
    graph.create_user("bob", department="Legal", accountEnabled=False)
    graph.create_user("anna", department="Sales")
    names = lambda r: sorted(v["displayName"] for v in r.json()["value"])  # noqa: E731
    assert names(graph.get("users?$filter=department eq 'Sales'")) == ["Alice", "Anna"]
    assert names(graph.get("users?$filter=accountEnabled eq false")) == ["Bob"]
    assert names(graph.get("users?$filter=startswith(displayName,'A')")) == ["Alice", "Anna"]
    assert names(graph.get("users?$filter=department eq 'Sales' and startswith(displayName,'An')")) == ["Anna"]
    r = graph.get("users?$filter=department ne 'Sales'")
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_UnsupportedQuery"
    r = graph.get("users?$orderby=displayName")
    assert r.status_code == 400


def test_large_group_members_delta_is_split(graph: EmulatorClient) -> None:
    graph.admin("POST", "seed", json={"users": 250, "groups": 1, "membersPerGroup": 250})
    items, _ = graph.delta_all("groups/delta?$select=displayName,members")
    assert len(items) == 3 and len({i["id"] for i in items}) == 1  # the same group, three pieces
    merged = {m["id"] for i in items for m in i["members@delta"]}
    assert len(merged) == 250
