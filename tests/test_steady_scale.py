"""The worker's bookkeeping does not grow with the number of scopes (issue 19, steady state at scale).

A safety-net tick, a drain and the due query send the same SQL statements at 300 scopes as at 3,000, each read
through an index (no statement scans every scope), and a tick touches at most ``safety_batch`` scopes per declaration;
a backlog is walked a batch per tick, past rows the worker no longer follows. On SQLite and PostgreSQL. No Graph
call is made: passes are not started (``drain(start=False)``), only the bookkeeping runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer import schema
from syncer.database import create_engine
from syncer.inbox import Inbox, NewItem
from syncer.migrate import upgrade_core
from syncer.worker import scopestate
from syncer.worker.jobs import Worker
from syncer.worker.scopes import STRATEGIES, Scope, ScopeIndex

TENANT = "steady-tenant"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def mailbox_scopes(count: int) -> list[Scope]:
    """*count* scopes: a mailbox's inbox folder (delta) and its calendarView (a window), alternately."""
    found = []
    for i in range(count):
        if i % 2:
            found.append(Scope(tenant_id=TENANT, key=f"users/u{i}/calendarView", name="events",
                               parent_key=f"users/u{i}/events", table="events", strategy=STRATEGIES["event"],
                               initial_url=f"users/u{i}/calendarView/delta", interval=timedelta(hours=1)))
        else:
            found.append(Scope(tenant_id=TENANT, key=f"users/u{i}/mailFolders/inbox/messages", name="mail",
                               parent_key=f"users/u{i}/messages", table="messages", strategy=STRATEGIES["message"],
                               initial_url=f"users/u{i}/mailFolders/inbox/messages/delta",
                               interval=timedelta(hours=1)))
    return found


class Statements:
    """The SQL statements *engine* sends while counting (their text, to say what differs)."""

    def __init__(self, engine: Engine) -> None:
        self.seen: list[str] = []
        sa.event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        self.seen.append(statement)

    def during(self, call: object) -> list[str]:
        self.seen = []
        assert callable(call)
        call()
        return list(self.seen)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade_core(database_url)
    made = create_engine(database_url)
    yield made
    made.dispose()


def tenant_of(engine: Engine, count: int, *, synced: datetime, listed: datetime | None = None) -> Worker:
    """A worker over *count* clean scopes, last synced at *synced* (and read from their first page at *listed*)."""
    found = mailbox_scopes(count)
    s = schema.sync_state
    with engine.begin() as connection:
        connection.execute(sa.delete(s))
        scopestate.ensure_scope_rows(connection, found, now=synced)
        connection.execute(sa.update(s).values(last_success_at=synced, listed_at=listed or synced,
                                               delta_link="https://graph.example/delta?token=x"))
    return Worker(engine, {}, ScopeIndex.of(found), worker_id="w1", clock=lambda: NOW)


def notify(engine: Engine, count: int, scopes: int) -> None:
    """*count* notifications spread over *scopes* mailboxes, stored as the receiver stores them."""
    items = []
    for j in range(count):
        i = (j * 37) % scopes
        resource = f"Users/u{i}/Messages/m{j}" if i % 2 == 0 else f"Users/u{i}/Events/e{j}"
        items.append(NewItem(tenant_id=TENANT, subscription_id=f"sub-{i}", kind="change", event="created",
                             resource=resource, resource_id=f"x{j}", dedupe_key=uuid.uuid4().hex,
                             payload={"resource": resource}))
    Inbox(engine).put(items)


def bookkeeping(engine: Engine, count: int) -> dict[str, list[str]]:
    """The statements of a quiet safety-net tick, a drain of 60 notifications and a due query at *count* scopes."""
    worker = tenant_of(engine, count, synced=NOW - timedelta(minutes=5))
    counter = Statements(engine)
    try:
        worker._refreshed = NOW  # a worker built without a spec expands nothing anyway
        tick = counter.during(worker.safety_net)
        notify(engine, 60, count)
        drain = counter.during(lambda: worker.drain(start=False))
        due = counter.during(worker.due_scopes)
        assert len(worker.due_scopes()) > 0  # the drain marked the notified scopes
    finally:
        sa.event.remove(engine, "before_cursor_execute", counter._on)
        worker.close()
    return {"tick": tick, "drain": drain, "due": due}


def test_tick_drain_and_due_send_the_same_statements_at_300_and_3000_scopes(engine: Engine) -> None:
    small = bookkeeping(engine, 300)
    large = bookkeeping(engine, 3000)
    for job in ("tick", "drain", "due"):
        assert len(small[job]) == len(large[job]), (job, small[job], large[job])
    # A quiet tick: per declaration, the never-succeeded and the oldest successes; the events' oldest listings; no write.
    assert len(small["tick"]) == 2 * 2 + 1


def plan_of(engine: Engine, statement: sa.Executable) -> str:
    """The plan of *statement* on *engine*, as text (PostgreSQL: with sequential scans priced out, so that a
    plan without an index is seen even on a small table)."""
    with engine.connect() as connection:
        sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET enable_seqscan = off")
            return "\n".join(r[0] for r in connection.exec_driver_sql(f"EXPLAIN {sql}"))
        return "\n".join(str(r[-1]) for r in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))


def test_the_due_and_safety_net_queries_read_an_index(engine: Engine) -> None:
    s = schema.sync_state
    due = scopestate.due_query("w1", NOW, 32)  # the worker's reading, with its siblings' leases looked up by key
    oldest = (sa.select(s.c.scope_key).where(s.c.name == "mail", s.c.last_success_at <= NOW, s.c.dirty_since.is_(None))
              .order_by(s.c.last_success_at).limit(100))
    listed = (sa.select(s.c.scope_key).where(s.c.name == "events", s.c.listed_at <= NOW).order_by(s.c.listed_at)
              .limit(100))
    for statement, index in ((due, "ix_syncer_sync_state_due"), (oldest, "ix_syncer_sync_state_name_last_success_at"),
                             (listed, "ix_syncer_sync_state_name_listed_at")):
        plan = plan_of(engine, statement)
        assert index in plan and "Seq Scan" not in plan, plan
    assert "ix_syncer_sync_state_tenant_id_parent_key" in plan_of(engine, due)


def test_a_backlog_is_marked_a_batch_per_tick_oldest_first(engine: Engine) -> None:
    worker = tenant_of(engine, 3000, synced=NOW - timedelta(hours=2))
    worker._refreshed = NOW
    worker.safety_batch = 400
    try:
        assert worker.safety_net() == 800  # 400 mail folders, 400 calendars
        assert worker.safety_net() == 800
        ticks = 2
        while worker.safety_net():
            ticks += 1
        assert ticks == 4  # 3,000 scopes: 800 + 800 + 800 + 600
        s = schema.sync_state
        with engine.connect() as connection:
            assert connection.execute(sa.select(sa.func.count()).where(s.c.dirty_since.is_(None))).scalar_one() == 0
    finally:
        worker.close()


def test_scopes_the_worker_does_not_follow_do_not_hold_back_the_others(engine: Engine) -> None:
    """The oldest rows of a declaration are not in the worker's index (an account signed out, a member gone before
    the hourly retire): they are marked with the others (they wait dirty, as after a notification), and every
    followed scope is marked in time."""
    worker = tenant_of(engine, 40, synced=NOW - timedelta(hours=2))
    gone = [sc for sc in worker.index.static.values() if sc.name == "mail"][:6]
    s = schema.sync_state
    with engine.begin() as connection:
        for n, sc in enumerate(gone):  # the six oldest successes
            connection.execute(sa.update(s).where(s.c.scope_key == sc.key)
                               .values(last_success_at=NOW - timedelta(days=3, minutes=n)))
    worker.index = ScopeIndex.of([sc for sc in worker.index.static.values() if sc not in gone])
    worker._refreshed = NOW
    worker.safety_batch = 4
    try:
        assert sum(worker.safety_net() for _ in range(6)) == 40
        assert worker.safety_net() == 0
        assert {s.key for s in worker.due_scopes()} == {sc.key for sc in worker.index.static.values()}
    finally:
        worker.close()


def test_calendar_windows_are_reanchored_from_their_last_listing(engine: Engine) -> None:
    worker = tenant_of(engine, 20, synced=NOW - timedelta(minutes=5), listed=NOW - timedelta(days=2))
    worker._refreshed = NOW
    try:
        assert worker.safety_net() == 10  # the 10 calendarViews: a full round requested
        s = schema.sync_state
        with engine.connect() as connection:
            requested = set(connection.execute(sa.select(s.c.scope_key).where(s.c.resync_requested.is_(True))).scalars())
        assert requested == {sc.key for sc in worker.index.static.values() if sc.name == "events"}
        assert worker.safety_net() == 0  # requested once: not again while the full round waits
    finally:
        worker.close()


def test_the_status_summary_by_grouped_queries_is_the_summary_of_every_scope(engine: Engine) -> None:
    """collect(detail=False) reads the summary by grouped queries; it says what the summary of the detailed
    status says: healthy, stale (by each declaration's interval), failing, new, freshness capped by a waiting
    notification, a fetch by id counting as fresh, subscriptions and the inbox by declaration."""
    from syncer.status import collect, render

    worker = tenant_of(engine, 40, synced=NOW - timedelta(minutes=30))
    worker.close()
    s, r = schema.sync_state, schema.sync_runs
    keys = sorted(sc.key for sc in worker.index.static.values())
    with engine.begin() as connection:
        connection.execute(sa.update(s).where(s.c.scope_key.in_(keys[:3])).values(last_error="HTTP 429"))
        connection.execute(sa.update(s).where(s.c.scope_key.in_(keys[3:6])).values(last_success_at=None))
        connection.execute(sa.update(s).where(s.c.scope_key.in_(keys[6:10]))
                           .values(last_success_at=NOW - timedelta(hours=3)))
        connection.execute(sa.update(s).where(s.c.scope_key.in_(keys[10:12])).values(dirty_since=NOW - timedelta(days=1)))
        for key in keys[6:8]:  # a fetch by id since: fresh again
            connection.execute(sa.insert(r).values(tenant_id=TENANT, scope_key=key, started_at=NOW - timedelta(minutes=2),
                                                   finished_at=NOW - timedelta(minutes=1), full_round=False, pages=0,
                                                   upserted=1, deleted=0, outcome="ok"))
        connection.execute(sa.insert(schema.subscriptions).values(
            subscription_id="sub-1", tenant_id=TENANT, name="mail", scope_key="users/u0/messages",
            resource="users/u0/messages", change_type="created", notification_url="https://x.test/n", client_state="x",
            include_resource_data=False, expires_at=NOW + timedelta(days=2), created_at=NOW, updated_at=NOW,
            status="active"))
    notify(engine, 3, 1)  # on mailbox u0, through a subscription the database does not know
    intervals = {"mail": timedelta(hours=1), "events": timedelta(hours=2), "contacts": timedelta(hours=1)}
    for rows in (False, True):
        detailed = collect(engine, now=NOW, intervals=intervals, count_rows=rows)
        summary = collect(engine, now=NOW, intervals=intervals, count_rows=rows, detail=False)
        assert summary.declarations == detailed.declarations
        assert render(summary) == render(detailed)
        assert summary.inbox_waiting == detailed.inbox_waiting == 3
    by_name = {d.name: d for d in summary.declarations or []}
    assert by_name["contacts"].scopes == 0 and by_name["mail"].subscriptions == 1
    assert sum(d.failing for d in by_name.values()) == 3 and sum(d.new for d in by_name.values()) == 3
    assert sum(d.stale for d in by_name.values()) >= 3


def test_migration_0009_fills_listed_at_from_the_last_full_round(database_url: str) -> None:
    """A database at 0008: each scope's listed_at becomes the start of its last full round that succeeded (a failed
    one or an incremental one does not count), or the migration's time for a scope without any."""
    from alembic import command

    from syncer.migrate import alembic_config

    command.upgrade(alembic_config(database_url), "0008")
    engine = create_engine(database_url)
    full, later = NOW - timedelta(days=3), NOW - timedelta(days=1)
    try:
        state = sa.table("syncer_sync_state", *(sa.column(c) for c in (
            "tenant_id", "scope_key", "name", "table_name", "resync_requested", "round_full", "failures")),
            sa.column("updated_at", schema.UtcDateTime))
        runs = sa.table("syncer_sync_runs", *(sa.column(c) for c in (
            "tenant_id", "scope_key", "full_round", "pages", "upserted", "deleted", "outcome")),
            sa.column("started_at", schema.UtcDateTime))
        with engine.begin() as connection:
            for key in ("a", "b"):
                connection.execute(sa.insert(state).values(tenant_id=TENANT, scope_key=key, name="mail",
                                                           table_name="messages", resync_requested=False,
                                                           round_full=False, failures=0, updated_at=NOW))
            for started, is_full, outcome in ((full, True, "ok"), (later, True, "error"), (later, False, "ok")):
                connection.execute(sa.insert(runs).values(tenant_id=TENANT, scope_key="a", started_at=started,
                                                          full_round=is_full, pages=1, upserted=0, deleted=0,
                                                          outcome=outcome))
        before = datetime.now(UTC)
        upgrade_core(database_url)
        s = schema.sync_state
        with engine.connect() as connection:
            listed = dict(connection.execute(sa.select(s.c.scope_key, s.c.listed_at)).all())
        assert listed["a"] == full
        assert listed["b"] is not None and listed["b"] >= before - timedelta(seconds=1)
    finally:
        engine.dispose()
