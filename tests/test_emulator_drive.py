"""OneDrive items through the write API and the drive root delta (token=latest, link forms, deleted facet)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from emulator_fixtures import EmulatorClient


@pytest.fixture
def drive_id(graph: EmulatorClient) -> str:
    user = graph.create_user("dee")
    return str(graph.get(f"users/{user['id']}/drive").json()["id"])


def test_drive_delta_lifecycle(graph: EmulatorClient, drive_id: str) -> None:
    folder = graph.post(f"drives/{drive_id}/root/children", json={"name": "docs", "folder": {}}).json()
    r = graph.request("PUT", f"drives/{drive_id}/items/{folder['id']}:/a.txt:/content", data=b"hello")
    assert r.status_code == 201 and r.json()["size"] == 5
    items, link = graph.delta_all(f"drives/{drive_id}/root/delta")
    names = {i["name"] for i in items}
    assert names == {"root", "docs", "a.txt"}  # the root is part of the enumeration
    assert "?token=" in link
    assert graph.post(f"drives/{drive_id}/root/children", json={"name": "docs", "folder": {}}).status_code == 409
    assert graph.delete(f"drives/{drive_id}/items/{folder['id']}").status_code == 204
    changes, _ = graph.delta_all(link)
    deleted = {c["name"] for c in changes if "deleted" in c}
    assert deleted == {"docs", "a.txt"}


def test_token_latest_and_path_form(graph: EmulatorClient, drive_id: str) -> None:
    latest = graph.get(f"drives/{drive_id}/root/delta?token=latest").json()
    assert latest["value"] == []
    token = parse_qs(urlsplit(latest["@odata.deltaLink"]).query)["token"][0]
    graph.post(f"drives/{drive_id}/root/children", json={"name": "new", "folder": {}})
    r = graph.get(f"drives/{drive_id}/root/delta(token='{token}')")
    assert r.status_code == 200
    assert "new" in {i["name"] for i in r.json()["value"]}


def test_drive_reset_is_410_with_drive_code(graph: EmulatorClient, drive_id: str) -> None:
    _, link = graph.delta_all(f"drives/{drive_id}/root/delta")
    graph.admin("POST", "faults", json={"type": "deltaReset", "scope": "^drives/", "kind": "expired"})
    r = graph.get(link)
    assert r.status_code == 410
    assert r.json()["error"]["code"] == "resyncChangesApplyDifferences"
    assert r.headers["Location"].endswith("/root/delta")


def test_user_drive_paths_and_errors(graph: EmulatorClient) -> None:
    user = graph.create_user("eve")
    items, link = graph.delta_all(f"users/{user['id']}/drive/root/delta")
    assert [i["name"] for i in items] == ["root"]
    assert f"/users/{user['id']}/drive/root/delta" in link
    assert graph.get("drives/b!nope/root").status_code == 404
    drive_id = graph.get(f"users/{user['id']}/drive").json()["id"]
    assert graph.get(f"drives/{drive_id}/items/NOPE").status_code == 404
    r = graph.post(f"drives/{drive_id}/root/children", json={"name": "x", "folder": {}, "shape": "round"})
    assert r.status_code == 400


def test_rename_and_move_are_updates_in_delta(graph: EmulatorClient, drive_id: str) -> None:
    a = graph.post(f"drives/{drive_id}/root/children", json={"name": "a", "folder": {}}).json()
    b = graph.post(f"drives/{drive_id}/root/children", json={"name": "b", "folder": {}}).json()
    f = graph.request("PUT", f"drives/{drive_id}/items/{a['id']}:/f.txt:/content", data=b"x").json()
    _, link = graph.delta_all(f"drives/{drive_id}/root/delta")
    r = graph.patch(f"drives/{drive_id}/items/{f['id']}", json={"name": "g.txt", "parentReference": {"id": b["id"]}})
    assert r.status_code == 200 and r.json()["parentReference"]["id"] == b["id"]
    assert graph.patch(f"drives/{drive_id}/items/{a['id']}", json={"name": "b"}).status_code == 409
    changes, _ = graph.delta_all(link)
    by_name = {c["name"]: c for c in changes}
    assert by_name["g.txt"]["id"] == f["id"] and "deleted" not in by_name["g.txt"]
    assert by_name["a"]["folder"]["childCount"] == 0 and by_name["b"]["folder"]["childCount"] == 1
