"""The receiver's verdict under other traffic, shared URLs and clock skew, over real HTTP on SQLite and PostgreSQL.

* A flood of random subscription ids (no secret needed) must not turn a valid notification into a
  202 without its inbox row: every id is read before it is called unknown, reads are grouped, and
  the cache keeps our subscriptions (LRU, unknown ids in a space of their own).
* Tokens of other apps sharing the URL are ignored (see also tests/test_notifications.py).
* A validation token from a clock ahead of ours within 5 minutes is fine; beyond that, or with the
  signing keys unreachable, the rich items get 503 (Graph retries), never a silent 202.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import notification_builders as nb
import orjson
import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from test_receiver import JSON, RICH_SUB, SUB, Server, add_subscription, inbox_rows, make_receiver

from syncer import database, schema
from syncer.errors import DatabaseError
from syncer.receiver.app import create_app
from syncer.receiver.notifications import DecryptionKey, JwksCache, KeyRing, TokenValidator
from syncer.receiver.receive import ReceiverSettings
from syncer.receiver.subscriptions import SubscriptionCache


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = database.create_engine(database_url)
    schema.metadata.create_all(engine)
    add_subscription(engine, SUB)
    add_subscription(engine, RICH_SUB, rich=True)
    yield engine
    engine.dispose()


# --- a flood of random subscription ids --------------------------------------------------------------


def forged_post() -> bytes:
    item = {"subscriptionId": str(uuid.uuid4()), "tenantId": "t", "changeType": "updated", "resource": "x", "clientState": "x"}
    return orjson.dumps({"value": [item]})


def test_a_flood_of_random_ids_never_costs_a_valid_notification(engine: Engine) -> None:
    # Subscriptions created while the flood runs: each one's first notification needs a read.
    fresh = [str(uuid.uuid4()) for _ in range(40)]
    for sid in fresh:
        add_subscription(engine, sid)
    server = make_receiver(engine)
    stop = threading.Event()
    flood_answers: list[int] = []

    def flood() -> None:
        session = requests.Session()
        session.trust_env = False
        while not stop.is_set():
            flood_answers.append(session.post(server.url + "/notifications", data=forged_post(), headers=JSON, timeout=10).status_code)

    threads = [threading.Thread(target=flood) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(flood_answers) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(flood_answers) >= 100, "the flood runs before the valid notifications"
        answered = {}
        for n, sid in enumerate(fresh):
            response = server.post("/notifications", nb.body(nb.change_item(sid, user_id=f"u{n}")))
            answered[f"u{n}"] = response.status_code
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.close()
    stored = {r.resource_id for r in inbox_rows(engine)}
    assert {u for u, status in answered.items() if status == 202} <= stored, "a 202 without its inbox row"
    assert set(answered.values()) == {202} and stored == set(answered)
    assert set(flood_answers) == {202}, "forged ids are read, found not ours, and refused with 202"


def count_queries(engine: Engine, delay: float = 0.0) -> list[str]:
    queries: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "syncer_subscriptions" in statement:
            queries.append(statement)
            time.sleep(delay)

    sa.event.listen(engine, "before_cursor_execute", before)
    return queries


def test_the_cache_keeps_our_subscriptions_while_forged_ids_come_and_go(engine: Engine) -> None:
    queries = count_queries(engine)
    cache = SubscriptionCache(engine, ttl=60, unknown_ttl=60, max_entries=10)
    assert set(cache([SUB, "forged-0"])) == {SUB} and len(queries) == 1
    for n in range(1, 50):
        assert cache([f"forged-{n}"]) == {}
    assert len(queries) == 50, "every unknown id is read once, none is refused unread"
    assert set(cache([SUB])) == {SUB} and len(queries) == 50, "our subscription survived the flood"
    assert cache(["forged-49"]) == {} and len(queries) == 50, "a recent unknown id is cached as unknown"
    assert cache(["forged-1"]) == {} and len(queries) == 51, "an old one was evicted, alone"


def test_concurrent_lookups_share_one_read(engine: Engine) -> None:
    queries = count_queries(engine, delay=0.2)
    cache = SubscriptionCache(engine)
    results: list[Mapping[str, Any]] = []

    start = threading.Barrier(20)

    def look(ids: list[str]) -> None:
        start.wait()
        results.append(cache(ids))

    threads = [threading.Thread(target=look, args=([f"forged-{n}", SUB],)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and all(set(r) == {SUB} for r in results)
    # One leader reads its ids while the other 19 gather into the next read (a loaded machine may
    # split them a little more; ungrouped it is 20).
    assert len(queries) <= 5, "reads are grouped: one in flight, the next one gathers the rest"


def test_a_lookup_that_cannot_finish_is_a_503_not_an_unknown_id(engine: Engine) -> None:
    queries = count_queries(engine, delay=1.0)
    cache = SubscriptionCache(engine, timeout=0.2)
    errors: list[Exception] = []

    def look() -> None:
        try:
            cache(["forged-1"])
        except DatabaseError as exc:
            errors.append(exc)

    leader = threading.Thread(target=look)
    leader.start()
    deadline = time.monotonic() + 5
    while not queries and time.monotonic() < deadline:  # the leader is inside its slow read
        time.sleep(0.01)
    with pytest.raises(DatabaseError):
        cache([SUB])  # waits behind the slow read, past its deadline
    leader.join()


# --- clock skew and unreachable signing keys ---------------------------------------------------------------


def rich_post(token: str, *, with_basic: bool = True, message: str = "m1") -> bytes:
    item = nb.rich_item(RICH_SUB, public_key=nb.rsa_key("cert-new").public_key(), certificate_id="cert-2026-02",
                        resource={"id": message})
    items = [nb.change_item(SUB, user_id="u-basic"), item] if with_basic else [item]
    return nb.body(*items, tokens=[token])


def test_a_token_from_a_clock_two_minutes_ahead_is_stored(engine: Engine) -> None:
    server = make_receiver(engine)
    try:
        response = server.post("/notifications", rich_post(nb.validation_token(issued_ago=-120)))
        assert response.status_code == 202
        assert sorted(r.kind for r in inbox_rows(engine)) == ["change", "change"]
    finally:
        server.close()


def test_a_token_not_yet_valid_beyond_the_leeway_gets_503_a_metric_and_a_log_line(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="syncer.receiver.receive")
    server = make_receiver(engine)
    try:
        response = server.post("/notifications", rich_post(nb.validation_token(issued_ago=-600)))
        assert response.status_code == 503, "Graph retries; a 202 would lose the rich item"
        # The basic item was stored already; the retry finds it as a duplicate.
        assert [r.resource_id for r in inbox_rows(engine)] == ["u-basic"]
        assert "s in the future" in caplog.text and "clock" in caplog.text
        metrics = server.get("/metrics").text
        assert 'syncer_notifications_deferred_total{reason="token_not_yet_valid"} 1' in metrics
        assert 'syncer_receiver_requests_total{endpoint="notifications",status="503"} 1' in metrics
        # The clock is right again: Graph's retry lands.
        assert server.post("/notifications", rich_post(nb.validation_token())).status_code == 202
        basic, rich = inbox_rows(engine)
        assert basic.resource_id == "u-basic", "the basic item's second copy was absorbed as a duplicate"
        assert rich.payload["decryptedContent"] == {"id": "m1"}
    finally:
        server.close()


def test_an_expired_token_is_refused_with_202(engine: Engine) -> None:
    server = make_receiver(engine)
    try:
        token = nb.validation_token(issued_ago=3600 + 400, lifetime=3600)
        assert server.post("/notifications", rich_post(token, with_basic=False)).status_code == 202
        assert inbox_rows(engine) == []
    finally:
        server.close()


def test_unreachable_signing_keys_mean_503(engine: Engine) -> None:
    def fetch(url: str) -> Mapping[str, Any]:
        raise ConnectionError("identity platform down")

    tokens = TokenValidator(JwksCache("https://idp.test/keys", fetch=fetch), app_ids=[nb.APP_ID])
    keys = KeyRing([DecryptionKey("cert-2026-02", nb.rsa_key("cert-new"))])
    server = Server(create_app(engine, settings=ReceiverSettings(), tokens=tokens, keys=keys))
    try:
        assert server.post("/notifications", rich_post(nb.validation_token(), with_basic=False)).status_code == 503
        assert inbox_rows(engine) == []
        assert 'syncer_notifications_deferred_total{reason="token_keys_unavailable"} 1' in server.get("/metrics").text
    finally:
        server.close()


def test_serve_config_reads_the_token_leeway() -> None:
    from syncer.receiver.serve import ServeConfig, _token_validator

    config = ServeConfig.from_env({"SYNCER_DATABASE_URL": "sqlite://", "SYNCER_RECEIVER_APP_IDS": nb.APP_ID,
                                   "SYNCER_RECEIVER_TOKEN_LEEWAY": "42"})
    validator = _token_validator(config)
    assert config.token_leeway == 42 and validator is not None and validator.leeway == 42
    assert ServeConfig(database_url="sqlite://").token_leeway == 300


# --- several apps sharing the notification URL -----------------------------------------------------------


def test_a_token_for_another_app_does_not_refuse_our_items(engine: Engine) -> None:
    server = make_receiver(engine)
    try:
        post = nb.body(
            nb.change_item(SUB, user_id="u-basic"),
            nb.rich_item(RICH_SUB, public_key=nb.rsa_key("cert-new").public_key(), certificate_id="cert-2026-02"),
            tokens=[nb.validation_token(audience="another-app-sharing-the-url"), nb.validation_token()],
        )
        assert server.post("/notifications", post).status_code == 202
        assert len(inbox_rows(engine)) == 2
    finally:
        server.close()
