"""The receiver wakes the worker's drain when it commits (syncer.worker.wake): a change reaches the mirror long before
the drain interval. Real emulator delivering over HTTP to a real receiver, real worker, SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_sync_support import USERS_SPEC
from werkzeug.serving import make_server

from syncer import database, mirror
from syncer.demo import free_port
from syncer.migrate import upgrade_core
from syncer.receiver.serve import app_for_spec
from syncer.reconcile import reconcile
from syncer.run import Runner
from syncer.spec import Spec, load_spec
from syncer.worker.scheduler import RunningWorker, Schedule, run_worker, sync_once

# The periodic drain would take 30 s: anything seen within a few seconds was woken.
LONG = Schedule(drain=30.0, safety_net=3600.0, reconcile=3600.0, housekeeping=3600.0)
SOON = 5.0


def write_spec(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, port: int) -> Spec:
    info = tmp_path / "emulator.json"
    info.write_text(json.dumps(emulator_info))
    path = tmp_path / "subscriptions.yaml"
    path.write_text(
        f"version: 1\ngraph: {{cloud: emulator, emulator_info: {info}}}\n"
        f"receiver: {{notification_url: 'http://127.0.0.1:{port}/notifications', "
        f"lifecycle_url: 'http://127.0.0.1:{port}/lifecycle', host: 127.0.0.1, port: {port}}}\n"
        f"database: {{url: '{database_url}'}}\nsubscriptions:\n{USERS_SPEC.format(delete='soft')}"
    )
    spec = load_spec(path).resolve_emulator()
    upgrade_core(spec.database_url)
    mirror.upgrade(spec)
    return spec


def display_name(spec: Spec, user: str) -> str | None:
    engine = database.create_engine(spec.database_url)
    try:
        with engine.connect() as connection:
            raw = connection.exec_driver_sql(f"SELECT _raw FROM users WHERE id = '{user}'").scalar()
    finally:
        engine.dispose()
    if raw is None:
        return None
    raw = raw if isinstance(raw, dict) else json.loads(raw)
    return raw.get("displayName")


def change_and_wait(graph: Any, spec: Spec, user: str, title: str) -> float:
    """PATCH the user's displayName in Graph; seconds until the mirror has it (asserts within SOON)."""
    started = time.monotonic()
    assert graph.patch(f"users/{user}", json={"displayName": title}).status_code == 204
    while display_name(spec, user) != title:
        assert time.monotonic() - started < SOON, f"{title!r} not mirrored within {SOON} s (drain interval 30 s)"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def users(graph: Any) -> list[str]:
    graph.admin("POST", "seed", json={"users": 3})
    return sorted(u["id"] for u in graph.delta_all("users/delta")[0])


def test_syncer_run_wakes_its_worker_in_process(
    tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any, users: list[str]
) -> None:
    """`syncer run` (receiver and worker in one process): the receiver's store path wakes the drain, on SQLite too."""
    port = free_port()
    spec = write_spec(tmp_path, emulator_info, database_url, port)
    sync_once(spec)  # the initial pass, which the 30 s drain would otherwise start late
    with Runner(spec, port=port, schedule=LONG, echo=lambda _line: None) as runner:
        assert runner.running is not None and runner.running.waker is not None
        took = change_and_wait(graph, spec, users[0], "woken")
        assert runner.running.waker.wakes >= 1
        change_and_wait(graph, spec, users[1], "woken again")
    assert took < SOON


@pytest.fixture
def receiver(tmp_path: Path, emulator_info: dict[str, Any], database_url: str) -> Iterator[tuple[Spec, int]]:
    """`syncer serve`'s app on its own (another process in production): it shares nothing with the worker."""
    port = free_port()
    spec = write_spec(tmp_path, emulator_info, database_url, port)
    engine = database.create_engine(spec.database_url)
    app = app_for_spec(spec, engine)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert reconcile(spec, engine=engine).ok
        sync_once(spec)
        yield spec, port
    finally:
        server.shutdown()
        app.extensions["syncer.receiver.app"].close()
        engine.dispose()


def worker_on(tmp_path: Path, emulator_info: dict[str, Any], url: str, port: int) -> RunningWorker:
    (tmp_path / "worker").mkdir(exist_ok=True)
    spec = write_spec(tmp_path / "worker", emulator_info, url, port)
    running = run_worker(spec, schedule=LONG, blocking=False, worker_id="woken")
    assert running.waker is not None and running.waker.listener is not None
    assert running.waker.listener.connected.wait(10), "the worker never listened"
    return running


def test_a_receiver_sharing_nothing_with_the_worker_wakes_it(
    tmp_path: Path, emulator_info: dict[str, Any], graph: Any, users: list[str], receiver: tuple[Spec, int]
) -> None:
    """PostgreSQL: the receiver's commit NOTIFYs, the worker's LISTEN connection starts the drain. SQLite: the
    worker sees PRAGMA data_version move and the inbox grow."""
    spec, port = receiver
    running = worker_on(tmp_path, emulator_info, spec.database_url, port)
    try:
        change_and_wait(graph, spec, users[0], "notified")
    finally:
        running.stop()


@pytest.mark.postgres
def test_the_listen_connection_comes_back_after_an_outage(
    tmp_path: Path, emulator_info: dict[str, Any], graph: Any, users: list[str], receiver: tuple[Spec, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker's connections (LISTEN among them) are cut and restored: it listens again and is woken again."""
    from chaos_database import Database

    spec, port = receiver
    if database.is_sqlite(spec.database_url):
        pytest.skip("a LISTEN connection is PostgreSQL's (SQLite's poller reads a local file)")
    db = Database.for_url(spec.database_url)
    assert db.proxy is not None
    running = worker_on(tmp_path, emulator_info, db.process_url, port)
    try:
        listener = running.waker.listener if running.waker else None
        assert listener is not None
        change_and_wait(graph, spec, users[0], "before the outage")
        with caplog.at_level("WARNING", logger="syncer.worker.jobs"):
            db.proxy.cut()
            deadline = time.monotonic() + 10
            while listener.connected.is_set():
                assert time.monotonic() < deadline, "the cut LISTEN connection was not noticed"
                time.sleep(0.05)
            time.sleep(1.0)  # a few failed reconnections: logged once
            db.proxy.restore()
            assert listener.connected.wait(15), "the worker did not listen again"
        assert listener.connections == 2
        unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(unreachable) == 1, [r.getMessage() for r in caplog.records]
        change_and_wait(graph, spec, users[1], "after the outage")
    finally:
        running.stop()
        db.close()
