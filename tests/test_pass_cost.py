"""What a pass of a small scope costs the database: statements and transactions, counted (SQLite and PostgreSQL).

A tenant's initial mirror is thousands of such passes (a mailbox's folders, its calendar, its contacts),
and their bookkeeping, not their rows, set its CPU (bench/tenant.py). Timing is noisy on a shared
machine; counting the statements SQLAlchemy sends is not. The limits below are today's counts: a change
that adds a round trip to every pass fails here and has to say why it is worth it. Statements the writer
sends on the driver's own cursor (PostgreSQL's COPY) are not seen by SQLAlchemy's events and not counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_sync_support import USERS_SPEC, SyncEnv, make_env

from syncer.worker import prefetch, scopestate, sync

ONE_PAGE_PASS_STATEMENTS = 6
"""An incremental pass whose changes fit in one page: the lease with the state (one UPDATE … RETURNING,
which on PostgreSQL also sets the lease's commit asynchronous: no SET LOCAL of its own), the run's record,
the round's start, the page's rows (SQLite; a COPY on PostgreSQL), the deltaLink with the lease given back,
the run's outcome."""
FIRST_PASS_STATEMENTS = 7
"""A registered scope's first pass (a full round of one page): the same, and the sweep of rows not seen."""
PASS_TRANSACTIONS = 2
"""One to take the scope, one for the page with the end of the pass."""
PASS_PINGS = 0
"""Round trips to test a pooled connection before use (PostgreSQL): none for a connection used moments ago
(syncer.database.PING_AFTER_IDLE); SQLAlchemy's pool_pre_ping sent one per checkout, two per pass."""


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, database_url, graph, USERS_SPEC.format(delete="soft"))


class Counter:
    """Statements and transactions begun on an engine, and prefetch threads started, while active."""

    def __init__(self, env: SyncEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        self.transactions = 0
        self.threads = 0
        sa.event.listen(env.engine, "before_cursor_execute", self._statement)
        sa.event.listen(env.engine, "begin", self._begin)
        self.pings = 0
        ping = env.engine.dialect.do_ping

        def counted_ping(dbapi_connection: Any) -> bool:
            self.pings += 1
            return ping(dbapi_connection)

        monkeypatch.setattr(env.engine.dialect, "do_ping", counted_ping)
        start = prefetch.Prefetcher._start

        def counted(fetcher: prefetch.Prefetcher[Any], pages: Any) -> None:
            self.threads += 1
            start(fetcher, pages)

        monkeypatch.setattr(prefetch.Prefetcher, "_start", counted)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(" ".join(statement.split())[:90])

    def _begin(self, _conn: Any) -> None:
        self.transactions += 1

    def reset(self) -> None:
        self.statements.clear()
        self.transactions = self.threads = self.pings = 0


def test_a_one_page_pass_costs_a_fixed_number_of_statements(
    env: SyncEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert env.graph.admin("POST", "seed", json={"users": 5}).status_code == 200
    scope = env.scope()
    with env.engine.begin() as connection:  # registered, as the worker registers its scopes
        scopestate.ensure_scope_rows(connection, [scope], dirty=True)
    counter = Counter(env, monkeypatch)
    # PostgreSQL: the rows go by COPY (not counted), one statement fewer.
    fewer = 1 if env.engine.dialect.name == "postgresql" else 0

    first = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert (first.outcome, first.full, first.pages) == ("ok", True, 1)
    assert len(counter.statements) <= FIRST_PASS_STATEMENTS - fewer, counter.statements
    assert counter.transactions <= PASS_TRANSACTIONS
    assert counter.pings == PASS_PINGS
    assert counter.threads == 0  # no prefetch thread for a round of one page

    counter.reset()
    env.graph.patch(f"users/{next(iter(env.truth('users/delta')))}", json={"displayName": "changed"})
    second = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert (second.outcome, second.full, second.pages, second.upserted) == ("ok", False, 1, 1)
    assert len(counter.statements) <= ONE_PAGE_PASS_STATEMENTS - fewer, counter.statements
    assert counter.transactions <= PASS_TRANSACTIONS
    assert counter.pings == PASS_PINGS
    assert counter.threads == 0
    state = env.state()
    assert state.leased_by is None and state.delta_link and state.dirty_since is None
    assert [r.outcome for r in env.runs()] == ["ok", "ok"]


def test_the_lease_is_committed_without_waiting_for_its_flush(env: SyncEnv) -> None:
    # PostgreSQL: the lease's transaction sets synchronous_commit off in the lease's own statement (no
    # SET LOCAL round trip), for that transaction only.
    if env.engine.dialect.name != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    store = scopestate.ScopeStore(env.engine, env.scope(), worker="w1", clock=scopestate.utcnow,
                                  lease_ttl=timedelta(minutes=5))
    with env.engine.begin() as connection:
        assert store.take(connection, async_commit=True) is not None
        assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    with env.engine.begin() as connection:
        assert connection.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


def test_a_pass_of_several_pages_still_prefetches(env: SyncEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.graph.admin("POST", "seed", json={"users": 250}).status_code == 200
    counter = Counter(env, monkeypatch)
    result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1", page_size=100)
    assert result.outcome == "ok" and result.pages == 3
    assert counter.threads == 1  # started once the first page said more follow
