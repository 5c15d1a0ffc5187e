"""The worker (syncer.worker.jobs) and its scheduling (syncer.worker.scheduler) against the emulator: inbox to dirty
scopes to passes, lifecycle, safety net, throttling, locks, races, start-up."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from click.testing import CliRunner
from test_sync_support import USERS_SPEC, Clock, SyncEnv, make_env

from syncer import schema
from syncer.cli import main
from syncer.errors import DatabaseUnreachable, LockTimeout
from syncer.graph.client import GraphClient
from syncer.graph.retry import RetryPolicy
from syncer.inbox import Inbox, NewItem
from syncer.worker import scopes, scopestate, sync
from syncer.worker.fetch import fetch_items
from syncer.worker.jobs import FETCH_RETRY, OWN_PASS_RETRY, Retention, Worker
from syncer.worker.scheduler import (
    DRAIN_JOB,
    HOUSEKEEPING_JOB,
    RECONCILE_JOB,
    SAFETY_NET_JOB,
    RunningWorker,
    Schedule,
    run_worker,
    schedule_jobs,
    single_worker_lock,
)
from syncer.worker.scopes import Scope, ScopeIndex
from syncer.worker.scopestate import LEASE_TTL, ScopeStore

GROUPS_SPEC = """
  - name: groups
    resource: groups
    change_types: [updated, deleted]
    mirror:
      table: groups
      columns: [displayName, mailEnabled]
"""


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, database_url, graph, USERS_SPEC.format(delete="soft") + GROUPS_SPEC)


@pytest.fixture
def sqlite_env(tmp_path: Path, emulator_info: dict[str, Any], sqlite_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, sqlite_url, graph, USERS_SPEC.format(delete="soft"))


@pytest.fixture
def postgres_env(tmp_path: Path, emulator_info: dict[str, Any], postgres_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, postgres_url, graph, USERS_SPEC.format(delete="soft"))


def worker_for(env: SyncEnv, worker_id: str = "w1", *, client: GraphClient | None = None, clock: Any = None) -> Worker:
    index = ScopeIndex.of(scopes.declared_scopes(env.spec))
    sources = {env.tenant_id: client or env.client}
    worker = Worker(env.engine, sources, index, worker_id=worker_id, spec=env.spec, **({"clock": clock} if clock else {}))
    worker.register_scopes()
    return worker


def record_subscription(env: SyncEnv, subscription_id: str, name: str, scope_key: str) -> None:
    now = datetime.now(UTC)
    with env.engine.begin() as connection:
        connection.execute(
            sa.insert(schema.subscriptions).values(
                subscription_id=subscription_id, tenant_id=env.tenant_id, name=name, scope_key=scope_key,
                resource=scope_key, change_type="updated,deleted", notification_url="https://example.test/n",
                client_state="s", include_resource_data=False, expires_at=now + timedelta(days=2),
                created_at=now, updated_at=now, status="active",
            )
        )


def notify(env: SyncEnv, subscription_id: str, resource: str, *, kind: str = "change", event: str = "updated", key: str = "") -> None:
    Inbox(env.engine).put([
        NewItem(tenant_id=env.tenant_id, subscription_id=subscription_id, kind=kind, event=event,
                resource=resource, resource_id=resource.rsplit("/", 1)[-1], dedupe_key=key or uuid.uuid4().hex,
                payload={"resource": resource}),
    ])


def settle(worker: Worker) -> None:
    """Let every started pass (and the passes they start) finish."""
    for _ in range(5):
        worker.wait(timeout=60)
        if not worker.start_due():
            worker.wait(timeout=60)
            return


def test_drain_turns_notifications_into_passes(env: SyncEnv) -> None:
    env.graph.admin("POST", "seed", json={"users": 30})
    worker = worker_for(env)
    try:
        # New scopes start dirty: the first drain enumerates them.
        first = worker.drain()
        assert set(first.started) == {"users", "groups"}
        settle(worker)
        assert len(env.rows("users")) == 30
        assert worker.drain().started == ()  # nothing dirty any more
        user = env.graph.create_user("fresh")
        record_subscription(env, "sub-users", "users", "users")
        notify(env, "sub-users", f"Users/{user['id']}")
        notify(env, "sub-users", f"Users/{user['id']}", key="dup")  # duplicates collapse into one pass
        drained = worker.drain()
        assert drained.claimed == 2 and drained.dirty >= 1 and drained.started == ("users",)
        settle(worker)
        assert user["id"] in env.rows("users")
        assert Inbox(env.engine).depth() == 0
        # A burst larger than one claim is drained in one run of the job, into one pass.
        worker.claim_limit = 7
        for i in range(30):
            notify(env, "sub-users", f"Users/{user['id']}#{i}")
        burst = worker.drain()
        assert burst.claimed == 30 and burst.started == ("users",)
        settle(worker)
        assert Inbox(env.engine).depth() == 0
        # A subscription syncer has no row for is routed by its resource path.
        other = env.graph.create_user("routed")
        notify(env, "unknown-subscription", f"Users/{other['id']}")
        assert worker.drain().started == ("users",)
        settle(worker)
        assert other["id"] in env.rows("users")
    finally:
        worker.close()


def test_lifecycle_missed_resyncs_the_scope(env: SyncEnv) -> None:
    env.graph.admin("POST", "seed", json={"users": 10})
    worker = worker_for(env)
    try:
        worker.drain()
        settle(worker)
        record_subscription(env, "sub-users", "users", "users")
        notify(env, "sub-users", "", kind="lifecycle", event="missed")
        drained = worker.drain(start=False)
        assert drained.lifecycle == 1
        assert env.state("users").resync_requested
        worker.start_due()
        settle(worker)
        full_runs = [r for r in env.runs() if r.scope_key == "users" and r.full_round]
        assert len(full_runs) == 2
        assert not env.state("users").resync_requested
        # subscriptionRemoved: a full resync too, and reconcile's repair is asked to recreate it (it
        # cannot here: the subscription is not Graph's; the drain goes on and acks the row).
        worker.drain()
        settle(worker)
        notify(env, "sub-users", "", kind="lifecycle", event="subscriptionRemoved")
        notify(env, "sub-users", "", kind="lifecycle", event="reauthorizationRequired")
        assert worker.drain(start=False).lifecycle == 2
        assert env.state("users").resync_requested
        assert Inbox(env.engine).depth() == 0
    finally:
        worker.close()


def test_safety_net_marks_stale_scopes_dirty(env: SyncEnv) -> None:
    env.graph.admin("POST", "seed", json={"users": 5})
    clock = Clock()
    worker = worker_for(env, clock=clock)
    try:
        worker.drain()
        settle(worker)
        assert worker.safety_net() == 0
        clock.advance(env.spec.subscription("users").sync_interval + timedelta(seconds=1))
        assert worker.safety_net() == 2
        assert {s.key for s in worker.due_scopes()} == {"users", "groups"}
    finally:
        worker.close()


def test_scheduler_jobs_have_fixed_ids_and_no_overlap(env: SyncEnv) -> None:
    worker = worker_for(env)
    scheduler = BackgroundScheduler(timezone=UTC)
    try:
        schedule_jobs(scheduler, worker)
        schedule_jobs(scheduler, worker)  # replace_existing: no duplicates
        jobs = {job.id: job for job in scheduler.get_jobs()}
        assert set(jobs) == {DRAIN_JOB, SAFETY_NET_JOB, RECONCILE_JOB, HOUSEKEEPING_JOB}
        for job in jobs.values():
            assert job.coalesce and job.max_instances == 1
        worker.reconcile()  # guarded while syncer.reconcile is absent; no exception either way
    finally:
        worker.close()


def test_group_members_are_mirrored(env: SyncEnv) -> None:
    seeded = env.graph.admin("POST", "seed", json={"users": 20, "groups": 2, "membersPerGroup": 5}).json()
    assert seeded
    scope = env.scope("groups")
    assert scope.members_table == "groups_members"
    assert sync.sync_scope(env.engine, env.client, scope, worker="w1").outcome == "ok"
    groups = env.rows("groups")
    assert len(groups) == 2

    def members_truth() -> set[tuple[str, str]]:
        out = set()
        for gid in groups:
            url: str | None = f"groups/{gid}/members?$select=id"
            while url:
                body = env.graph.get(url).json()
                out |= {(gid, m["id"]) for m in body["value"]}
                url = body.get("@odata.nextLink")
        return out

    def members_mirror() -> set[tuple[str, str]]:
        m = sa.table("groups_members", sa.column("group_id"), sa.column("member_id"))
        with env.engine.connect() as connection:
            return {(r.group_id, r.member_id) for r in connection.execute(sa.select(m.c.group_id, m.c.member_id))}

    assert members_mirror() == members_truth() and len(members_mirror()) == 10
    gid = sorted(groups)[0]
    current = sorted(m for g, m in members_truth() if g == gid)
    users, _ = env.graph.delta_all("users/delta?$select=id")
    outsider = next(u["id"] for u in users if u["id"] not in current)
    assert env.graph.post(f"groups/{gid}/members/$ref",
                          json={"@odata.id": f"{env.graph.graph}/directoryObjects/{outsider}"}).status_code == 204
    assert env.graph.delete(f"groups/{gid}/members/{current[0]}/$ref").status_code == 204
    result = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert (result.outcome, result.full) == ("ok", False)
    assert members_mirror() == members_truth()
    assert (gid, outsider) in members_mirror() and (gid, current[0]) not in members_mirror()
    # A full resync rebuilds the same membership.
    assert sync.sync_scope(env.engine, env.client, scope, worker="w1", full=True).outcome == "ok"
    assert members_mirror() == members_truth()


def test_one_throttled_scope_never_holds_back_the_others(env: SyncEnv) -> None:
    env.graph.admin("POST", "seed", json={"users": 50, "groups": 1, "membersPerGroup": 2})
    env.graph.admin("POST", "faults", json={"type": "status", "status": 429, "path": "/groups/delta", "retryAfter": 300, "count": 100})
    worker = worker_for(env)
    try:
        started = time.monotonic()
        worker.drain()
        settle(worker)
        assert time.monotonic() - started < 15
        outcomes = {r.scope: r.outcome for r in worker.results}
        assert outcomes == {"users": "ok", "groups": "throttled"}
        assert len(env.rows("users")) == 50
        assert env.state("groups").not_before is not None
        assert [s.key for s in worker.due_scopes()] == []  # postponed, not retried in a loop
    finally:
        worker.close()


@contextmanager
def fetch_scope_worker(env: SyncEnv) -> Iterator[tuple[Worker, Scope, Clock, str]]:
    """A worker over the users declaration synced without delta (a list, then GETs by id of the
    notified items), after its first list; and a user renamed in Graph since, not yet notified."""
    env.graph.admin("POST", "seed", json={"users": 5})
    scope = env.fetch_scope()
    clock = Clock()
    worker = Worker(env.engine, {env.tenant_id: env.client}, ScopeIndex.of([scope]), worker_id="w1", clock=clock)
    try:
        worker.register_scopes()
        assert sync.sync_scope(env.engine, env.client, scope, worker="w1", clock=clock).outcome == "ok"
        user = sorted(env.rows("users"))[0]
        env.graph.patch(f"users/{user}", json={"displayName": "Notified"})
        yield worker, scope, clock, user
    finally:
        worker.close()


def assert_fetched_at_last(env: SyncEnv, worker: Worker, user: str) -> None:
    done = worker.drain(start=False)
    assert (done.claimed, done.fetched) == (1, 1)
    assert env.rows("users")[user]["raw"]["displayName"] == "Notified"
    assert Inbox(env.engine).depth() == 0


def test_notified_items_of_a_busy_scope_wait_in_the_inbox_until_it_is_free(env: SyncEnv) -> None:
    with fetch_scope_worker(env) as (worker, scope, clock, user):
        other = ScopeStore(env.engine, scope, worker="w2", clock=clock, lease_ttl=LEASE_TTL)
        with env.engine.begin() as connection:
            assert other.take_lease(connection)
        notify(env, "sub-users", f"Users/{user}")
        busy = worker.drain(start=False)
        assert (busy.claimed, busy.fetched) == (1, 0)
        assert env.rows("users")[user]["raw"]["displayName"] != "Notified"
        assert Inbox(env.engine).depth() == 1  # not acknowledged: the change is still to be fetched
        assert worker.drain(start=False).claimed == 0  # and not retried at once

        # A pass of the scope running in this worker (under its own lease) holds the fetch back too.
        with env.engine.begin() as connection:
            other.release_lease(connection)
        clock.advance(FETCH_RETRY + timedelta(seconds=1))
        running: Future[sync.PassResult] = Future()
        worker._running[(scope.tenant_id, scope.key)] = running
        held = worker.drain(start=False)
        assert (held.claimed, held.fetched) == (1, 0) and Inbox(env.engine).depth() == 1
        assert worker.drain(start=False).claimed == 0
        running.set_result(sync.PassResult(scope.key, "ok"))

        # The worker's own pass ends soon: the fetch is tried again a second later, not FETCH_RETRY later.
        clock.advance(OWN_PASS_RETRY + timedelta(milliseconds=100))
        assert_fetched_at_last(env, worker, user)


def test_notified_items_of_a_throttled_scope_wait_until_graph_lets_them_through(env: SyncEnv) -> None:
    with fetch_scope_worker(env) as (worker, scope, clock, user):
        # Graph throttles GETs of the item for two minutes (longer than the client waits in place).
        rule = {"type": "status", "status": 429, "path": f"/users/{user}", "method": "GET", "retryAfter": 120}
        env.graph.admin("POST", "faults", json=rule)
        notify(env, "sub-users", f"Users/{user}")
        throttled = worker.drain(start=False)
        assert (throttled.claimed, throttled.fetched, throttled.dirty) == (1, 0, 0)  # not listed instead
        state = env.state()
        assert state.not_before is not None and state.failures == 0 and state.leased_by is None
        assert env.runs()[-1].outcome == "throttled"
        assert Inbox(env.engine).depth() == 1  # the change is still to be fetched

        # Until not_before neither the notification nor the scope runs, even once Graph would answer.
        env.graph.admin("DELETE", "faults")
        clock.advance(FETCH_RETRY + timedelta(seconds=1))
        assert worker.drain(start=False).claimed == 0
        postponed = fetch_items(env.engine, env.client, scope, [f"Users/{user}"], worker="w1", clock=clock)
        assert postponed.outcome == "postponed" and postponed.not_before is not None
        assert env.rows("users")[user]["raw"]["displayName"] != "Notified"

        clock.advance(timedelta(seconds=120))
        assert_fetched_at_last(env, worker, user)


def test_a_burst_marks_a_waiting_scope_once_and_a_running_scope_again(env: SyncEnv) -> None:
    scope = env.scope("users")
    t0 = datetime.now(UTC).replace(microsecond=0)
    second = timedelta(seconds=1)

    def mark(at: datetime, **kwargs: Any) -> int:
        with env.engine.begin() as connection:
            return scopestate.mark_dirty(connection, env.tenant_id, [scope.parent_key], now=at, **kwargs)

    with env.engine.begin() as connection:
        scopestate.ensure_scope_rows(connection, [scope], now=t0)
    assert mark(t0) == 1
    # Waiting for its pass, the scope is not rewritten: the pass to come reads Graph after these changes.
    assert mark(t0 + second) == 0
    assert env.state().dirty_since == t0
    # A pass holds it: the mark moves past the pass's start, so the scope stays dirty when the pass ends.
    holder = ScopeStore(env.engine, scope, worker="w2", clock=lambda: t0, lease_ttl=LEASE_TTL)
    with env.engine.begin() as connection:
        assert holder.take_lease(connection)
    assert mark(t0 + 2 * second) == 1
    assert env.state().dirty_since == t0 + 2 * second
    with env.engine.begin() as connection:
        holder.release_lease(connection)
    # missed / subscriptionRemoved always ask for a full round.
    assert mark(t0 + 3 * second, resync=True) == 1
    state = env.state()
    assert state.resync_requested and state.dirty_since == t0 + 3 * second


def test_the_scope_index_finds_scopes_by_lookup() -> None:
    mail, users = scopes.STRATEGIES["message"], scopes.STRATEGIES["user"]
    found = [
        scopes.Scope(tenant_id="t", key=f"users/u{i}/mailFolders", name="mail", parent_key=f"users/u{i}/messages",
                     table="messages", strategy=mail, initial_url="x", container=True, mailbox=f"u{i}") for i in range(3)
    ] + [scopes.Scope(tenant_id="t", key="users", name="users", parent_key="users", table="users", strategy=users,
                      initial_url="x")]
    index = ScopeIndex.of(found)
    assert index.under("t", "Users/U1/Messages") is found[1] and index.under("t", "users/u9/messages") is None
    assert index.under("other-tenant", "users/u1/messages") is None
    # A notification's resource: the longest declared prefix owns it.
    assert index.owning("t", "/Users/u2/Messages/AAMk=") is found[2]
    assert index.owning("t", "Users/u7") is found[3]  # under "users"
    assert index.owning("t", "groups/g1") is None
    # A folder's state row resolves through its container; a folder of an undeclared mailbox does not.
    child = index.resolve("t", "users/u0/mailFolders/f1/messages", "users/u0/messages")
    assert child is not None and child.key == "users/u0/mailFolders/f1/messages"
    assert index.resolve("t", "users/u9/mailFolders/f1/messages", "users/u9/messages") is None
    assert sorted(s.key for s in index.containers()) == [f"users/u{i}/mailFolders" for i in range(3)]


def test_housekeeping_deletes_what_is_past_its_retention_and_nothing_else(env: SyncEnv) -> None:
    env.graph.admin("POST", "seed", json={"users": 3})
    scope = env.scope("users")
    worker = worker_for(env)
    try:
        for _ in range(4):
            assert sync.sync_scope(env.engine, env.client, scope, worker="w1").outcome == "ok"
        for n in range(7):
            notify(env, "sub-users", f"Users/u{n}")
        inbox = Inbox(env.engine)
        claimed = inbox.claim("w1", limit=5)
        inbox.ack([i.id for i in claimed], worker="w1")  # five processed, two waiting
        long_ago = datetime.now(UTC) - timedelta(days=40)
        i, r, s = schema.inbox, schema.sync_runs, schema.sync_state
        with env.engine.begin() as connection:
            connection.execute(sa.update(i).where(i.c.processed_at.is_not(None)).values(processed_at=long_ago))
            connection.execute(sa.update(i).where(i.c.processed_at.is_(None)).values(received_at=long_ago))
            runs = [row.id for row in connection.execute(sa.select(r.c.id).order_by(r.c.id))]
            connection.execute(sa.update(r).where(r.c.id.in_(runs[:3])).values(started_at=long_ago))
            # The oldest run started a round still in progress (the sweep needs its start): kept.
            connection.execute(sa.update(s).where(s.c.scope_key == "users").values(round_id=runs[0]))
            connection.execute(sa.insert(r).values(tenant_id=env.tenant_id, scope_key="users", started_at=long_ago,
                                                   outcome="running"))  # a pass still running: kept
        worker.retention = Retention(notifications=timedelta(days=7), runs=timedelta(days=30))
        assert worker.housekeeping() == (5, 2)
        assert inbox.depth() == 2  # waiting notifications are never purged, however old
        with env.engine.connect() as connection:
            left = {row.id for row in connection.execute(sa.select(r.c.id))}
            stored = connection.execute(sa.select(sa.func.count()).select_from(i)).scalar_one()
        assert runs[0] in left and not {runs[1], runs[2]} & left and set(runs[3:]) <= left and len(left) == 3
        assert stored == 2
        assert worker.housekeeping() == (0, 0)
        # `forever` keeps everything; small batches reach the same end as one.
        for n in range(5):
            notify(env, "sub-users", f"Users/v{n}")
        inbox.ack([x.id for x in inbox.claim("w1", limit=10)], worker="w1")
        with env.engine.begin() as connection:
            connection.execute(sa.update(i).values(processed_at=long_ago))
            connection.execute(sa.update(r).values(started_at=long_ago, finished_at=long_ago))
            connection.execute(sa.update(s).values(round_id=None))
        worker.retention = Retention(notifications=None, runs=None)
        assert worker.housekeeping() == (0, 0)
        assert inbox.purge(processed_before=datetime.now(UTC), batch=2) == 7
        assert scopestate.purge_runs(env.engine, started_before=datetime.now(UTC), batch=2) == 3
    finally:
        worker.close()


def test_worker_refuses_a_retention_that_is_not_a_duration(sqlite_env: SyncEnv) -> None:
    result = CliRunner().invoke(main, ["worker", "--spec", str(sqlite_env.spec.path), "--keep-runs", "a month"])
    assert result.exit_code == 2 and "not a duration such as 7d" in result.stderr


def test_sqlite_refuses_a_second_worker(sqlite_env: SyncEnv) -> None:
    env = sqlite_env
    lock = single_worker_lock(env.engine, "first-worker")
    assert lock is not None
    try:
        with pytest.raises(LockTimeout, match=r"another syncer worker is running.*first-worker"):
            single_worker_lock(env.engine, "second-worker")
        result = CliRunner().invoke(main, ["worker", "--spec", str(env.spec.path)])
        assert result.exit_code == 1
        assert "another syncer worker is running" in result.stderr and "first-worker" in result.stderr
    finally:
        lock.release()


def test_syncer_run_checks_the_worker_lock_before_subscribing(sqlite_env: SyncEnv) -> None:
    # Issue 18: `syncer run` created subscriptions, then refused to start because a worker ran.
    from syncer.demo import free_port
    from syncer.run import Runner

    env = sqlite_env
    lock = single_worker_lock(env.engine, "first-worker")
    assert lock is not None
    lines: list[str] = []
    try:
        with pytest.raises(LockTimeout, match=r"another syncer worker is running.*first-worker"):
            Runner(env.spec, port=free_port(), echo=lines.append).start()
    finally:
        lock.release()
    assert not any("receiver listening" in line or "create" in line for line in lines), lines
    with env.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(schema.subscriptions)).scalar_one() == 0


@pytest.mark.postgres
def test_two_workers_on_postgres_never_sync_one_scope_twice(postgres_env: SyncEnv) -> None:
    env = postgres_env
    env.graph.admin("POST", "seed", json={"users": 300})
    # Slow pages, so that the two workers' passes would overlap if the lease let them.
    env.graph.admin("POST", "faults", json={"type": "latency", "ms": 150, "path": "/users/delta"})
    other = GraphClient.from_spec(env.spec, env.spec.tenants[0].name, retry=RetryPolicy(max_retry_after=2.0))
    a, b = worker_for(env, "worker-a"), worker_for(env, "worker-b", client=other)
    try:
        record_subscription(env, "sub-users", "users", "users")
        for i in range(40):
            notify(env, "sub-users", f"Users/u{i}")
        barrier = threading.Barrier(2)
        drained: dict[str, Any] = {}

        def run(worker: Worker) -> None:
            barrier.wait()
            drained[worker.worker_id] = worker.drain()
            settle(worker)

        threads = [threading.Thread(target=run, args=(w,)) for w in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        # Each inbox row was claimed by exactly one worker.
        assert sum(d.claimed for d in drained.values()) == 40
        inbox = schema.inbox
        with env.engine.connect() as connection:
            assert connection.execute(sa.select(sa.func.count()).where(inbox.c.processed_at.is_(None))).scalar() == 0
        # One full round wrote the scope; the other worker found it leased (busy) or already clean.
        runs = [r for r in env.runs() if r.scope_key == "users"]
        assert [r.outcome for r in runs if r.full_round] == ["ok"]
        assert all(r.outcome == "ok" for r in runs)
        ok = [r for w in (a, b) for r in w.results if r.outcome == "ok" and r.full]
        assert len(ok) == 1 and ok[0].upserted == 300
        assert len(env.rows("users")) == 300
        # Passes of the scope never overlapped in time, whichever worker ran them.
        spans = sorted((r.started_at, r.finished_at) for r in runs)
        for (_s1, end), (start, _e2) in itertools.pairwise(spans):
            assert end <= start
    finally:
        a.close()
        b.close()
        other.close()


def test_the_worker_mirrors_on_its_own_schedule(sqlite_env: SyncEnv) -> None:
    env = sqlite_env
    env.graph.admin("POST", "seed", json={"users": 40})
    running = run_worker(env.spec, schedule=Schedule(drain=0.2, safety_net=1.0, reconcile=3600), blocking=False,
                         worker_id="bg-worker")
    try:
        deadline = time.monotonic() + 30
        while len(env.rows("users")) < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(env.rows("users")) == 40
        # A change with no notification at all: the safety net finds it after the scope's interval.
        assert running.worker.index.static[(env.tenant_id, "users")].interval.total_seconds() > 0
        with pytest.raises(LockTimeout):
            single_worker_lock(env.engine, "another")
    finally:
        running.stop()
    assert single_worker_lock(env.engine, "after") is not None  # released on stop


@pytest.mark.postgres
def test_the_worker_waits_at_start_for_its_database(
    postgres_env: SyncEnv, tmp_path: Path, emulator_info: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Started while its database is unreachable (systemd/Kubernetes start both at once), the worker
    waits and then runs, instead of exiting; with --startup-wait 0 it fails at once."""
    from chaos_database import Database
    from test_sync_support import write_spec

    env = postgres_env
    env.graph.admin("POST", "seed", json={"users": 5})
    db = Database.for_url(env.spec.database_url)
    assert db.proxy is not None
    (tmp_path / "proxied").mkdir()
    spec = write_spec(tmp_path / "proxied", emulator_info, db.process_url, USERS_SPEC.format(delete="soft"))
    db.proxy.cut()
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnreachable):
            run_worker(spec, blocking=False, worker_id="impatient", startup_wait=0)
        assert time.monotonic() - started < 10

        result: dict[str, RunningWorker] = {}
        schedule = Schedule(drain=0.2, safety_net=1.0, reconcile=3600)
        thread = threading.Thread(target=lambda: result.setdefault(
            "worker", run_worker(spec, schedule=schedule, blocking=False, worker_id="patient", startup_wait=60)))
        with caplog.at_level("WARNING", logger="syncer.worker.jobs"):
            thread.start()
            time.sleep(2.5)
            assert thread.is_alive() and not result  # still waiting
            db.proxy.restore()
            thread.join(timeout=60)
        assert "not ready to start" in caplog.text and "cannot reach the database" in caplog.text
        running = result["worker"]
        try:
            deadline = time.monotonic() + 30
            while len(env.rows("users")) < 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(env.rows("users")) == 5
        finally:
            running.stop()
    finally:
        db.close()


def test_a_database_outage_is_logged_once_not_every_drain(
    postgres_env: SyncEnv, tmp_path: Path, emulator_info: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """While the database is away the drain fails every interval: one line when it goes, one when it
    is back, no traceback above DEBUG (APScheduler used to log one per drain, every half second)."""
    import logging

    from chaos_database import Database
    from test_sync_support import write_spec

    env = postgres_env
    db = Database.for_url(env.spec.database_url)
    assert db.proxy is not None
    (tmp_path / "proxied").mkdir()
    spec = write_spec(tmp_path / "proxied", emulator_info, db.process_url, USERS_SPEC.format(delete="soft"))
    running = run_worker(spec, schedule=Schedule(drain=0.05, safety_net=3600, reconcile=3600, housekeeping=3600),
                         blocking=False, worker_id="outage")
    try:
        # The start-up pass must be over, or it would meet the outage too (a pass reports to the same
        # outage log; this test counts the drain's lines).
        deadline = time.monotonic() + 30
        while not env.runs() or env.runs()[-1].finished_at is None:
            assert time.monotonic() < deadline, "the start-up pass did not finish"
            time.sleep(0.05)
        with caplog.at_level(logging.INFO):
            db.proxy.cut()
            time.sleep(1.5)  # some thirty drains
            db.proxy.restore()
            deadline = time.monotonic() + 5  # pool_pre_ping reconnects at the next drain
            while time.monotonic() < deadline and not any("reachable again" in r.getMessage() for r in caplog.records):
                time.sleep(0.05)
            time.sleep(0.3)
    finally:
        running.stop()
        db.close()
    # What `syncer worker` shows: syncer's lines from WARNING, APScheduler's from ERROR (syncer.log.configure).
    loud = [r for r in caplog.records if r.levelno >= (logging.ERROR if r.name.startswith("apscheduler") else logging.WARNING)]
    assert len(loud) == 2, "\n".join(f"{r.name} {r.levelname} {r.getMessage()}" for r in loud)
    assert loud[0].getMessage().startswith("database unreachable: ") and loud[0].getMessage().endswith("; retrying")
    assert loud[1].getMessage().startswith("database reachable again after ")
    assert all(r.exc_info is None for r in loud)
