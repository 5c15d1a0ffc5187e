"""No double work: each scope is passed once for each time it is marked, by one worker or several.

A pass is only started for a scope that is due (:func:`syncer.worker.scopestate.due_scopes`), but that reading
ages: between it and the pass taking the scope's lease, another pass may have cleaned the scope (another
worker's, whose pass was queued behind fewer others; or this worker's own, that ended between the query and
its use). Either way the second pass is a whole delta round for nothing (a request or more behind Graph's
latency, and its bookkeeping). Counted here as ``ok`` runs in ``syncer_sync_runs``: exactly one per scope
for an initial mirror, on SQLite (one worker) and PostgreSQL (one and two workers, each with its own engine).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_sync_support import SyncEnv, make_env

from syncer import database, schema
from syncer.worker import scopes, scopestate
from syncer.worker.jobs import Worker
from syncer.worker.scopes import ScopeIndex

SPEC = """
  - name: mail
    resource: users/{user}/messages
    for_each: {users: all}
    mirror: {table: messages, columns: [subject]}
  - name: contacts
    resource: users/{user}/contacts
    for_each: {users: all}
    mirror: {table: contacts, columns: [givenName]}
  - name: events
    resource: users/{user}/events
    for_each: {users: all}
    mirror: {table: events, columns: [subject]}
"""
USERS = 4
MESSAGES, CONTACTS, EVENTS = 6, 3, 2


@pytest.fixture
def tenant(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    seeded = graph.admin("POST", "seed", json={"users": USERS, "messagesPerUser": MESSAGES, "contactsPerUser": CONTACTS,
                                               "eventsPerUser": EVENTS, "contentUsers": USERS})
    assert seeded.status_code == 200, seeded.text
    # Graph-like latency: passes last long enough to overlap and to end while others read what is due.
    assert graph.admin("POST", "faults", json={"type": "latency", "ms": 60}).status_code < 300
    yield from make_env(tmp_path, emulator_info, database_url, graph, SPEC)


def two_workers_only_on_postgres(env: SyncEnv) -> None:
    if env.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one worker: a lock row refuses a second (syncer.worker.scheduler.single_worker_lock)")


@contextmanager
def a_second_worker_held_up(env: SyncEnv) -> Iterator[tuple[Worker, Worker, threading.Event]]:
    """Two workers on PostgreSQL, each with its own engine: ``first`` (8 pass threads) and ``second`` (2), the
    second's threads busy until the yielded gate is set, so the passes it starts wait in its queue."""
    two_workers_only_on_postgres(env)
    other = database.create_engine(env.spec.database_url)
    first = Worker(env.engine, {env.tenant_id: env.client}, index_of(env), worker_id="first", max_passes=8)
    second = Worker(other, {env.tenant_id: env.client}, index_of(env), worker_id="second", max_passes=2)
    first.register_scopes()
    gate = threading.Event()
    for _ in range(2):
        second.pool.submit(gate.wait)
    try:
        yield first, second, gate
    finally:
        gate.set()
        first.close()
        second.close()
        other.dispose()


def index_of(env: SyncEnv) -> ScopeIndex:
    return ScopeIndex.of(scopes.declared_scopes(env.spec, clients={env.spec.tenants[0].name: env.client}))


def runs_per_scope(env: SyncEnv) -> dict[str, Counter[str]]:
    """scope key -> its recorded passes by outcome."""
    r = schema.sync_runs
    out: dict[str, Counter[str]] = {}
    with env.engine.connect() as connection:
        for key, outcome in connection.execute(sa.select(r.c.scope_key, r.c.outcome)):
            out.setdefault(key, Counter())[outcome] += 1
    return out


def scope_count(env: SyncEnv) -> int:
    with env.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(schema.sync_state)).scalar_one())


def assert_each_scope_passed_once(env: SyncEnv) -> None:
    runs = runs_per_scope(env)
    twice = {key: dict(outcomes) for key, outcomes in runs.items() if outcomes != Counter(ok=1)}
    assert not twice, f"scopes passed more than once (or not ok): {twice}"
    assert len(runs) == scope_count(env)  # every scope, folders included, was passed
    assert len(env.rows("messages")) == USERS * MESSAGES
    assert len(env.rows("contacts")) == USERS * CONTACTS
    assert len(env.rows("events")) == USERS * EVENTS


def anything_due(env: SyncEnv) -> bool:
    """Whether any scope still asks for a pass, whoever holds it (a worker alone sees only those it may take)."""
    s = schema.sync_state
    with env.engine.connect() as connection:
        return connection.execute(
            sa.select(sa.func.count()).select_from(s)
            .where(sa.or_(s.c.dirty_since.is_not(None), s.c.resync_requested.is_(True), s.c.page_link.is_not(None)))
        ).scalar_one() > 0


def run_until_mirrored(worker: Worker, env: SyncEnv, *, timeout: float = 90) -> None:
    """What the worker's drain job does every half second, until no scope is due anywhere."""
    deadline = time.monotonic() + timeout
    while anything_due(env):
        assert time.monotonic() < deadline, "the mirror did not complete"
        worker.start_due()
        time.sleep(0.05)
    worker.wait(timeout=60)


class SlowReadingWorker(Worker):
    """A worker whose reading of the due scopes reaches it late, as on a loaded machine (32 pass threads on two
    cores, a busy database): the passes running when the query started end before its answer is used."""

    def due_rows(self, limit: int | None = None) -> Sequence[tuple[str, str, str | None]]:
        due = super().due_rows(limit)
        time.sleep(0.4)
        return due


def test_an_initial_mirror_through_containers_passes_each_scope_once(tenant: SyncEnv) -> None:
    env = tenant
    # The drain job starts due scopes every half second while passes run (here every 50 ms), and each container
    # pass (mail folders, contact folders) starts the folders it registered from its own thread: every such
    # start reads the due scopes while passes end.
    worker = SlowReadingWorker(env.engine, {env.tenant_id: env.client}, index_of(env), max_passes=8)
    worker.register_scopes()
    try:
        run_until_mirrored(worker, env)
    finally:
        worker.close()
    assert_each_scope_passed_once(env)
    # Not even a lease taken in vain: a scope whose pass ended after the reading began is not started again.
    assert set(Counter(r.outcome for r in worker.results)) == {"ok"}


def test_a_pass_queued_behind_others_finds_its_scope_passed_by_another_worker(tenant: SyncEnv) -> None:
    env = tenant
    with a_second_worker_held_up(env) as (first, second, gate):
        queued = second.start_due()  # these passes wait in the second worker's queue...
        assert queued, "nothing was due"
        # ... while the first worker passes the same scopes (and the folders its containers find).
        run_until_mirrored(first, env)
        gate.set()
        second.wait(timeout=60)
    assert {r.outcome for r in second.results} == {"clean"}, Counter(r.outcome for r in second.results)
    assert_each_scope_passed_once(env)


def test_passes_queued_for_scopes_another_worker_took_are_withdrawn_at_the_next_reading(tenant: SyncEnv) -> None:
    env = tenant
    with a_second_worker_held_up(env) as (first, second, gate):
        queued = second.start_due()
        run_until_mirrored(first, env)
        assert second.start_due() == []  # its next drain: nothing is due any more...
        assert second.withdrawn == len(queued)  # ... so what waited in its queue is withdrawn, not tried
        gate.set()
        second.wait(timeout=60)
    assert second.results == []
    assert_each_scope_passed_once(env)


def test_two_workers_mirroring_together_pass_each_scope_once(tenant: SyncEnv) -> None:
    env = tenant
    two_workers_only_on_postgres(env)
    other = database.create_engine(env.spec.database_url)
    workers = [
        Worker(env.engine, {env.tenant_id: env.client}, index_of(env), worker_id="first", max_passes=4),
        Worker(other, {env.tenant_id: env.client}, index_of(env), worker_id="second", max_passes=4),
    ]
    workers[0].register_scopes()
    failures: list[BaseException] = []

    def run(worker: Worker) -> None:
        try:
            run_until_mirrored(worker, env)
        except BaseException as error:  # reported by the test thread
            failures.append(error)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        for worker in workers:
            worker.close()
        other.dispose()
    assert not failures, failures
    passed = [Counter(r.outcome for r in w.results)["ok"] for w in workers]
    assert all(passed), f"one worker did all the passes: {passed}"
    # A reading leases what it starts, one worker's reading at a time: no race left to lose (busy, clean).
    assert {r.outcome for w in workers for r in w.results} == {"ok"}, [Counter(r.outcome for r in w.results)
                                                                      for w in workers]
    assert_each_scope_passed_once(env)


def test_a_reading_takes_one_scope_per_free_thread_and_ending_passes_read_again(tenant: SyncEnv) -> None:
    env = tenant
    worker = Worker(env.engine, {env.tenant_id: env.client}, index_of(env), max_passes=2)
    worker.register_scopes()
    try:
        assert len(worker.due_scopes()) > 2
        assert len(worker.start_due()) == 2  # two threads: two scopes, the others left unread
        # No drain from here on: each pass that ends reads the due scopes again from its own thread, and the
        # container passes' folders are started the same way.
        worker.wait(timeout=60)
        assert not anything_due(env)
    finally:
        worker.close()
    assert_each_scope_passed_once(env)


def test_a_reading_leaves_the_folders_of_a_mailbox_another_worker_is_passing_to_it(tenant: SyncEnv) -> None:
    env = tenant
    two_workers_only_on_postgres(env)
    first = Worker(env.engine, {env.tenant_id: env.client}, index_of(env), worker_id="first", max_passes=1)
    first.register_scopes()
    try:
        run_until_mirrored(first, env)  # every mail folder known
    finally:
        first.close()
    s = schema.sync_state
    with env.engine.connect() as connection:
        folders = [key for (key,) in connection.execute(
            sa.select(s.c.scope_key).where(s.c.scope_key.like("%/mailFolders/%")).order_by(s.c.scope_key))]
    one_mailbox = [key for key in folders if key.startswith(folders[0].split("/mailFolders/")[0])]
    assert len(one_mailbox) > 1 and len(one_mailbox) < len(folders)
    now = datetime.now(UTC)
    with env.engine.begin() as connection:
        connection.execute(sa.update(s).where(s.c.scope_key.in_(folders)).values(dirty_since=now))
        # Another worker is passing one folder of that mailbox (its lease written just now).
        connection.execute(sa.update(s).where(s.c.scope_key == one_mailbox[0])
                           .values(leased_by="first", lease_until=now + timedelta(minutes=5), updated_at=now))
    due = {key for _, key, _ in scopestate.due_scopes(env.engine, worker="second", now=now)}
    assert due == set(folders) - set(one_mailbox)  # its other folders are left to it, other mailboxes are not
    # A lease that was not written for a minute (its worker died) holds back only its own scope.
    later = now + scopestate.SIBLING_FRESH + timedelta(seconds=1)
    due = {key for _, key, _ in scopestate.due_scopes(env.engine, worker="second", now=later)}
    assert due == set(folders) - {one_mailbox[0]}
