"""A delegated account end to end: `syncer login`, a `me/...` declaration, reconcile (a delegated subscription),
`syncer sync`, and the mirror equal to the emulator's truth; then revoked sessions, the named error, a new login,
and the mirror recovered. On SQLite and PostgreSQL, against the emulator over real HTTPS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from emulator_fixtures import EmulatorClient
from webhook_receiver import Receiver

from syncer import database, verify
from syncer.cli import main
from syncer.cli.options import EXIT_SIGN_IN_REQUIRED
from syncer.graph.times import parse_datetime
from syncer.reconcile import graphs_for
from syncer.reconcile.lifecycle import reauthorize
from syncer.spec import Spec, load_spec
from syncer.worker.scheduler import build_worker, clients_for, signed_in


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def write_spec(
    tmp_path: Path, info: dict[str, Any], database_url: str, receiver: Receiver, upn: str, *, authority: str = "organizations"
) -> Path:
    info_file = tmp_path / "emulator.json"
    info_file.write_text(json.dumps(info))
    path = tmp_path / "subscriptions.yaml"
    path.write_text(
        f"""
version: 1
graph: {{cloud: emulator, emulator_info: {info_file}}}
tenants:
  - name: me
    auth: delegated
    authority: {authority}
    account: {upn}
    token_cache: {tmp_path}/config/me.json
receiver:
  notification_url: "{receiver.url("notifications")}"
  lifecycle_url: "{receiver.url("lifecycle")}"
database: {{url: "{database_url}"}}
subscriptions:
  - name: inbox
    resource: me/mailFolders/inbox/messages
    change_types: [created, updated, deleted]
    mirror:
      table: my_inbox
      columns: [subject]
"""
    )
    return path


def wait_for(receiver: Receiver, path: str, timeout: float = 15.0) -> dict[str, Any]:
    """The first POST the receiver got on *path* (Graph delivers in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for got in list(receiver.received):
            if got.path == path:
                return dict(got.body)
        time.sleep(0.05)
    raise AssertionError(f"nothing posted to {path} in {timeout}s: {[g.path for g in receiver.received]}")


def now(graph: EmulatorClient) -> datetime:
    return parse_datetime(graph.admin("GET", "clock").json()["now"])


def mirror_matches(spec: Spec) -> list[Any]:
    clients = clients_for(spec)
    engine = database.create_engine(spec.database_url)
    try:
        return verify.compare(engine, clients, verify.declared(signed_in(spec, clients), clients))
    finally:
        engine.dispose()
        for c in clients.values():
            c.close()


def test_a_delegated_inbox_is_mirrored_and_recovers_after_revoked_sessions(
    tmp_path: Path, emulator_info: dict[str, Any], graph: EmulatorClient, database_url: str, receiver: Receiver
) -> None:
    seeded = graph.admin("POST", "seed", json={"users": 2, "messagesPerUser": 3})
    assert seeded.status_code == 200, seeded.text
    user = graph.get(f"users/{seeded.json()['users']['firstId']}").json()
    upn = user["userPrincipalName"]
    assert graph.admin("POST", "sign-in-as", json={"user": upn}).status_code == 200
    path = write_spec(tmp_path, emulator_info, database_url, receiver, upn)
    spec = load_spec(path).resolve_emulator()

    assert (r := cli("login", "--spec", str(path))).exit_code == 0, r.output
    assert (r := cli("db", "upgrade", "--spec", str(path))).exit_code == 0, r.output
    assert (r := cli("reconcile", "--spec", str(path))).exit_code == 0, r.output
    live = graph.get("subscriptions").json()["value"]  # the app-only caller sees every user's
    assert [s["resource"] for s in live] == ["me/mailFolders/inbox/messages"]
    assert live[0]["creatorId"] == user["id"], "a delegated subscription belongs to the signed-in user"
    assert (r := cli("sync", "--spec", str(path))).exit_code == 0, r.output
    assert mirror_matches(spec) == []

    # The worker re-expands its declarations after each reconcile: me/... must stay the user's scope, not
    # become another one (the user's scope would be retired and its rows soft-deleted).
    clients = clients_for(spec)
    engine = database.create_engine(spec.database_url)
    try:
        worker = build_worker(spec, engine=engine, clients=clients)
        before = set(worker.index.static)
        worker.refresh_scopes()
        assert set(worker.index.static) == before and all(user["id"] in str(k) for k in before), before
    finally:
        engine.dispose()
        for c in clients.values():
            c.close()
    assert mirror_matches(spec) == []

    # The user's sessions are revoked: the next refresh is refused and syncer names the account.
    assert graph.admin("POST", f"users/{upn}/revoke-sessions").status_code in (200, 204)
    added = graph.post(f"users/{user['id']}/mailFolders/inbox/messages", json={"subject": "while signed out"})
    assert added.status_code == 201, added.text
    # Access tokens already issued live on (docs/emulator-identity.md): expire them with the clock.
    assert graph.admin("POST", "clock", json={"advance": 2 * 3600}).status_code == 200
    graph._token = None
    r = cli("sync", "--spec", str(path))
    assert r.exit_code == EXIT_SIGN_IN_REQUIRED, r.output
    assert f"account {upn}" in r.output and "syncer login me" in r.output

    # Graph held the user's subscription: the change after the revocation asked for reauthorization.
    lifecycle = wait_for(receiver, "lifecycle")
    assert lifecycle["value"][0]["lifecycleEvent"] == "reauthorizationRequired", lifecycle

    # A new sign-in, and the gap is recovered by the next pass.
    assert (r := cli("login", "me", "--spec", str(path))).exit_code == 0, r.output
    assert (r := cli("sync", "--spec", str(path))).exit_code == 0, r.output
    assert mirror_matches(spec) == []

    assert [g.path for g in receiver.received if g.path == "notifications"] == [], "delivery is held"
    # reconcile's answer to reauthorizationRequired, with the fresh token of the same user, releases delivery.
    graphs = graphs_for(spec)
    engine = database.create_engine(spec.database_url)
    try:
        done = reauthorize(live[0]["id"], spec=spec, graphs=graphs, engine=engine, clock=lambda: now(graph))
        assert done.ok, done
    finally:
        engine.dispose()
        for g in graphs.values():
            g.close()
    again = graph.post(f"users/{user['id']}/mailFolders/inbox/messages", json={"subject": "signed in again"})
    assert again.status_code == 201, again.text
    assert wait_for(receiver, "notifications")["value"][0]["subscriptionId"] == live[0]["id"]


def test_a_personal_accounts_inbox_is_mirrored(
    tmp_path: Path, emulator_info: dict[str, Any], graph: EmulatorClient, database_url: str, receiver: Receiver
) -> None:
    consumers = "9188040d-6c67-4c5b-b112-36a304b66dad"
    made = graph.admin("POST", "users", json={"tenantId": consumers, "userPrincipalName": "pat@outlook.com"})
    assert made.status_code == 201, made.text
    seeded = graph.admin("POST", "seed", json={"tenantId": consumers, "messagesPerUser": 3})
    assert seeded.status_code == 200, seeded.text
    assert graph.admin("POST", "sign-in-as", json={"user": "pat@outlook.com"}).status_code == 200
    path = write_spec(tmp_path, emulator_info, database_url, receiver, "pat@outlook.com", authority="consumers")
    spec = load_spec(path).resolve_emulator()
    assert spec.tenant("me").tenant_id == consumers and spec.tenant("me").personal

    assert (r := cli("login", "--spec", str(path))).exit_code == 0, r.output
    assert "Signed in as pat@outlook.com (tenant 9188040d-" in r.output
    assert (r := cli("db", "upgrade", "--spec", str(path))).exit_code == 0, r.output
    assert (r := cli("reconcile", "--spec", str(path))).exit_code == 0, r.output
    assert (r := cli("sync", "--spec", str(path))).exit_code == 0, r.output
    assert ", 3 items" in r.output or "3 upserted" in r.output, r.output
    assert mirror_matches(spec) == []
