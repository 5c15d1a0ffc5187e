"""Group owners as their own relation, and membership/ownership notifications
(https://learn.microsoft.com/graph/api/group-list-owners, https://learn.microsoft.com/graph/api/group-post-owners)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from emulator_fixtures import EmulatorClient
from webhook_receiver import Receiver

from syncer.emulator import EmulatorConfig


@pytest.fixture
def emulator_config(request: pytest.FixtureRequest) -> EmulatorConfig:
    changes: dict[str, Any] = getattr(request, "param", {})
    return EmulatorConfig(seed=5).with_changes(**changes)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def _ref(uid: str) -> dict[str, str]:
    return {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{uid}"}


def _group(graph: EmulatorClient, **extra: Any) -> dict[str, Any]:
    r = graph.post("groups", json={"displayName": "Ops", "mailEnabled": False, "mailNickname": "ops",
                                   "securityEnabled": True, **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_owners_are_not_members(graph: EmulatorClient) -> None:
    ann, ben, cat = graph.create_user("ann"), graph.create_user("ben"), graph.create_user("cat")
    group = _group(graph, **{"owners@odata.bind": [f"https://graph.microsoft.com/v1.0/users/{ann['id']}"],
                             "members@odata.bind": [f"https://graph.microsoft.com/v1.0/users/{ben['id']}"]})
    gid = group["id"]
    owners = graph.get(f"groups/{gid}/owners?$select=id,displayName").json()["value"]
    assert owners == [{"@odata.type": "#microsoft.graph.user", "id": ann["id"], "displayName": "Ann"}]
    assert [m["id"] for m in graph.get(f"groups/{gid}/members").json()["value"]] == [ben["id"]]
    assert graph.post(f"groups/{gid}/owners/$ref", json=_ref(cat["id"])).status_code == 204
    assert graph.post(f"groups/{gid}/owners/$ref", json=_ref(cat["id"])).status_code == 400  # already an owner
    other = _group(graph, mailNickname="other")
    assert graph.post(f"groups/{gid}/owners/$ref", json=_ref(other["id"])).status_code == 400  # groups cannot own
    page = graph.get(f"groups/{gid}/owners?$top=1").json()
    assert len(page["value"]) == 1 and graph.get(page["@odata.nextLink"]).json()["value"][0]["id"] == cat["id"]
    assert graph.delete(f"groups/{gid}/owners/{ann['id']}/$ref").status_code == 204
    assert graph.delete(f"groups/{gid}/owners/{ann['id']}/$ref").status_code == 404
    assert [o["id"] for o in graph.get(f"groups/{gid}/owners").json()["value"]] == [cat["id"]]
    assert [m["id"] for m in graph.get(f"groups/{gid}/members").json()["value"]] == [ben["id"]]
    assert graph.get("groups/00000000-0000-4000-8000-000000000000/owners").status_code == 404
    # a user deleted for good owns nothing
    assert graph.delete(f"users/{cat['id']}").status_code == 204
    assert graph.delete(f"directory/deletedItems/{cat['id']}").status_code == 204
    assert graph.get(f"groups/{gid}/owners").json()["value"] == []


def test_owner_changes_show_in_groups_delta(graph: EmulatorClient) -> None:
    ann = graph.create_user("ann")
    group = _group(graph)
    _, link = graph.delta_all("groups/delta")
    graph.post(f"groups/{group['id']}/owners/$ref", json=_ref(ann["id"]))
    changes, _ = graph.delta_all(link)
    assert [c["id"] for c in changes] == [group["id"]]
    assert "owners@delta" not in changes[0]  # undocumented: not sent
    assert graph.get("groups/delta?$select=owners").status_code == 400  # nor asked for


def _in(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _sub(resource: str, url: str) -> dict[str, Any]:
    return {"resource": resource, "changeType": "updated", "notificationUrl": url, "expirationDateTime": _in(600)}


def test_owner_and_member_notifications(graph: EmulatorClient, receiver: Receiver) -> None:
    ann, ben = graph.create_user("ann"), graph.create_user("ben")
    gid = _group(graph)["id"]
    assert graph.post("subscriptions", json=_sub(f"groups/{gid}/owners", receiver.url("owners"))).status_code == 201
    assert graph.post("subscriptions", json=_sub("groups", receiver.url("groups"))).status_code == 201
    graph.post(f"groups/{gid}/owners/$ref", json=_ref(ann["id"]))
    graph.post(f"groups/{gid}/members/$ref", json=_ref(ben["id"]))
    graph.delete(f"groups/{gid}/members/{ben['id']}/$ref")
    receiver.wait_items(3, path="groups")
    assert graph.admin("POST", "delivery/wait", json={"timeoutSeconds": 10}).json()["idle"]
    owners = receiver.items("owners")
    assert len(owners) == 1 and owners[0]["resourceData"]["id"] == gid  # member changes are not owner changes
    groups = receiver.wait_items(3, path="groups")
    assert len(groups) == 3
    # notifications may arrive in any order (concurrent POSTs): compare the set of links they carry
    links = sorted(str(g["resourceData"].get("members@delta")) for g in groups)
    added = [{"@odata.type": "#microsoft.graph.user", "id": ben["id"]}]
    removed = [{**added[0], "@removed": {"reason": "deleted"}}]
    assert links == sorted([str(None), str(added), str(removed)])


@pytest.mark.parametrize("emulator_config", [{"group_notification_members_delta": False}], indirect=True)
def test_members_delta_in_notifications_is_configurable(graph: EmulatorClient, receiver: Receiver) -> None:
    ben = graph.create_user("ben")
    gid = _group(graph)["id"]
    assert graph.post("subscriptions", json=_sub("groups", receiver.url("groups"))).status_code == 201
    graph.post(f"groups/{gid}/members/$ref", json=_ref(ben["id"]))
    assert "members@delta" not in receiver.wait_items(1, path="groups")[0]["resourceData"]
