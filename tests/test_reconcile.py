"""`syncer reconcile` against the Graph emulator over real HTTPS, on SQLite and PostgreSQL.

A small webhook receiver (tests/webhook_receiver.py) answers Graph's validation handshake, so every
create goes through the emulator's real handshake. Time is the emulator's clock, advanced through its
admin API to make subscriptions due.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from emulator_fixtures import EmulatorClient, spec_yaml
from sqlalchemy.engine import Engine
from webhook_receiver import Receiver

from syncer.cli import main
from syncer.database import create_engine
from syncer.graph.client import GraphClient
from syncer.graph.times import parse_datetime
from syncer.locks import LockInfo
from syncer.migrate import upgrade_core
from syncer.reconcile import Outcome, graphs_for, reconcile
from syncer.reconcile.actions import Kind
from syncer.reconcile.lifecycle import reauthorize, recreate
from syncer.schema import subscriptions as table
from syncer.spec import Spec, load_spec

SECRET_ENV = "RECONCILE_TEST_SECRET"


@dataclass
class World:
    """Everything one test needs: emulator, receiver, database, and a way to (re)write the spec."""

    graph: EmulatorClient
    receiver: Receiver
    engine: Engine
    database_url: str
    tmp: Path
    users: list[str]
    receiver_base: str | None = None  # syncer's own receiver instead of the test one

    def url(self, path: str) -> str:
        return f"{self.receiver_base}/{path}" if self.receiver_base else self.receiver.url(path)

    def spec_text(self, subscriptions: str, *, notification_path: str = "notifications") -> str:
        return spec_yaml(
            self.graph.info, database_url=self.database_url, notification_url=self.url(notification_path),
            lifecycle_url=self.url("lifecycle"), subscriptions=subscriptions, secret_env=SECRET_ENV,
        )

    def spec(self, subscriptions: str, **kwargs: Any) -> Spec:
        path = self.tmp / "subscriptions.yaml"
        path.write_text(self.spec_text(subscriptions, **kwargs))
        return load_spec(path, environ={SECRET_ENV: self.graph.info["client_secret"]})

    def now(self) -> datetime:
        return parse_datetime(self.graph.admin("GET", "clock").json()["now"])

    def advance(self, delta: timedelta) -> None:
        r = self.graph.admin("POST", "clock", json={"advance": delta.total_seconds()})
        assert r.status_code == 200, r.text
        self.graph._token = None  # the test helper's token expired with the jump

    def run(self, spec: Spec, **kwargs: Any) -> Outcome:
        graphs = graphs_for(spec)
        try:
            return reconcile(spec, graphs=graphs, engine=self.engine, clock=self.now, **kwargs)
        finally:
            for g in graphs.values():
                g.close()

    def live(self) -> list[dict[str, Any]]:
        r = self.graph.get("subscriptions")
        assert r.status_code == 200, r.text
        return r.json()["value"]  # type: ignore[no-any-return]

    def rows(self) -> list[Any]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.select(table).order_by(table.c.resource)).all())

    def writes_since(self, seq: int) -> list[dict[str, Any]]:
        log = self.graph.admin("GET", "requests", params={"since": seq, "limit": 100000}).json()["requests"]
        return [e for e in log if e["method"] != "GET" and "/v1.0/" in e["path"]]

    def log_seq(self) -> int:
        log = self.graph.admin("GET", "requests", params={"limit": 1}).json()["requests"]
        return int(log[-1]["seq"]) if log else 0


@pytest.fixture
def world(graph: EmulatorClient, database_url: str, tmp_path: Path) -> Iterator[World]:
    upgrade_core(database_url)
    engine = create_engine(database_url)
    users = [graph.create_user(nick)["id"] for nick in ("ada", "alan", "grace")]
    with Receiver() as receiver:
        yield World(graph, receiver, engine, database_url, tmp_path, users)
    engine.dispose()


USERS = """
  - name: people
    resource: users
    change_types: [updated, deleted]
    lifetime: 2d
    renew_before: 1h
"""


def mail(users: list[str], *, name: str = "mail", change_types: str = "[created, updated]") -> str:
    return f"""
  - name: {name}
    resource: users/{{user}}/messages
    change_types: {change_types}
    lifetime: 1d
    renew_before: 30m
    for_each: {{users: [{", ".join(users)}]}}
"""


def test_apply_creates_then_a_second_run_only_keeps(world: World) -> None:
    spec = world.spec(USERS + mail(world.users[:2]))
    outcome = world.run(spec)
    assert outcome.ok, [r.error for r in outcome.failed]
    assert outcome.plan.counts()["create"] == 3
    assert all(r.ok for r in outcome.results)
    live = world.live()
    assert len(live) == 3
    assert all(s["clientState"] is None for s in live)  # List never shows it: only our table knows
    rows = world.rows()
    assert {r.subscription_id for r in rows} == {s["id"] for s in live}
    states = [r.client_state for r in rows]
    assert len(set(states)) == 3 and all(32 <= len(s) <= 128 for s in states)
    assert {r.scope_key for r in rows} == {"users", *(f"users/{u}/messages" for u in world.users[:2])}
    # The expiry Graph granted is what we recorded.
    by_id = {s["id"]: s for s in live}
    for r in rows:
        assert parse_datetime(by_id[r.subscription_id]["expirationDateTime"]) == r.expires_at.replace(
            tzinfo=r.expires_at.tzinfo
            or parse_datetime(by_id[r.subscription_id]["expirationDateTime"]).tzinfo
        )

    seq = world.log_seq()
    again = world.run(spec)
    assert [str(a.kind) for a in again.plan.actions] == ["keep"] * 3
    assert again.results == []
    assert world.writes_since(seq) == []


def test_dry_run_writes_nothing_and_the_cli_speaks_text_json_and_exit_codes(world: World) -> None:
    spec_path = world.tmp / "subscriptions.yaml"
    spec_path.write_text(world.spec_text(USERS + mail(world.users[:1])))
    runner = CliRunner()
    env = {SECRET_ENV: world.graph.info["client_secret"]}
    seq = world.log_seq()

    dry = runner.invoke(
        main, ["reconcile", "--spec", str(spec_path), "--dry-run", "--detailed-exitcode"], env=env
    )
    assert dry.exit_code == 2, dry.output
    assert "Plan: 2 to create" in dry.output and "users/" in dry.output and "expires" in dry.output
    assert world.writes_since(seq) == [] and world.live() == []

    applied = runner.invoke(main, ["reconcile", "--spec", str(spec_path), "--output", "json"], env=env)
    assert applied.exit_code == 0, applied.output
    doc = json.loads(applied.output)
    assert doc["applied"] and doc["ok"] and doc["counts"]["create"] == 2
    assert all(r["ok"] for r in doc["results"])
    states = [r.client_state for r in world.rows()]
    for state in states:
        assert state not in applied.output and state not in dry.output

    noop = runner.invoke(main, ["reconcile", "--spec", str(spec_path), "--detailed-exitcode"], env=env)
    assert noop.exit_code == 0, noop.output
    assert "Nothing to do" in noop.output


def test_renew_when_due_with_the_new_expiry_capped(world: World) -> None:
    spec = world.spec(USERS)
    first = world.run(spec)
    created_expiry = first.results[0].expires_at
    assert created_expiry is not None
    world.advance(timedelta(days=2) - timedelta(minutes=50))  # inside renew_before (1 h)
    outcome = world.run(spec)
    assert [str(a.kind) for a in outcome.plan.actions] == ["renew"]
    result = outcome.results[0]
    assert result.ok and result.expires_at is not None
    assert result.expires_at - world.now() > timedelta(days=1, hours=23)
    (row,) = world.rows()
    assert row.subscription_id == first.results[0].subscription_id  # renewed in place
    assert parse_datetime(world.live()[0]["expirationDateTime"]) == result.expires_at


def test_new_notification_url_is_patched_and_changed_change_types_replace(world: World) -> None:
    spec = world.spec(USERS + mail(world.users[:1]))
    world.run(spec)
    old_ids = {r.resource: r.subscription_id for r in world.rows()}

    moved = world.spec(USERS + mail(world.users[:1]), notification_path="moved")
    outcome = world.run(moved)
    assert sorted(str(a.kind) for a in outcome.plan.actions) == ["update", "update"]
    assert outcome.ok
    assert all(s["notificationUrl"].endswith("/moved") for s in world.live())
    assert {r.resource: r.subscription_id for r in world.rows()} == old_ids

    narrowed = world.spec(USERS + mail(world.users[:1], change_types="[created]"), notification_path="moved")
    outcome = world.run(narrowed)
    kinds = {a.resource: str(a.kind) for a in outcome.plan.actions}
    message_resource = f"users/{world.users[0]}/messages"
    assert kinds == {"users": "keep", message_resource: "replace"}
    assert outcome.ok, [r.error for r in outcome.failed]
    live = {s["resource"]: s for s in world.live()}
    assert live[message_resource]["changeType"] == "created"
    assert live[message_resource]["id"] != old_ids[message_resource]
    rows = {r.resource: r for r in world.rows()}
    assert rows[message_resource].subscription_id == live[message_resource]["id"]
    assert rows[message_resource].change_type == "created"


def test_lost_table_means_replace_and_renamed_declaration_means_adopt(world: World) -> None:
    spec = world.spec(USERS)
    world.run(spec)
    (before,) = world.rows()

    # Renamed declaration: our table knows the subscription and its clientState, so only the row changes.
    renamed = world.spec(USERS.replace("name: people", "name: everyone"))
    seq = world.log_seq()
    outcome = world.run(renamed)
    assert [str(a.kind) for a in outcome.plan.actions] == ["adopt"]
    assert outcome.ok and world.writes_since(seq) == []
    (row,) = world.rows()
    assert (row.subscription_id, row.name, row.client_state) == (
        before.subscription_id,
        "everyone",
        before.client_state,
    )

    # The table is lost: Graph will not reveal the clientState, so the subscription is replaced.
    with world.engine.begin() as connection:
        connection.execute(sa.delete(table))
    outcome = world.run(renamed)
    assert [str(a.kind) for a in outcome.plan.actions] == ["replace"]
    assert outcome.plan.actions[0].changes == ("clientState",)
    assert outcome.ok
    (live,) = world.live()
    (row,) = world.rows()
    assert live["id"] == row.subscription_id != before.subscription_id


def test_prune_needs_the_flag_and_fan_out_follows_the_list(world: World) -> None:
    spec = world.spec(USERS + mail(world.users[:2]))
    world.run(spec)
    shrunk = world.spec(USERS + mail([world.users[0], world.users[2]]))
    outcome = world.run(shrunk)
    assert outcome.ok
    assert [(str(a.kind), a.resource) for a in outcome.plan.actions if a.kind != Kind.KEEP] == [
        ("create", f"users/{world.users[2]}/messages")
    ]
    assert [a.resource for a in outcome.plan.orphans] == [f"users/{world.users[1]}/messages"]
    assert outcome.plan.expansions[0].users == (world.users[0], world.users[2])
    assert len(world.live()) == 4

    pruned = world.run(world.spec(USERS), prune=True)
    assert pruned.ok
    assert sorted(str(a.kind) for a in pruned.plan.actions) == ["keep", "prune", "prune", "prune"]
    assert [s["resource"] for s in world.live()] == ["users"]
    assert [r.resource for r in world.rows()] == ["users"]


def test_validation_failure_is_reported_per_subscription_with_a_hint(world: World) -> None:
    world.receiver.handshake = "wrong"
    spec_path = world.tmp / "subscriptions.yaml"
    spec_path.write_text(world.spec_text(USERS))
    result = CliRunner().invoke(
        main, ["reconcile", "--spec", str(spec_path)], env={SECRET_ENV: world.graph.info["client_secret"]}
    )
    assert result.exit_code == 1, result.output
    assert "+ create  users [people]  FAILED: " in result.output
    assert "validationToken" in result.output  # Graph's own message
    assert "is the receiver running" in result.output and "public HTTPS" in result.output
    assert world.live() == [] and world.rows() == []


def test_a_plan_over_a_quota_is_refused_before_any_write(world: World) -> None:
    many = [f"u{i:03d}" for i in range(101)]
    spec = world.spec(
        f"""
  - name: each
    resource: users/{{user}}
    change_types: [updated]
    for_each: {{users: [{", ".join(many)}]}}
"""
    )
    seq = world.log_seq()
    outcome = world.run(spec)
    assert not outcome.ok and not outcome.applied
    assert any("101" in str(p) and "100" in str(p) for p in outcome.plan.problems)
    assert world.writes_since(seq) == []


def test_recreate_and_reauthorize_repair_one_subscription(world: World) -> None:
    spec = world.spec(USERS + mail(world.users[:1]))
    world.run(spec)
    rows = {r.resource: r for r in world.rows()}
    people = rows["users"]
    graphs = graphs_for(spec)
    try:
        # reauthorizationRequired, not due: POST /reauthorize, nothing else changes.
        result = reauthorize(
            people.subscription_id, spec=spec, graphs=graphs, engine=world.engine, clock=world.now
        )
        assert result.ok and result.subscription_id == people.subscription_id

        # subscriptionRemoved: Graph dropped it; recreate makes a new one with a new secret.
        message = rows[f"users/{world.users[0]}/messages"]
        assert world.graph.delete(f"subscriptions/{message.subscription_id}").status_code == 204
        result = recreate(
            message.subscription_id, spec=spec, graphs=graphs, engine=world.engine, clock=world.now
        )
        assert result.ok and result.recreated and result.subscription_id != message.subscription_id
        new_row = {r.resource: r for r in world.rows()}[message.resource]
        assert new_row.subscription_id == result.subscription_id
        assert new_row.client_state != message.client_state

        # reauthorize on a subscription Graph no longer has: 404, so it is recreated.
        assert world.graph.delete(f"subscriptions/{people.subscription_id}").status_code == 204
        result = reauthorize(
            people.subscription_id, spec=spec, graphs=graphs, engine=world.engine, clock=world.now
        )
        assert result.ok and result.recreated
        assert len(world.live()) == 2 and len(world.rows()) == 2
    finally:
        for g in graphs.values():
            g.close()


def test_two_concurrent_reconciles_create_no_duplicates(world: World) -> None:
    spec = world.spec(USERS + mail(world.users))
    # Slow handshakes keep the first run inside the lock long enough for the second to wait visibly.
    world.receiver.handshake, world.receiver.handshake_delay_s = "slow", 0.3
    outcomes: list[Outcome] = []
    waits: list[LockInfo | None] = []
    errors: list[BaseException] = []

    def run() -> None:
        graphs: dict[str, GraphClient] = graphs_for(spec)
        try:
            outcomes.append(
                reconcile(spec, graphs=graphs, engine=world.engine, clock=world.now, on_wait=waits.append)
            )
        except BaseException as error:  # surfaced below
            errors.append(error)
        finally:
            for g in graphs.values():
                g.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(outcomes) == 2 and all(o.ok for o in outcomes)
    creates = sorted(o.plan.counts()["create"] for o in outcomes)
    assert creates == [0, 4]  # the second one waited, then found everything in place
    assert waits and all(w is not None and "reconcile" in w.holder for w in waits)
    assert len(world.live()) == 4 and len(world.rows()) == 4


def test_group_fan_out_picks_up_membership_changes_on_the_next_run(world: World) -> None:
    graph_url = world.graph.info["graph_url"]
    ada, alan, grace = world.users
    r = world.graph.post(
        "groups",
        json={
            "displayName": "Finance",
            "mailEnabled": False,
            "mailNickname": "finance",
            "securityEnabled": True,
            "members@odata.bind": [
                f"{graph_url}/directoryObjects/{ada}",
                f"{graph_url}/directoryObjects/{alan}",
            ],
        },
    )
    assert r.status_code == 201, r.text
    group = r.json()["id"]
    declaration = f"""
  - name: finance-mail
    resource: users/{{user}}/messages
    change_types: [created]
    for_each: {{group: {group}}}
"""
    spec = world.spec(declaration)
    first = world.run(spec)
    assert first.ok
    assert first.plan.expansions[0].users == tuple(sorted([ada, alan]))
    assert first.plan.expansions[0].source == f"members of group {group}"

    # Grace joins, Alan leaves: the next reconcile creates Grace's and reports Alan's as an orphan.
    ref = {"@odata.id": f"{graph_url}/directoryObjects/{grace}"}
    assert world.graph.post(f"groups/{group}/members/$ref", json=ref).status_code == 204
    assert world.graph.delete(f"groups/{group}/members/{alan}/$ref").status_code == 204
    second = world.run(spec)
    assert second.ok
    assert [(str(a.kind), a.resource) for a in second.plan.actions if a.kind != Kind.KEEP] == [
        ("create", f"users/{grace}/messages")
    ]
    assert [a.resource for a in second.plan.orphans] == [f"users/{alan}/messages"]
    third = world.run(spec, prune=True)
    assert [(str(a.kind), a.resource) for a in third.plan.actions if a.kind != Kind.KEEP] == [
        ("prune", f"users/{alan}/messages")
    ]
    assert sorted(s["resource"] for s in world.live()) == sorted(f"users/{u}/messages" for u in (ada, grace))


def test_filter_fan_out(world: World) -> None:
    spec = world.spec(
        """
  - name: a-mail
    resource: users/{user}/messages
    change_types: [created]
    for_each: {filter: "startswith(displayName,'A')"}
"""
    )
    outcome = world.run(spec, dry_run=True)
    assert outcome.plan.expansions[0].users == tuple(sorted(world.users[:2]))  # Ada and Alan, not Grace
    assert outcome.plan.counts()["create"] == 2


def test_end_to_end_with_syncer_receiver_the_recorded_client_state_verifies_notifications(
    graph: EmulatorClient, database_url: str, tmp_path: Path
) -> None:
    import time

    from werkzeug.serving import make_server

    from syncer.inbox import Inbox
    from syncer.receiver.app import create_app

    upgrade_core(database_url)
    engine = create_engine(database_url)
    server = make_server("127.0.0.1", 0, create_app(engine), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        user = graph.create_user("linus")["id"]
        port = server.server_port
        world = World(graph, Receiver(), engine, database_url, tmp_path, [user], f"http://127.0.0.1:{port}")
        spec = world.spec(USERS)

        outcome = world.run(spec)
        assert outcome.ok, [r.error for r in outcome.failed]
        assert graph.patch(f"users/{user}", json={"jobTitle": "Kernel hacker"}).status_code == 204
        inbox = Inbox(engine)
        deadline = time.monotonic() + 15
        while inbox.depth() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        # Accepted means the clientState in the notification matched the one reconcile recorded.
        assert inbox.depth() >= 1
    finally:
        server.shutdown()
        engine.dispose()


def test_worker_entry_points_run_and_repair(world: World) -> None:
    from syncer.reconcile import run
    from syncer.reconcile.lifecycle import repair

    spec = world.spec(USERS)
    outcome = run(spec, engine=world.engine, clock=world.now)
    assert outcome is not None and outcome.ok and outcome.plan.counts()["create"] == 1
    (row,) = world.rows()
    assert world.graph.delete(f"subscriptions/{row.subscription_id}").status_code == 204
    result = repair(
        spec,
        event="subscriptionRemoved",
        subscription_id=row.subscription_id,
        engine=world.engine,
        clock=world.now,
    )
    assert result is not None and result.ok and result.recreated
    assert repair(spec, event="missed", subscription_id="x", engine=world.engine) is None
    assert repair(spec, event="subscriptionRemoved", subscription_id="unknown", engine=world.engine) is None


def test_validation_failures_inside_a_batch_and_with_the_receiver_down(world: World) -> None:
    world.receiver.handshake = "status202"
    spec = world.spec(USERS + mail(world.users[:2]))  # three creates: one $batch envelope
    outcome = world.run(spec)
    assert not outcome.ok and len(outcome.failed) == 3
    for result in outcome.failed:
        assert result.error is not None and "200 OK" in result.error  # Graph's message, per subscription
        assert result.hint is not None and "is the receiver running" in result.hint

    world.receiver.stop()  # nobody listens at the notification URL any more
    outcome = world.run(spec)
    assert len(outcome.failed) == 3
    assert all(r.hint and "reachable from Graph" in r.hint for r in outcome.failed)
    assert world.live() == [] and world.rows() == []


def test_a_failed_create_first_replace_keeps_the_old_subscription(world: World) -> None:
    spec = world.spec(mail(world.users[:1]))
    world.run(spec)
    (before,) = world.rows()
    world.receiver.handshake = "wrong"
    outcome = world.run(world.spec(mail(world.users[:1], change_types="[created]")))
    (action,) = outcome.plan.actions
    assert action.kind == Kind.REPLACE and action.create_first
    assert not outcome.ok
    # The new one could not be created, so the old one was left alone, row and all.
    assert [s["id"] for s in world.live()] == [before.subscription_id]
    assert [r.subscription_id for r in world.rows()] == [before.subscription_id]


def test_a_new_lifecycle_url_is_a_delete_first_replace(world: World) -> None:
    spec = world.spec(USERS)
    world.run(spec)
    (before,) = world.rows()
    text = world.spec_text(USERS).replace(world.url("lifecycle"), world.url("lifecycle2"))
    path = world.tmp / "subscriptions.yaml"
    path.write_text(text)
    moved = load_spec(path, environ={SECRET_ENV: world.graph.info["client_secret"]})
    outcome = world.run(moved)
    (action,) = outcome.plan.actions
    assert action.kind == Kind.REPLACE and not action.create_first
    assert action.changes == ("lifecycleNotificationUrl",)
    assert outcome.ok, [r.error for r in outcome.failed]
    (live,) = world.live()
    assert live["lifecycleNotificationUrl"].endswith("/lifecycle2") and live["id"] != before.subscription_id
    (row,) = world.rows()
    assert row.subscription_id == live["id"] and row.client_state != before.client_state


def test_a_404_while_renewing_recreates_the_subscription(world: World) -> None:
    spec = world.spec(USERS)
    world.run(spec)
    (before,) = world.rows()
    world.advance(timedelta(days=2) - timedelta(minutes=30))
    fault = {"type": "status", "status": 404, "method": "PATCH", "path": "^/v1.0/subscriptions/", "count": 1}
    assert world.graph.admin("POST", "faults", json=fault).status_code == 201
    outcome = world.run(spec)
    assert [str(a.kind) for a in outcome.plan.actions] == ["renew"]
    (result,) = outcome.results
    assert result.ok and result.recreated and result.subscription_id != before.subscription_id
    (live,) = world.live()
    (row,) = world.rows()
    assert live["id"] == row.subscription_id == result.subscription_id
    assert row.client_state != before.client_state


def _certificate(tmp: Path, name: str) -> tuple[Path, Path]:
    """A self-signed RSA certificate and its key, as Graph wants for rich notifications."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now().astimezone()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_rich_subscription_and_certificate_rotation(world: World) -> None:
    def rich(cert_id: str, cert: Path, key: Path) -> str:
        return f"""
  - name: rich-mail
    resource: users/{{user}}/messages
    change_types: [created]
    include_resource_data: true
    encryption: {{certificate: "{cert}", private_key: {{file: "{key}"}}, id: {cert_id}}}
    for_each: {{users: [{world.users[0]}]}}
"""

    first = _certificate(world.tmp, "first")
    outcome = world.run(world.spec(rich("cert-1", *first)))
    assert outcome.ok, [r.error for r in outcome.failed]
    (live,) = world.live()
    assert live["includeResourceData"] is True and live["encryptionCertificateId"] == "cert-1"
    assert "$select=" in live["resource"]  # Outlook rich subscriptions must select (the spec adds it)
    (before,) = world.rows()

    second = _certificate(world.tmp, "second")
    outcome = world.run(world.spec(rich("cert-2", *second)))
    (action,) = outcome.plan.actions
    assert action.kind == Kind.UPDATE and "encryptionCertificate" in action.changes
    assert outcome.ok, [r.error for r in outcome.failed]
    (live,) = world.live()
    assert live["id"] == before.subscription_id and live["encryptionCertificateId"] == "cert-2"
    (row,) = world.rows()
    assert row.encryption_certificate_id == "cert-2" and row.client_state == before.client_state
    assert [str(a.kind) for a in world.run(world.spec(rich("cert-2", *second))).plan.actions] == ["keep"]


def test_an_unmigrated_database_is_one_clear_error(
    graph: EmulatorClient, database_url: str, tmp_path: Path
) -> None:
    from syncer.errors import DatabaseError

    engine = create_engine(database_url)
    with Receiver() as receiver:
        world = World(graph, receiver, engine, database_url, tmp_path, [])
        spec = world.spec(USERS)
        for dry_run in (True, False):
            with pytest.raises(DatabaseError, match="syncer db upgrade"):
                world.run(spec, dry_run=dry_run)
    engine.dispose()


def test_two_tenants_each_get_their_own_subscriptions(world: World) -> None:
    second = world.graph.admin("POST", "tenants", json={"domain": "fabrikam.onmicrosoft.com"}).json()[
        "tenantId"
    ]
    app = world.graph.admin(
        "POST", "apps", json={"tenantId": second, "roles": ["User.Read.All"], "secret": "second-secret"}
    ).json()
    text = world.spec_text(
        """
  - name: people
    tenant: main
    resource: users
    change_types: [updated]
  - name: fabrikam-people
    tenant: fabrikam
    resource: users
    change_types: [updated]
"""
    ).replace(
        "receiver:",
        f"""  - name: fabrikam
    tenant_id: "{second}"
    client_id: "{app["clientId"]}"
    client_secret: {{env: SECOND_SECRET}}
receiver:""",
        1,
    )
    path = world.tmp / "subscriptions.yaml"
    path.write_text(text)
    spec = load_spec(
        path, environ={SECRET_ENV: world.graph.info["client_secret"], "SECOND_SECRET": "second-secret"}
    )
    outcome = world.run(spec)
    assert outcome.ok, [r.error for r in outcome.failed]
    assert sorted((r.tenant_id, r.name) for r in world.rows()) == sorted(
        [(world.graph.info["tenant_id"], "people"), (second, "fabrikam-people")]
    )
    again = world.run(spec)
    assert [str(a.kind) for a in again.plan.actions] == ["keep", "keep"]


def test_a_missing_for_each_group_names_the_declaration_and_line(world: World) -> None:
    # Issue 18: a for_each over a group Graph does not have failed with a bare 404, in reconcile and the worker.
    from syncer.errors import ConfigError, ReconcileError
    from syncer.graph.client import GraphClient
    from syncer.worker.scopes import declared_scopes

    missing = "00000000-0000-0000-0000-00000000dead"
    spec = world.spec(USERS + f"""
  - name: finance-mail
    resource: users/{{user}}/messages
    change_types: [created]
    for_each: {{group: {missing}}}
""")
    line = spec.subscription("finance-mail").line
    with pytest.raises(ReconcileError) as error:
        world.run(spec)
    text = str(error.value)
    assert f"subscription 'finance-mail' (line {line})" in text and missing in text and "404" in text, text
    client = GraphClient.from_spec(spec, spec.tenants[0].name)
    try:
        with pytest.raises(ConfigError) as from_worker:
            declared_scopes(spec, clients={spec.tenants[0].name: client})
    finally:
        client.close()
    assert f"subscription 'finance-mail' (line {line})" in str(from_worker.value), str(from_worker.value)
