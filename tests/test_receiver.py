"""The receiver over real HTTP, on SQLite and PostgreSQL: handshake, checks, durable storage, limits.

Most bodies are composed from Graph's documentation (tests/notification_builders.py, an independent reading);
the last tests have the emulator create the subscriptions (handshake included) and deliver changes,
lifecycle events and rich notifications across a certificate rotation.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import notification_builders as nb
import pytest
import requests
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from werkzeug.serving import BaseWSGIServer, make_server

from syncer import database, schema
from syncer.emulator import EmulatorConfig
from syncer.emulator.delivery_policy import RetryRules
from syncer.receiver.app import create_app
from syncer.receiver.notifications import DecryptionKey, JwksCache, KeyRing, StaticKeys, TokenValidator
from syncer.receiver.receive import ReceiverSettings

SUB = "7f105c7d-2dc5-4530-97cd-4e7ae6534c07"
RICH_SUB = "76222963-cc7b-42d2-882d-8aaa69cb2ba3"
JSON = {"Content-Type": "application/json"}


def add_subscription(engine: Engine, subscription_id: str, *, client_state: str = nb.CLIENT_STATE, rich: bool = False) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(schema.subscriptions).values(
                subscription_id=subscription_id, tenant_id=nb.TENANT, name="people", scope_key="users",
                resource="users", change_type="updated,deleted", notification_url="https://example.test/notifications",
                lifecycle_url="https://example.test/lifecycle", client_state=client_state,
                include_resource_data=rich, encryption_certificate_id="cert-2026-02" if rich else None,
                expires_at=now + timedelta(days=2), created_at=now, updated_at=now, status="active",
            )
        )


def inbox_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(schema.inbox).order_by(schema.inbox.c.id)).all())


class Server:
    """The app on a free loopback port, in a thread (threaded: concurrent requests share commits)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.httpd: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.session = requests.Session()
        self.session.trust_env = False

    def post(self, path: str, data: bytes | str = b"", *, headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
        return self.session.post(self.url + path, data=data, headers=JSON if headers is None else headers, timeout=10, **kw)

    def get(self, path: str) -> requests.Response:
        return self.session.get(self.url + path, timeout=10)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.app.extensions["syncer.receiver.app"].close()


def make_receiver(engine: Engine, **settings: Any) -> Server:
    tokens = TokenValidator(StaticKeys({"graph-key-1": nb.rsa_key("graph-signing").public_key()}), app_ids=[nb.APP_ID])
    keys = KeyRing([DecryptionKey("cert-2026-01", nb.rsa_key("cert-old")), DecryptionKey("cert-2026-02", nb.rsa_key("cert-new"))])
    return Server(create_app(engine, settings=ReceiverSettings(**settings), tokens=tokens, keys=keys))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = database.create_engine(database_url)
    schema.metadata.create_all(engine)
    add_subscription(engine, SUB)
    add_subscription(engine, RICH_SUB, rich=True)
    yield engine
    engine.dispose()


@pytest.fixture
def receiver(engine: Engine) -> Iterator[Server]:
    server = make_receiver(engine)
    yield server
    server.close()


# --- handshake ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/notifications", "/lifecycle"])
def test_handshake_echoes_the_decoded_token_as_plain_text_without_a_database(path: str) -> None:
    dead = database.create_engine("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1")
    server = make_receiver(dead)
    try:
        token = "Validation: Testing client application reachability <script>alert(1)</script> a+b&c=d é"
        response = server.session.post(
            server.url + path, params={"validationToken": token}, headers={"Content-Type": "text/plain; charset=utf-8"}, timeout=5
        )
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.content.decode("utf-8") == token
        assert response.elapsed.total_seconds() < 1
        # The notification URL's own query string is kept by Graph; the token is found among it.
        response = server.post(path + "?tenant=x", params={"validationToken": "abc"}, headers={})
        assert (response.status_code, response.text) == (200, "abc")
    finally:
        server.close()
        dead.dispose()


# --- storing -------------------------------------------------------------------------------------------


def test_accepted_items_are_stored_refused_ones_counted_and_the_answer_is_202(receiver: Server, engine: Engine) -> None:
    good = nb.change_item(SUB, user_id="u-good")
    items = [
        good,
        nb.change_item("11111111-0000-0000-0000-000000000000"),  # unknown subscription
        nb.change_item(SUB, client_state="guessed"),
        nb.change_item(SUB, client_state=None),
        nb.change_item(SUB, tenant="00000000-0000-0000-0000-000000000009"),
        {"subscriptionId": SUB},  # malformed item
    ]
    response = receiver.post("/notifications", nb.body(*items))
    assert response.status_code == 202 and response.text == ""
    (row,) = inbox_rows(engine)
    assert (row.tenant_id, row.subscription_id, row.kind, row.event) == (nb.TENANT, SUB, "change", "updated")
    assert (row.resource, row.resource_id, row.processed_at) == ("Users/u-good", "u-good", None)
    assert row.payload["resourceData"]["id"] == "u-good" and "clientState" not in row.payload
    # Everything forged: still 202 (forgers learn nothing), nothing stored.
    response = receiver.post("/notifications", nb.body(nb.change_item(SUB, client_state="x")))
    assert response.status_code == 202 and len(inbox_rows(engine)) == 1
    metrics = receiver.get("/metrics").text
    assert 'syncer_notifications_rejected_total{reason="client_state_mismatch"} 3' in metrics
    assert 'syncer_notifications_rejected_total{reason="unknown_subscription"} 1' in metrics
    assert 'syncer_notifications_rejected_total{reason="tenant_mismatch"} 1' in metrics
    assert 'syncer_notifications_rejected_total{reason="malformed_item"} 1' in metrics
    assert "syncer_notifications_received_total 7" in metrics
    assert "syncer_notifications_stored_total 1" in metrics
    assert "syncer_inbox_depth 1" in metrics
    assert "syncer_inbox_store_seconds_count 1" in metrics


def test_refusals_are_logged_without_secrets(receiver: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="syncer.receiver.receive")
    receiver.post("/notifications", nb.body(nb.change_item(SUB, client_state="attacker-guess-123")))
    text = caplog.text
    assert "client_state_mismatch" in text and SUB in text
    assert nb.CLIENT_STATE not in text and "attacker-guess-123" not in text


def test_duplicates_are_absorbed(receiver: Server, engine: Engine) -> None:
    raw = nb.body(
        nb.change_item(SUB, user_id="u1", etag="e1", notification_id="n1"),
        nb.change_item(SUB, user_id="u1", etag="e1", notification_id="n1"),
        nb.change_item(SUB, user_id="u1", etag="e2"),
    )
    for _ in range(3):
        assert receiver.post("/notifications", raw).status_code == 202
    assert len(inbox_rows(engine)) == 2
    assert "syncer_notifications_duplicate_total 7" in receiver.get("/metrics").text


def test_every_lifecycle_event_is_stored_for_the_worker(receiver: Server, engine: Engine) -> None:
    events = ["reauthorizationRequired", "subscriptionRemoved", "missed"]
    response = receiver.post("/lifecycle", nb.body(*[nb.lifecycle_item(SUB, e) for e in events]))
    assert response.status_code == 202
    # Lifecycle events on the notification URL (an older Graph revision) are stored as well.
    assert receiver.post("/notifications", nb.body(nb.lifecycle_item(RICH_SUB, "missed"))).status_code == 202
    rows = inbox_rows(engine)
    assert [(r.kind, r.event, r.subscription_id) for r in rows] == [
        ("lifecycle", e, SUB) for e in events
    ] + [("lifecycle", "missed", RICH_SUB)]
    assert all(r.resource is None for r in rows)


def test_rich_notifications_are_decrypted_with_either_key_during_rotation(receiver: Server, engine: Engine) -> None:
    items = [
        nb.rich_item(RICH_SUB, public_key=nb.rsa_key("cert-old").public_key(), certificate_id="cert-2026-01",
                     resource={"id": "m-old", "body": {"content": "from the old key"}}),
        nb.rich_item(RICH_SUB, public_key=nb.rsa_key("cert-new").public_key(), certificate_id="cert-2026-02",
                     resource={"id": "m-new", "body": {"content": "from the new key"}}),
    ]
    items[1]["resource"] += "x"  # two distinct items
    response = receiver.post("/notifications", nb.body(*items, tokens=[nb.validation_token()]))
    assert response.status_code == 202
    rows = inbox_rows(engine)
    assert [r.payload["decryptedContent"]["body"]["content"] for r in rows] == ["from the old key", "from the new key"]
    assert all("encryptedContent" not in r.payload for r in rows)


def forged(kind: str) -> bytes:
    key_new = nb.rsa_key("cert-new").public_key()
    item = nb.rich_item(RICH_SUB, public_key=key_new, certificate_id="cert-2026-02")
    token = nb.validation_token()
    if kind == "bad_signature":
        token = nb.validation_token(signing_key=nb.rsa_key("forger"))
    elif kind == "wrong_aud":
        token = nb.validation_token(audience="22222222-0000-0000-0000-000000000000")
    elif kind == "wrong_appid":
        token = nb.validation_token(appid="33333333-0000-0000-0000-000000000000")
    elif kind == "expired":
        token = nb.validation_token(issued_ago=3 * 3600)
    elif kind == "bad_hmac":
        item["encryptedContent"]["dataSignature"] = nb.encrypt_resource(
            {"id": "other"}, public_key=key_new, certificate_id="cert-2026-02"
        )["dataSignature"]
    elif kind == "wrong_cert_id":
        item["encryptedContent"]["encryptionCertificateId"] = "cert-2025-12"
    elif kind == "no_token":
        return nb.body(item)
    return nb.body(item, tokens=[token])


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("bad_signature", "token_signature"),
        ("wrong_aud", "token_tenant"),  # a token for another app is ignored: none covers the item
        ("wrong_appid", "token_appid"),
        ("expired", "token_expired"),
        ("no_token", "token_missing"),
    ],
)
def test_each_rich_forgery_is_refused_and_nothing_is_stored(receiver: Server, engine: Engine, kind: str, reason: str) -> None:
    response = receiver.post("/notifications", forged(kind))
    assert response.status_code == 202
    assert inbox_rows(engine) == []
    assert f'syncer_notifications_rejected_total{{reason="{reason}"}} 1' in receiver.get("/metrics").text


@pytest.mark.parametrize(("kind", "reason"), [("bad_hmac", "hmac_mismatch"), ("wrong_cert_id", "unknown_certificate")])
def test_content_that_does_not_decrypt_is_stored_without_it(receiver: Server, engine: Engine, kind: str, reason: str) -> None:
    # The item's clientState and token are good: a true change whose content cannot be used. Stored without
    # it, so that the worker reads the resource by id: never a lost change.
    assert receiver.post("/notifications", forged(kind)).status_code == 202
    (row,) = inbox_rows(engine)
    payload = row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
    assert payload["undecrypted"] == reason and "decryptedContent" not in payload
    assert f'syncer_notifications_undecrypted_total{{reason="{reason}"}} 1' in receiver.get("/metrics").text


# --- the database unavailable ------------------------------------------------------------------------------


def test_database_unreachable_means_503_never_2xx() -> None:
    dead = database.create_engine("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1")
    server = make_receiver(dead)
    try:
        response = server.post("/notifications", nb.body(nb.change_item(SUB)))
        assert response.status_code == 503
        assert server.get("/healthz").status_code == 200
        assert server.get("/readyz").status_code == 503
        metrics = server.get("/metrics")
        assert metrics.status_code == 200 and "syncer_inbox_depth" not in metrics.text
    finally:
        server.close()
        dead.dispose()


def test_a_failing_commit_means_503_and_nothing_false_is_stored(receiver: Server, engine: Engine) -> None:
    # Warm the subscription cache, then take the inbox table away so that only the commit fails.
    assert receiver.post("/notifications", nb.body(nb.change_item(SUB, user_id="first"))).status_code == 202
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE syncer_inbox RENAME TO syncer_inbox_away"))
    try:
        response = receiver.post("/notifications", nb.body(nb.change_item(SUB, user_id="lost?")))
        assert response.status_code == 503
        assert receiver.get("/readyz").status_code == 200
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE syncer_inbox_away RENAME TO syncer_inbox"))
    assert [r.resource_id for r in inbox_rows(engine)] == ["first"]
    # Graph retries the 503; now it is stored.
    assert receiver.post("/notifications", nb.body(nb.change_item(SUB, user_id="lost?"))).status_code == 202
    assert [r.resource_id for r in inbox_rows(engine)] == ["first", "lost?"]


@pytest.mark.postgres
def test_a_database_outage_is_logged_once_not_per_503(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Each POST during an outage is answered 503 (Graph retries it), but the log says so once, then
    once more when the database is back, without a traceback above DEBUG."""
    import logging

    from chaos_database import Database

    engine = database.create_engine(postgres_url)
    schema.metadata.create_all(engine)
    add_subscription(engine, SUB)
    db = Database.for_url(postgres_url)
    assert db.proxy is not None
    proxied = database.create_engine(db.process_url)
    server = make_receiver(proxied)
    try:
        assert server.post("/notifications", nb.body(nb.change_item(SUB, user_id="before"))).status_code == 202
        with caplog.at_level(logging.INFO, logger="syncer"):
            db.proxy.cut()
            for n in range(10):
                response = server.post("/notifications", nb.body(nb.change_item(SUB, user_id=f"during-{n}")))
                assert response.status_code == 503
            db.proxy.restore()
            assert server.post("/notifications", nb.body(nb.change_item(SUB, user_id="after"))).status_code == 202
    finally:
        server.close()
        proxied.dispose()
        db.close()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 2, "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in loud)
    assert loud[0].getMessage().startswith("database unreachable: ")
    assert loud[0].getMessage().endswith("; answering 503 to notifications (Graph retries them)")
    assert loud[1].getMessage().startswith("database reachable again after ") and "(10 failed attempts)" in loud[1].getMessage()
    assert all(r.exc_info is None for r in loud)
    assert [r.resource_id for r in inbox_rows(engine)] == ["before", "after"]
    engine.dispose()


# --- limits ------------------------------------------------------------------------------------------------


def test_limits(engine: Engine) -> None:
    server = make_receiver(engine, max_body_bytes=10_000)
    try:
        big = nb.body(*[nb.change_item(SUB) for _ in range(60)])
        assert len(big) > 10_000
        assert server.post("/notifications", big).status_code == 413

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        assert server.post("/notifications", chunks()).status_code == 413
        ok = nb.body(nb.change_item(SUB))
        assert server.post("/notifications", ok, headers={"Content-Type": "text/plain"}).status_code == 415
        assert server.post("/notifications", ok, headers={}).status_code == 415
        assert server.post("/notifications", ok, headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 202
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            response = server.session.request(method, server.url + "/notifications", data=ok, headers=JSON, timeout=5)
            assert response.status_code == 405, method
        assert server.post("/notifications", b"{not json").status_code == 400
        assert server.post("/notifications", b'{"value": 3}').status_code == 400
        deep = b'{"value": [' + b"[" * 100 + b"]" * 100 + b"]}"
        assert server.post("/notifications", deep).status_code == 400
        assert server.post("/elsewhere", ok).status_code == 404
        assert [r.resource_id for r in inbox_rows(engine)] != []
        metrics = server.get("/metrics").text
        assert 'syncer_notifications_rejected_total{reason="body_too_large"} 2' in metrics
        assert 'syncer_notifications_rejected_total{reason="too_deep"} 1' in metrics
    finally:
        server.close()


def test_concurrent_requests_all_land(receiver: Server, engine: Engine) -> None:
    def send(n: int) -> None:
        session = requests.Session()
        session.trust_env = False
        for k in range(10):
            raw = nb.body(*[nb.change_item(SUB, user_id=f"u{n}-{k}-{j}") for j in range(5)])
            assert session.post(receiver.url + "/notifications", data=raw, headers=JSON, timeout=10).status_code == 202

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(inbox_rows(engine)) == 8 * 10 * 5


# --- random input ----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
plausible_item = st.fixed_dictionaries(
    {
        "subscriptionId": st.sampled_from([SUB, RICH_SUB, str(uuid.UUID(int=1))]) | st.text(max_size=70),
        "tenantId": st.sampled_from([nb.TENANT]) | st.text(max_size=5),
        "clientState": st.none() | st.text(max_size=40) | st.sampled_from(["s3cr3t-state-12", "S3CR3T-STATE-123", ""]),
        "changeType": st.sampled_from(["created", "updated", "deleted", "moved"]) | json_values,
        "resource": st.text(max_size=30),
    },
    optional={
        "resourceData": json_values,
        "lifecycleEvent": st.sampled_from(["missed", "subscriptionRemoved", "other"]) | json_values,
        "encryptedContent": json_values,
        "id": json_values,
    },
)


def dumps(value: Any) -> bytes:
    # The standard library writes what orjson refuses to (integers past 64 bits, lone surrogates).
    return json.dumps(value).encode()


bodies = (
    st.binary(max_size=300)
    | json_values.map(dumps)
    | st.lists(plausible_item | json_values, max_size=5).map(lambda items: dumps({"value": items}))
    | st.tuples(st.lists(plausible_item, max_size=3), st.lists(st.text(max_size=50), max_size=2)).map(
        lambda t: dumps({"value": t[0], "validationTokens": t[1]})
    )
)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    raw=bodies,
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""]) | header_values,
    extra=st.dictionaries(st.sampled_from(["X-Forwarded-For", "Accept", "Content-Encoding", "Transfer-Encoding", "Expect"]), header_values, max_size=2),
    path=st.sampled_from(["/notifications", "/lifecycle"]),
    query=st.none() | st.dictionaries(st.sampled_from(["validationToken", "tenant", "x"]), st.text(max_size=20), max_size=2),
)
def test_random_input_is_never_a_500_and_never_stored(
    receiver: Server, engine: Engine, raw: bytes, content_type: str, extra: dict[str, str], path: str, query: dict[str, str] | None
) -> None:
    headers = {"Content-Type": content_type, **{k: v for k, v in extra.items() if k != "Transfer-Encoding"}}
    try:
        response = receiver.session.post(receiver.url + path, data=raw, headers=headers, params=query, timeout=10)
    except (requests.exceptions.ConnectionError, requests.exceptions.InvalidHeader):
        return  # the client refused to send it (an impossible header) or the server dropped it: no 500
    assert response.status_code in {200, 202, 400, 413, 415, 417}, (response.status_code, response.text)
    assert inbox_rows(engine) == [], "the secret clientState is never guessed: nothing may be stored"


# --- end to end: the emulator delivers ---------------------------------------------------------------------

@pytest.fixture
def emulator_config() -> EmulatorConfig:
    fast = RetryRules(first_timeout_s=3.0, retry_timeout_s=3.0, window_s=2.0, initial_backoff_s=0.05, backoff_factor=2, max_backoff_s=0.3)
    return EmulatorConfig(seed=6, retry=fast, delivery_tick_s=0.005, delivery_sweep_s=0.01)


def certificate(key_name: str) -> str:
    key = nb.rsa_key(key_name)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncer receiver")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


def wait_rows(engine: Engine, n: int, timeout: float = 15) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = inbox_rows(engine)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


@pytest.fixture
def emulated(database_url: str, graph: Any) -> Iterator[tuple[Server, Engine, Any]]:
    """The receiver trusting the emulator's identity platform, and an engine on its database."""
    engine = database.create_engine(database_url)
    schema.metadata.create_all(engine)
    info = graph.info
    jwks = JwksCache(f"{info['authority']}/v2.0/.well-known/openid-configuration", verify=info["ca_cert"])
    tokens = TokenValidator(jwks, app_ids=[info["client_id"]])
    keys = KeyRing([DecryptionKey("cert-a", nb.rsa_key("emu-cert-a")), DecryptionKey("cert-b", nb.rsa_key("emu-cert-b"))])
    server = Server(create_app(engine, tokens=tokens, keys=keys))
    yield server, engine, graph
    server.close()
    engine.dispose()


def subscribe(graph: Any, server: Any, engine: Engine, **extra: Any) -> dict[str, Any]:
    """Create the subscription through the emulator (which runs the handshake on both URLs) and record
    it the way reconcile does."""
    secret = f"cs-{uuid.uuid4().hex}"
    body = {
        "changeType": "updated,deleted", "resource": "users", "clientState": secret,
        "notificationUrl": f"{server.url}/notifications?tenant=emu", "lifecycleNotificationUrl": f"{server.url}/lifecycle",
        "expirationDateTime": (datetime.now(UTC) + timedelta(hours=2)).isoformat().replace("+00:00", "Z"), **extra,
    }
    response = graph.post("subscriptions", json=body)
    assert response.status_code == 201, response.text
    sub = response.json()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(sa.insert(schema.subscriptions).values(
            subscription_id=sub["id"], tenant_id=graph.info["tenant_id"], name="x", scope_key=body["resource"],
            resource=body["resource"], change_type=body["changeType"], notification_url=body["notificationUrl"],
            lifecycle_url=body["lifecycleNotificationUrl"], client_state=secret,
            include_resource_data=bool(extra.get("includeResourceData")),
            encryption_certificate_id=extra.get("encryptionCertificateId"),
            expires_at=now + timedelta(hours=2), created_at=now, updated_at=now, status="active",
        ))
    return sub  # type: ignore[no-any-return]


def test_emulator_delivers_changes_and_every_lifecycle_event(emulated: tuple[Server, Engine, Any]) -> None:
    server, engine, graph = emulated
    sub = subscribe(graph, server, engine)
    assert "syncer_handshakes_total" in server.get("/metrics").text
    user = graph.create_user("ada")
    rows = wait_rows(engine, 1)
    assert [(r.kind, r.subscription_id, r.resource_id) for r in rows] == [("change", sub["id"], user["id"])]
    # Graph's retries after a 503 (database unavailable) are stored once the database is back.
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE syncer_inbox RENAME TO syncer_inbox_away"))
    graph.create_user("bob")
    deadline = time.monotonic() + 10
    while 'syncer_receiver_requests_total{endpoint="notifications",status="503"}' not in server.get("/metrics").text:
        assert time.monotonic() < deadline, "the emulator should have met a 503"
        time.sleep(0.05)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE syncer_inbox_away RENAME TO syncer_inbox"))
    rows = wait_rows(engine, 2)
    assert len([r for r in rows if r.kind == "change"]) == 2
    for event in ("reauthorizationRequired", "missed", "subscriptionRemoved"):  # removed last: it ends the subscription
        fired = graph.admin("POST", f"subscriptions/{sub['id']}/lifecycle", json={"lifecycleEvent": event})
        assert fired.status_code in (200, 202), fired.text
    rows = wait_rows(engine, 5)
    assert sorted(r.event for r in rows if r.kind == "lifecycle") == ["missed", "reauthorizationRequired", "subscriptionRemoved"]


def test_emulator_rich_notifications_across_a_key_rotation(emulated: tuple[Server, Engine, Any]) -> None:
    server, engine, graph = emulated
    user = graph.create_user("uma")
    sub = subscribe(
        graph, server, engine, resource=f"users/{user['id']}/messages?$select=subject,isRead", changeType="created",
        includeResourceData=True, encryptionCertificate=certificate("emu-cert-a"), encryptionCertificateId="cert-a",
    )
    assert graph.post(f"users/{user['id']}/mailFolders/inbox/messages", json={"subject": "before rotation"}).status_code == 201
    (first,) = wait_rows(engine, 1)
    assert first.payload["decryptedContent"]["subject"] == "before rotation"
    assert first.payload["encryptionCertificateId"] == "cert-a"
    # Rotate: PATCH the subscription's certificate; the receiver holds both keys.
    patched = graph.patch(f"subscriptions/{sub['id']}", json={
        "encryptionCertificate": certificate("emu-cert-b"), "encryptionCertificateId": "cert-b",
        "expirationDateTime": (datetime.now(UTC) + timedelta(hours=3)).isoformat().replace("+00:00", "Z"),
    })
    assert patched.status_code == 200, patched.text
    assert graph.post(f"users/{user['id']}/mailFolders/inbox/messages", json={"subject": "after rotation"}).status_code == 201
    rows = wait_rows(engine, 2)
    assert [(r.payload["encryptionCertificateId"], r.payload["decryptedContent"]["subject"]) for r in rows] == [
        ("cert-a", "before rotation"), ("cert-b", "after rotation"),
    ]
    assert "syncer_notifications_rejected_total" not in server.get("/metrics").text


# --- `syncer serve`: gunicorn, several worker processes --------------------------------------------------


@contextmanager
def served(
    database_url: str, *, python: str | None = None, cwd: Path | None = None, **env: str
) -> Iterator[tuple[str, list[str]]]:
    """`syncer serve` (gunicorn) in a subprocess configured by SYNCER_* *env*: its URL, and a list that
    holds its whole output once it stopped (SIGTERM, asserted clean). *python*: another interpreter
    (an installed syncer's), run in *cwd*."""
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environ = {**os.environ, "SYNCER_DATABASE_URL": database_url, "SYNCER_RECEIVER_BIND": f"127.0.0.1:{port}", **env}
    code = "from syncer.receiver.serve import ServeConfig, serve; serve(ServeConfig.from_env())"
    proc = subprocess.Popen(
        [python or sys.executable, "-c", code], env=environ, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    output: list[str] = []
    session = requests.Session()
    session.trust_env = False
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if session.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or a worker still booting behind the listening socket
            assert time.monotonic() < deadline, "gunicorn did not come up"
            time.sleep(0.1)
        yield url, output
    finally:
        proc.send_signal(signal.SIGTERM)
        output.append(proc.communicate(timeout=30)[0].decode())
    assert proc.returncode == 0, output[0]
    # gevent on PostgreSQL, threads on SQLite (ServeConfig explains why), and no warning from the patching
    assert f"Using worker: {'gthread' if database_url.startswith('sqlite') else 'gevent'}" in output[0]
    assert "MonkeyPatchWarning" not in output[0]


def test_serve_runs_gunicorn_workers_that_share_the_inbox_and_the_metrics(engine: Engine, database_url: str) -> None:
    # Two workers also on SQLite (whose default is 1): correctness, not speed.
    with served(database_url, SYNCER_RECEIVER_WORKERS="2") as (url, output):
        session = requests.Session()
        session.trust_env = False

        def send(n: int) -> None:
            local = requests.Session()
            local.trust_env = False
            for k in range(5):
                raw = nb.body(nb.change_item(SUB, user_id=f"s{n}-{k}"), nb.change_item(SUB, user_id=f"s{n}-{k}b"))
                assert local.post(url + "/notifications", data=raw, headers=JSON, timeout=10).status_code == 202

        threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(inbox_rows(engine)) == 80
        # Whichever worker answers /metrics sums every worker's numbers (snapshots flushed each second).
        deadline = time.monotonic() + 10
        while "syncer_notifications_stored_total 80" not in session.get(url + "/metrics", timeout=5).text:
            assert time.monotonic() < deadline, session.get(url + "/metrics", timeout=5).text
            time.sleep(0.2)
    assert output[0].count("Booting worker") >= 2


def test_serve_decrypts_rich_notifications_the_emulator_delivers(
    engine: Engine, database_url: str, graph: Any, tmp_path: Path
) -> None:
    """Under gunicorn (gevent on PostgreSQL): the JWKS fetch over HTTPS and the decryption in a worker."""
    key_file = tmp_path / "cert-a.pem"
    key_file.write_bytes(nb.rsa_key("emu-cert-a").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    info = graph.info
    with served(
        database_url, SYNCER_RECEIVER_WORKERS="1", SYNCER_RECEIVER_APP_IDS=info["client_id"],
        SYNCER_RECEIVER_JWKS_URL=f"{info['authority']}/v2.0/.well-known/openid-configuration",
        SYNCER_RECEIVER_JWKS_CA_BUNDLE=str(info["ca_cert"]), SYNCER_RECEIVER_KEYS=f"cert-a={key_file}",
    ) as (url, _output):
        user = graph.create_user("ida")
        subscribe(
            graph, SimpleNamespace(url=url), engine, resource=f"users/{user['id']}/messages?$select=subject",
            changeType="created", includeResourceData=True, encryptionCertificate=certificate("emu-cert-a"),
            encryptionCertificateId="cert-a",
        )
        posted = graph.post(f"users/{user['id']}/mailFolders/inbox/messages", json={"subject": "under gunicorn"})
        assert posted.status_code == 201
        (row,) = wait_rows(engine, 1)
    assert row.payload["decryptedContent"]["subject"] == "under gunicorn"


def test_serve_worker_class_follows_the_database_unless_set() -> None:
    from syncer.errors import ConfigError
    from syncer.receiver.serve import ServeConfig, gunicorn_options

    sqlite = gunicorn_options(ServeConfig(database_url="sqlite:///x.db"))
    postgres = gunicorn_options(ServeConfig(database_url="postgresql://h/db"))
    assert (sqlite["worker_class"], sqlite["workers"]) == ("gthread", 1)
    assert postgres["worker_class"] == "gevent" and postgres["worker_connections"] == 1000
    assert gunicorn_options(ServeConfig(database_url="postgresql://h/db", worker_class="gthread"))["worker_class"] == "gthread"
    with pytest.raises(ConfigError, match=r"worker class.*'eventlet'"):
        gunicorn_options(ServeConfig(database_url="postgresql://h/db", worker_class="eventlet"))
    assert ServeConfig.from_env({"SYNCER_DATABASE_URL": "sqlite://", "SYNCER_RECEIVER_WORKER_CLASS": "gevent"}).worker_class == "gevent"


def test_serve_config_from_the_shipped_spec() -> None:
    from syncer.receiver.serve import ServeConfig
    from syncer.spec import load_spec

    spec = load_spec(Path(__file__).parent.parent / "subscriptions.yaml", check_secrets=False)
    config = ServeConfig.from_spec(spec, workers=3)
    assert config.bind == f"{spec.receiver.host}:{spec.receiver.port}"
    assert config.settings.notification_path == "/notifications"
    assert config.settings.lifecycle_path == "/lifecycle"
    assert config.database_url == spec.database_url and config.workers == 3
    assert config.jwks_url.endswith("/common/discovery/v2.0/keys")
