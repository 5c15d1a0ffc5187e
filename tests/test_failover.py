"""Failover on PostgreSQL: the receiver and the worker recover by themselves, and say when they cannot.

Three ways a database goes bad without going away cleanly, each on a real server:

- a silent partition (a failover behind a virtual IP): the open connections go dead without a RST
  while new ones get through (tests/chaos_database.py's TcpProxy ``blackhole()``);
- a primary that turns read-only (``default_transaction_read_only``, its sessions terminated) and
  then writable again: sessions opened in between stay read-only unless replaced;
- a slow database (TcpProxy ``slow()``): answers come, late.

Throughout, every 2xx stands for a stored notification, and /readyz says 503 while a notification
could not be stored. Recovery is asserted within 30 s of the database being healthy again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import notification_builders as nb
import pytest
import requests
import sqlalchemy as sa
from chaos_database import Database
from sqlalchemy.engine import Engine
from test_receiver import Server, add_subscription
from test_sync_support import USERS_SPEC, make_env
from test_worker import notify, settle, worker_for

from syncer import database, schema
from syncer.receiver.app import create_app
from syncer.receiver.receive import ReceiverSettings

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

SUB = "0c3b8f6e-7d51-4a47-9b0e-51a3c2a7e001"
RECOVERY_SECONDS = 30.0


def post(server: Server, user_id: str, *, tenant: str = nb.TENANT, timeout: float = 10.0) -> int:
    """POST one change notification for *user_id*; the status, or 0 when no answer came in *timeout*."""
    try:
        return server.session.post(
            server.url + "/notifications", data=nb.body(nb.change_item(SUB, user_id=user_id, tenant=tenant)),
            headers={"Content-Type": "application/json"}, timeout=timeout,
        ).status_code
    except requests.RequestException:
        return 0


def ready(server: Server, *, timeout: float = 5.0) -> int:
    try:
        return server.session.get(server.url + "/readyz", timeout=timeout).status_code
    except requests.RequestException:
        return 0


def stored_users(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        resources = conn.execute(sa.select(schema.inbox.c.resource)).scalars().all()
    return {str(r).rsplit("/", 1)[-1] for r in resources}


@pytest.fixture
def tables(postgres_url: str) -> Iterator[Engine]:
    """Direct (no proxy) engine on the test's schema, with the core tables and our subscription."""
    engine = database.create_engine(postgres_url)
    schema.metadata.create_all(engine)
    add_subscription(engine, SUB)
    yield engine
    engine.dispose()


@pytest.fixture
def proxied(postgres_url: str, tables: Engine) -> Iterator[tuple[Database, Server]]:
    """The receiver (real HTTP, in-process) reaching PostgreSQL through a TcpProxy."""
    db = Database.for_url(postgres_url)
    settings = ReceiverSettings(subscription_ttl=1.0)  # lookups meet the fault too (pooled connections)
    engine = database.create_engine(db.process_url, io_timeout=settings.store_timeout + 3.0)  # as syncer.receiver.serve does
    server = Server(create_app(engine, settings=settings))
    try:
        yield db, server
    finally:
        server.close()
        engine.dispose()
        db.close()


def test_a_silent_partition_is_survived_and_readiness_tells(proxied: tuple[Database, Server], tables: Engine) -> None:
    db, server = proxied
    assert db.proxy is not None
    assert post(server, "warm") == 202 and ready(server) == 200  # the committer's connection is open
    results: list[tuple[float, str, int]] = []  # (seconds since the blackhole, user, status)
    readiness: list[tuple[float, int]] = []
    stop = threading.Event()
    db.proxy.blackhole()  # the committer's connection is now dead; new connections get through
    started = time.monotonic()

    def sender(name: str) -> None:  # Graph delivers concurrently
        while not stop.is_set():
            user = f"{name}-{len(results)}"
            status = post(server, user)
            results.append((time.monotonic() - started, user, status))

    def prober() -> None:  # a load balancer's readiness probe
        while not stop.is_set():
            readiness.append((time.monotonic() - started, ready(server)))
            time.sleep(0.2)

    threads = [threading.Thread(target=sender, args=(f"s{i}",)) for i in range(3)]
    threads.append(threading.Thread(target=prober))
    for thread in threads:
        thread.start()
    try:
        recovered_at = None
        while time.monotonic() - started < RECOVERY_SECONDS:
            time.sleep(0.2)
            recent = [status for _, _, status in results[-6:]]
            if len(recent) == 6 and set(recent) == {202} and readiness and readiness[-1][1] == 200:
                recovered_at = time.monotonic() - started
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    statuses = [status for _, _, status in results]
    assert recovered_at is not None, f"no recovery within {RECOVERY_SECONDS:g}s: {results}, readyz {readiness}"
    # It could not commit for a while (the dead connection), and readiness said so.
    assert 503 in statuses and 503 in [status for _, status in readiness], (results, readiness)
    # Every 2xx has its row.
    acked = {user for _, user, status in results if status == 202}
    assert acked <= stored_users(tables), sorted(acked - stored_users(tables))
    print(f"silent partition: 202 and ready again after {recovered_at:.1f}s; {results}; readyz {readiness}")


def test_the_worker_leaves_connections_that_died_silently(
    postgres_url: str, tmp_path: Path, emulator_info: dict[str, Any], graph: Any
) -> None:
    """The worker's pooled connections go silent (a failover): its next drain must not wait on them
    for ever. The client I/O bound is shortened to 5 s here (default 75 s; on a real network TCP's
    own timers, tcp_user_timeout and keepalives, fire first: the user-space proxy hides them)."""
    db = Database.for_url(postgres_url)
    url = sa.make_url(db.process_url).update_query_dict({"syncer_io_timeout": "5"})
    env_gen = make_env(tmp_path, emulator_info, url.render_as_string(hide_password=False), graph, USERS_SPEC.format(delete="soft"))
    env = next(env_gen)
    worker = worker_for(env)
    direct = database.create_engine(postgres_url)
    try:
        worker.drain()
        settle(worker)
        assert db.proxy is not None
        db.proxy.blackhole()  # every connection the worker's pool holds is now dead
        healthy = time.monotonic()
        user = env.graph.create_user("after-the-failover")
        notify(SimpleNamespace(engine=direct, tenant_id=env.tenant_id), "unknown-sub", f"Users/{user['id']}")  # type: ignore[arg-type]
        mirrored = threading.Event()

        def drain_until_mirrored() -> None:
            while not mirrored.is_set() and time.monotonic() - healthy < RECOVERY_SECONDS + 5:
                try:
                    worker.drain()
                    settle(worker)
                    if user["id"] in env.rows("users"):
                        mirrored.set()
                except Exception:
                    time.sleep(0.2)

        thread = threading.Thread(target=drain_until_mirrored, daemon=True)  # may hang on the old code
        thread.start()
        assert mirrored.wait(RECOVERY_SECONDS), "the worker did not recover from the silent partition"
        print(f"worker after a silent partition: mirrored after {time.monotonic() - healthy:.1f}s")
    finally:
        worker.close()
        direct.dispose()
        env_gen.close()
        db.close()


def test_a_slow_database_acknowledges_nothing_unstored(proxied: tuple[Database, Server], tables: Engine) -> None:
    db, server = proxied
    assert db.proxy is not None
    assert post(server, "warm") == 202 and ready(server) == 200
    settings = ReceiverSettings()
    db.proxy.slow(2.0)  # a round trip takes 4 s more: beyond Graph's whole allowance, yet it works
    acked: list[str] = []
    statuses: list[int] = []
    readiness: list[tuple[int, float]] = []
    try:
        for i in range(4):
            user = f"slow{i}"
            status = post(server, user, timeout=30)
            statuses.append(status)
            if status == 202:
                acked.append(user)
            t = time.monotonic()
            readiness.append((ready(server, timeout=30), time.monotonic() - t))
    finally:
        db.proxy.restore()
    # Readiness answers within the time a notification is given (a probe that hangs on a slow
    # database is a probe timeout, not an answer), and says 503: a notification would not be stored
    # within store_timeout either.
    assert all(seconds < settings.store_timeout + 1.0 for _, seconds in readiness), readiness
    assert [status for status, _ in readiness] == [503] * len(readiness), readiness
    # Fast again: accepted at once.
    deadline = time.monotonic() + RECOVERY_SECONDS
    while post(server, f"fast{len(statuses)}") != 202:
        statuses.append(0)
        assert time.monotonic() < deadline, statuses
    assert set(acked) <= stored_users(tables), (acked, statuses)
    print(f"slow database: statuses {statuses}; readyz {readiness}")


def test_connection_bounds_are_set_and_the_url_overrides_them() -> None:
    url, io_timeout = database.postgres_url(sa.make_url("postgresql+psycopg://u@db/x?options=-csearch_path%3Ds"))
    assert io_timeout == database.IO_TIMEOUT
    assert {k: url.query[k] for k in database.POSTGRES_BOUNDS} == database.POSTGRES_BOUNDS
    assert url.query["options"] == f"-csearch_path=s -c statement_timeout={database.STATEMENT_TIMEOUT}"
    url, io_timeout = database.postgres_url(sa.make_url(
        "postgresql+psycopg://u@db/x?tcp_user_timeout=60000&options=-c%20statement_timeout%3D0&syncer_io_timeout=0"
    ))
    assert io_timeout is None and "syncer_io_timeout" not in url.query  # libpq would refuse the key
    assert url.query["tcp_user_timeout"] == "60000" and url.query["options"] == "-c statement_timeout=0"
    assert url.query["keepalives_idle"] == database.POSTGRES_BOUNDS["keepalives_idle"]


def test_sessions_that_outlive_their_cause_are_told_apart_from_bad_statements() -> None:
    import psycopg

    assert database.session_unusable(psycopg.errors.ReadOnlySqlTransaction())  # 25006
    assert database.session_unusable(psycopg.errors.AdminShutdown())  # 57P01
    assert database.session_unusable(psycopg.errors.ConnectionTimeout())  # client side, no SQLSTATE
    assert not database.session_unusable(psycopg.errors.UniqueViolation())
    assert not database.session_unusable(psycopg.errors.QueryCanceled())  # the server is there: it cancelled


def test_migrations_and_backfills_are_exempt_from_the_bounds(postgres_url: str) -> None:
    """A statement timeout protects the receiver and the worker; it must not fail a schema change or
    a backfill that rightly runs for minutes (syncer db upgrade, mirror.upgrade use ``unbounded``)."""
    url = sa.make_url(postgres_url)
    tight = url.update_query_dict({"syncer_io_timeout": "1", "options": f"{url.query['options']} -c statement_timeout=300"})
    engine = database.create_engine(tight.render_as_string(hide_password=False), pool_size=1, max_overflow=0)
    try:
        with pytest.raises(sa.exc.OperationalError), engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_sleep(0.6)")  # cancelled by the server (57014)
        with engine.begin() as conn, database.unbounded(conn):
            conn.exec_driver_sql("SELECT pg_sleep(1.3)")  # past both bounds
        with pytest.raises(sa.exc.OperationalError), engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_sleep(0.6)")  # the same pooled connection is bounded again
    finally:
        engine.dispose()


# --- a primary that turns read-only and back ---------------------------------------------------------


@pytest.fixture
def own_database() -> Iterator[tuple[str, Engine]]:
    """A whole database of the test's own (it is made read-only; others share `test`): its URL, and
    an engine on the server's `test` database to administer it from."""
    from conftest import postgres_base_url

    base = postgres_base_url()
    assert base is not None
    name = f"syncer_ro_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(base).set(database=name).render_as_string(hide_password=False), admin
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def set_read_only(admin: Engine, database: str, on: bool, *, terminate: bool) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{database}" SET default_transaction_read_only = {"on" if on else "off"}')
        if terminate:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                {"d": database},
            )


def test_a_primary_read_only_then_writable_again_is_recovered_from(
    own_database: tuple[str, Engine], tmp_path: Path, emulator_info: dict[str, Any], graph: Any
) -> None:
    url, admin = own_database
    name = sa.make_url(url).database
    assert name
    env_gen = make_env(tmp_path, emulator_info, url, graph, USERS_SPEC.format(delete="soft"))
    env = next(env_gen)
    receiver_engine = database.create_engine(url)
    server = Server(create_app(receiver_engine))
    worker = worker_for(env)
    try:
        with env.engine.begin() as conn:
            now = sa.func.now()
            conn.execute(sa.insert(schema.subscriptions).values(
                subscription_id=SUB, tenant_id=env.tenant_id, name="users", scope_key="users", resource="users",
                change_type="updated,deleted", notification_url="https://example.test/n", client_state=nb.CLIENT_STATE,
                include_resource_data=False, expires_at=sa.func.now() + sa.text("interval '2 days'"), created_at=now,
                updated_at=now, status="active"))
        worker.drain()
        settle(worker)
        assert post(server, "before", tenant=env.tenant_id) == 202 and ready(server) == 200

        # Read-only: the sessions are terminated; the new ones the receiver and the worker open are read-only.
        set_read_only(admin, name, True, terminate=True)
        assert post(server, "during", tenant=env.tenant_id) == 503
        assert ready(server) == 503
        try:
            notify(env, SUB, "Users/during")
        except Exception:
            pass  # refused, as it should be
        try:
            worker.drain()
        except Exception:
            pass
        # The database is writable again; nobody terminates the read-only sessions this time.
        set_read_only(admin, name, False, terminate=False)
        healthy = time.monotonic()

        user = env.graph.create_user("after-read-only")
        # The worker's side on its own: the notification is stored by a fresh engine (a receiver that
        # started after the episode), so that the worker is judged by its own connections.
        fresh = database.create_engine(url)
        try:
            notify(SimpleNamespace(engine=fresh, tenant_id=env.tenant_id), SUB, f"Users/{user['id']}")  # type: ignore[arg-type]
        finally:
            fresh.dispose()
        receiver_ok = worker_ok = None
        while time.monotonic() - healthy < RECOVERY_SECONDS and (receiver_ok is None or worker_ok is None):
            if receiver_ok is None and post(server, "after", tenant=env.tenant_id) == 202 and ready(server) == 200:
                receiver_ok = time.monotonic() - healthy
            if worker_ok is None:
                try:
                    worker.drain()
                    settle(worker)
                except Exception:
                    pass
                if user["id"] in env.rows("users"):
                    worker_ok = time.monotonic() - healthy
            time.sleep(0.2)
        assert receiver_ok is not None and worker_ok is not None, (
            f"seconds to recover: receiver {receiver_ok}, worker {worker_ok} (None: not within {RECOVERY_SECONDS:g}s)"
        )
        assert "after" in stored_users(env.engine)
        print(f"read-only episode: receiver back after {receiver_ok:.1f}s, worker after {worker_ok:.1f}s")
    finally:
        worker.close()
        server.close()
        receiver_engine.dispose()
        env_gen.close()


@pytest.mark.postgres
def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A connection used moments ago is not pinged (a round trip per checkout, tests/test_pass_cost.py); one idle
    # longer than PING_AFTER_IDLE is, and if its server process is gone it is replaced before anyone uses it.
    name = f"ping-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(database, "PING_AFTER_IDLE", 0.3)
    engine = database.create_engine(postgres_url, connect_args={"application_name": name}, pool_size=1, max_overflow=0)
    pings: list[bool] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        try:
            pings.append(ping(dbapi_connection))
        except Exception:
            pings.append(False)
            raise
        return pings[-1]

    monkeypatch.setattr(engine.dialect, "do_ping", counted)

    def backend() -> int:
        with engine.connect() as connection:
            return int(connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())

    first = backend()
    assert (backend(), pings) == (first, [])  # fresh, then checked in moments ago: no ping
    time.sleep(0.4)
    assert (backend(), pings) == (first, [True])  # idle: pinged, alive
    admin = sa.create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    admin.dispose()
    time.sleep(0.4)
    replaced = backend()  # the ping fails, the pool opens another connection: no error reaches the caller
    assert replaced != first and pings == [True, False]
    engine.dispose()
