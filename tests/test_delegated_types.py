"""Every type Graph lets a delegated account subscribe to, end to end: a personal Microsoft account (contact,
driveItem, event, message, todoTask) and a work account (the same, plus user and group), each declared in YAML
(`me/...` for the user's own data), reconciled into delegated subscriptions, synced, changed through Graph's API
by the user, synced again and found equal to the emulator's truth. On SQLite and PostgreSQL; one emulator for the
module (each test has its own database and receiver, so the tests do not see each other's subscriptions).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner, Result
from emulator_fixtures import EmulatorClient
from test_delegated_e2e import mirror_matches
from webhook_receiver import Receiver

from syncer import database
from syncer.cli import main
from syncer.emulator import EmulatorConfig, EmulatorServer
from syncer.spec import Spec, load_spec
from syncer.spec.mirror import column_name

PAT = "pat@outlook.com"
CONSUMERS = "9188040d-6c67-4c5b-b112-36a304b66dad"
# A column each (a group mirrored without one would be id and members only, taken for a members-only repeat).
COLUMNS = {"mail": "subject", "contacts": "displayName", "agenda": "subject", "files": "name", "tasks": "title",
           "people": "displayName", "org_groups": "displayName"}
CONTENT = {"messagesPerUser": 2, "eventsPerUser": 2, "contactsPerUser": 2, "tasksPerUser": 2, "driveItemsPerUser": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    emulator = EmulatorServer(EmulatorConfig(seed=4711, personal_users=(PAT,)), workdir=tmp_path_factory.mktemp("emu"))
    emulator.start()
    client = EmulatorClient(emulator)
    try:
        seeded = client.admin("POST", "seed", json={"users": 3, "groups": 2, "membersPerGroup": 2, "contentUsers": 1,
                                                    **CONTENT})
        assert seeded.status_code == 200, seeded.text
        yield emulator
    finally:
        client.close()
        emulator.stop()


@pytest.fixture
def emu(server: EmulatorServer) -> Iterator[EmulatorClient]:
    client = EmulatorClient(server)
    yield client
    client.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


class User:
    """A user signed in on their own device: Graph calls with their delegated token."""

    def __init__(self, emu: EmulatorClient, upn: str, authority: str) -> None:
        assert emu.admin("POST", "sign-in-as", json={"user": upn}).status_code == 200
        where = f"{emu.base}/{authority}/oauth2/v2.0"
        cid = emu.info["client_id"]
        start = emu.session.post(f"{where}/devicecode", data={"client_id": cid, "scope": "https://graph.microsoft.com/.default"},
                                 timeout=10)
        got = emu.session.post(f"{where}/token", data={
            "client_id": cid, "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": start.json()["device_code"]}, timeout=10)
        assert got.status_code == 200, got.text
        self.emu, self.token = emu, got.json()["access_token"]

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        r: requests.Response = self.emu.request(method, path, headers={"Authorization": f"Bearer {self.token}"}, **kwargs)
        assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def first(self, path: str) -> dict[str, Any]:
        items: list[dict[str, Any]] = self.call("GET", path, 200)["value"]
        assert items, f"nothing at {path}"
        return items[0]

    def change_own_data(self, task_list: str, tag: str) -> None:
        """Create, update and delete in each of the user's own collections, as a person's apps would (names end
        in *tag*: the emulator is shared by the module's tests)."""
        self.call("POST", "me/mailFolders/inbox/messages", 201, json={"subject": "new mail"})
        mail = self.first("me/mailFolders/inbox/messages")
        self.call("PATCH", f"me/messages/{mail['id']}", 200, json={"isRead": True, "subject": f"read mail {tag}"})
        self.call("POST", "me/contacts", 201, json={"displayName": f"New Friend {tag}", "givenName": "New"})
        contacts = self.call("GET", "me/contacts", 200)["value"]
        gone = next(c for c in contacts if tag not in str(c.get("displayName")))
        self.call("DELETE", f"me/contacts/{gone['id']}", 204)
        event = self.call("POST", "me/events", 201, json={
            "subject": "lunch", "start": {"dateTime": "2026-12-04T12:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-04T13:00:00", "timeZone": "UTC"}})
        self.call("PATCH", f"me/events/{event['id']}", 200, json={"subject": f"long lunch {tag}"})
        self.call("POST", "me/drive/root/children", 201, json={"name": f"Receipts {tag}", "folder": {}})
        task = self.call("POST", f"me/todo/lists/{task_list}/tasks", 201, json={"title": f"renew passport {tag}"})
        self.call("PATCH", f"me/todo/lists/{task_list}/tasks/{task['id']}", 200, json={"status": "completed"})


def write_spec(tmp_path: Path, info: dict[str, Any], database_url: str, receiver: Receiver, tenant: str,
               subscriptions: list[tuple[str, str]]) -> Path:
    info_file = tmp_path / "emulator.json"
    info_file.write_text(json.dumps(info))
    declared = "\n".join(
        f"  - {{name: {name}, tenant: me, resource: '{resource}', mirror: {{table: {name}, columns: [{column}]}}}}"
        for name, resource in subscriptions
        for column in [COLUMNS[name]]
    )
    path = tmp_path / "subscriptions.yaml"
    path.write_text(f"""
version: 1
graph: {{cloud: emulator, emulator_info: {info_file}}}
tenants:
  - name: me
    auth: delegated
{tenant}
    token_cache: {tmp_path}/config/me.json
receiver:
  notification_url: "{receiver.url("notifications")}"
  lifecycle_url: "{receiver.url("lifecycle")}"
database: {{url: "{database_url}"}}
subscriptions:
{declared}
""")
    return path


def own_data(task_list: str) -> list[tuple[str, str]]:
    return [
        ("mail", "me/mailFolders/inbox/messages"),
        ("contacts", "me/contacts"),
        ("agenda", "me/events"),
        ("files", "me/drive/root"),
        ("tasks", f"me/todo/lists/{task_list}/tasks"),
    ]


def mirrored_end_to_end(path: Path, user: User, task_list: str, expected: set[str]) -> None:
    spec = load_spec(path).resolve_emulator()
    for command in (("login", "me"), ("db", "upgrade"), ("reconcile",), ("sync",)):
        assert (r := cli(*command, "--spec", str(path))).exit_code == 0, (command, r.output)
    live = user.call("GET", "subscriptions", 200)["value"]  # a delegated caller lists only its own
    assert expected <= {s["resource"] for s in live}, live
    assert mirror_matches(spec) == []
    tag = uuid.uuid4().hex[:8]
    user.change_own_data(task_list, tag)
    assert (r := cli("sync", "--spec", str(path))).exit_code == 0, r.output
    assert mirror_matches(spec) == []
    # Not two empty sides: the user's changes are in the mirror.
    for table, value in (("mail", f"read mail {tag}"), ("contacts", f"New Friend {tag}"), ("agenda", f"long lunch {tag}"),
                         ("files", f"Receipts {tag}"), ("tasks", f"renew passport {tag}")):
        assert value in live_values(spec, table), (table, live_values(spec, table))


def live_values(spec: Spec, table: str) -> list[str]:
    """The declared column of *table*'s live rows."""
    column = column_name(COLUMNS[table])
    engine = database.create_engine(spec.database_url)
    try:
        with engine.connect() as connection:
            return [str(v) for v in connection.execute(
                sa.text(f"SELECT {column} FROM {table} WHERE _deleted_at IS NULL")).scalars()]
    finally:
        engine.dispose()


def test_a_personal_account_mirrors_every_type_graph_allows_it(
    tmp_path: Path, emu: EmulatorClient, database_url: str, receiver: Receiver
) -> None:
    pat = User(emu, PAT, "consumers")
    task_list = pat.first("me/todo/lists")["id"]
    declared = own_data(task_list)
    path = write_spec(tmp_path, emu.info, database_url, receiver, f"    authority: consumers\n    account: {PAT}", declared)
    mirrored_end_to_end(path, pat, task_list, {resource for _, resource in declared})


def test_a_work_account_mirrors_its_own_data_and_the_directory(
    tmp_path: Path, emu: EmulatorClient, database_url: str, receiver: Receiver
) -> None:
    upn = next(u["userPrincipalName"] for u in emu.get("users").json()["value"]
               if emu.get(f"users/{u['id']}/todo/lists").json().get("value"))
    adele = User(emu, upn, "organizations")
    task_list = adele.first("me/todo/lists")["id"]
    declared = [*own_data(task_list), ("people", "users"), ("org_groups", "groups")]
    path = write_spec(tmp_path, emu.info, database_url, receiver, f"    account: {upn}", declared)
    mirrored_end_to_end(path, adele, task_list, {resource for _, resource in declared})
    # The directory changes (an admin's app-only calls); the signed-in user's mirror follows.
    emu.create_user(f"joiner{abs(hash(database_url)) % 10_000}")
    group = emu.get("groups").json()["value"][0]
    assert emu.patch(f"groups/{group['id']}", json={"description": "renamed by an admin"}).status_code == 204
    assert (r := cli("sync", "--spec", str(path))).exit_code == 0, r.output
    spec = load_spec(path).resolve_emulator()
    assert mirror_matches(spec) == []
    assert "Joiner" in " ".join(live_values(spec, "people")) and len(live_values(spec, "org_groups")) == 2
