"""One sync pass against the emulator over real HTTPS, on SQLite and PostgreSQL.

Every test compares the mirror with the emulator's truth (a fresh full delta) row by row.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_sync_support import USERS_SPEC, Clock, SyncEnv, make_env

from syncer import database, status
from syncer.cli import main
from syncer.worker import scopestate, sync
from syncer.worker.fetch import fetch_items
from syncer.worker.scopes import Scope, Strategy
from syncer.worker.scopestate import ScopeStore
from syncer.worker.writer import SWEPT, RowWriter, apply_items

SELECT = "users/delta?$select=id,displayName,mail,accountEnabled,createdDateTime"


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, database_url, graph, USERS_SPEC.format(delete="soft"))


@pytest.fixture
def hard_env(tmp_path: Path, emulator_info: dict[str, Any], sqlite_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, sqlite_url, graph, USERS_SPEC.format(delete="hard"))


def seed(env: SyncEnv, users: int) -> None:
    r = env.graph.admin("POST", "seed", json={"users": users})
    assert r.status_code == 200, r.text


def assert_mirrors_truth(env: SyncEnv) -> None:
    truth = env.truth(SELECT)
    rows = env.rows("users")
    assert set(rows) == set(truth)
    for item_id, item in truth.items():
        assert rows[item_id]["raw"] == item, item_id


def test_initial_then_incremental_pass(env: SyncEnv) -> None:
    seed(env, 250)
    scope = env.scope()
    first = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert (first.outcome, first.full, first.upserted) == ("ok", True, 250)
    assert first.pages >= 3
    assert_mirrors_truth(env)
    assert env.state().delta_link and env.state().page_link is None

    created = env.graph.create_user("newcomer")
    some = next(iter(env.rows("users")))
    assert env.graph.patch(f"users/{some}", json={"displayName": "Renamed"}).status_code == 204
    second = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert (second.outcome, second.full) == ("ok", False)
    assert second.upserted == 2
    rows = env.rows("users")
    assert rows[some]["raw"]["displayName"] == "Renamed"
    assert created["id"] in rows
    assert_mirrors_truth(env)
    # Typed columns come from the item.
    runs = env.runs()
    assert [r.outcome for r in runs] == ["ok", "ok"] and runs[0].full_round and not runs[1].full_round


def test_removed_reasons_soft_delete(env: SyncEnv) -> None:
    seed(env, 20)
    scope = env.scope()
    sync.sync_scope(env.engine, env.client, scope, worker="w1")
    ids = sorted(env.rows("users"))
    soft, hard = ids[0], ids[1]
    assert env.graph.delete(f"users/{soft}").status_code == 204  # to deletedItems: @removed "changed"
    assert env.graph.delete(f"users/{hard}").status_code == 204
    assert env.graph.delete(f"directory/deletedItems/{hard}").status_code == 204  # purged: "deleted"
    result = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert result.outcome == "ok" and result.deleted == 2
    rows = env.rows("users", live=False)
    assert rows[soft]["reason"] == "changed" and rows[soft]["deleted_at"] is not None
    assert rows[hard]["reason"] == "deleted" and rows[hard]["deleted_at"] is not None
    assert_mirrors_truth(env)
    # Restored from deletedItems: it comes back as a live row.
    assert env.graph.post(f"directory/deletedItems/{soft}/restore").status_code == 200
    sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert env.rows("users")[soft]["deleted_at"] is None
    assert_mirrors_truth(env)


def test_removed_hard_delete_mode(hard_env: SyncEnv) -> None:
    env = hard_env
    seed(env, 10)
    scope = env.scope()
    assert scope.delete == "hard"
    sync.sync_scope(env.engine, env.client, scope, worker="w1")
    victim = sorted(env.rows("users"))[0]
    env.graph.delete(f"users/{victim}")
    sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert victim not in env.rows("users", live=False)
    assert_mirrors_truth(env)


@pytest.mark.parametrize("kind", ["expired", "reset"])
def test_410_resyncs_with_mark_and_sweep(env: SyncEnv, kind: str) -> None:
    seed(env, 150)
    scope = env.scope()
    sync.sync_scope(env.engine, env.client, scope, worker="w1")
    victim = sorted(env.rows("users"))[3]
    env.graph.delete(f"users/{victim}")
    env.graph.delete(f"directory/deletedItems/{victim}")
    renamed = sorted(env.rows("users"))[5]
    env.graph.patch(f"users/{renamed}", json={"displayName": "After reset"})
    # The token is lost: the removal can only be learnt by enumerating again and sweeping.
    rule = {"type": "deltaReset", "scope": "users", "kind": kind, "count": 1}
    assert env.graph.admin("POST", "faults", json=rule).status_code == 201
    result = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert (result.outcome, result.full) == ("ok", True)
    rows = env.rows("users", live=False)
    assert rows[victim]["reason"] == SWEPT and rows[victim]["deleted_at"] is not None
    assert rows[renamed]["raw"]["displayName"] == "After reset"
    assert_mirrors_truth(env)
    assert env.state().delta_link and not env.state().round_full


def test_forced_full_pass_sweeps_and_keeps_live_rows(env: SyncEnv) -> None:
    seed(env, 30)
    scope = env.scope()
    sync.sync_scope(env.engine, env.client, scope, worker="w1")
    result = sync.sync_scope(env.engine, env.client, scope, worker="w1", full=True)
    assert result.full and result.deleted == 0 and result.upserted == 30
    assert_mirrors_truth(env)


# --- crash at every step ---------------------------------------------------------------------------


class Crash(BaseException):
    """Simulated process death: not an Exception, so no handler of the pass catches it."""


STEPS = ["leased", "page-fetched", "page-applied", "page-written", "page-committed", "swept", "pages-done", "finished"]


def crash_at(step: str, occurrence: int) -> sync.Fault:
    seen = {"n": 0}

    def fault(name: str) -> None:
        if name == step:
            seen["n"] += 1
            if seen["n"] == occurrence:
                raise Crash(f"{step}#{occurrence}")

    return fault


def test_a_crash_between_any_two_steps_converges(env: SyncEnv) -> None:
    seed(env, 230)  # three pages of 100
    scope = env.scope()
    clock = Clock()
    ids = sorted(env.graph.delta_all(SELECT)[0], key=lambda i: i["id"])
    cases = [(step, n) for step in STEPS for n in ((1, 2) if step.startswith("page-") else (1,))]
    for index, (step, occurrence) in enumerate(cases):
        # Graph changes between passes: an update, a soft delete, a purge, a creation.
        victim = ids[index]["id"]
        env.graph.patch(f"users/{ids[-1 - index]['id']}", json={"displayName": f"changed {index}"})
        env.graph.delete(f"users/{victim}")
        if index % 2:
            env.graph.delete(f"directory/deletedItems/{victim}")
        env.graph.create_user(f"crash{index}")
        # Crash in full rounds (several pages, a sweep) as well as in incremental ones (one page here).
        full = occurrence == 2 or step == "swept" or index % 3 == 0
        with pytest.raises(Crash):
            # Page by page, or several pages per transaction (when the next page is already fetched).
            commit_every = 0.0 if step == "page-committed" or index % 2 else 60.0
            outcome = sync.sync_scope(env.engine, env.client, scope, worker=f"dead-{index}", clock=clock, full=full,
                                      fault=crash_at(step, occurrence), commit_every=commit_every)
            pytest.fail(f"no crash at {step}#{occurrence} (index {index}, full={full}): {outcome}")
        # The dead worker's lease expires; a new worker converges with a clean pass.
        clock.advance(scopestate.LEASE_TTL + timedelta(seconds=1))
        result = sync.sync_scope(env.engine, env.client, scope, worker=f"next-{index}", clock=clock)
        assert result.outcome == "ok", (step, occurrence, result)
        assert_mirrors_truth(env)
        state = env.state()
        assert state.delta_link and state.page_link is None and state.leased_by is None
    # And right after a 410 made the pass restart as a full round.
    env.graph.delete(f"users/{ids[len(cases)]['id']}")
    env.graph.delete(f"directory/deletedItems/{ids[len(cases)]['id']}")
    env.graph.admin("POST", "faults", json={"type": "deltaReset", "scope": "users", "kind": "expired", "count": 1})
    with pytest.raises(Crash):
        sync.sync_scope(env.engine, env.client, scope, worker="dead-410", clock=clock, fault=crash_at("restarted", 1))
        pytest.fail("no 410 restart")
    clock.advance(scopestate.LEASE_TTL + timedelta(seconds=1))
    assert sync.sync_scope(env.engine, env.client, scope, worker="next-410", clock=clock).outcome == "ok"
    assert_mirrors_truth(env)
    outcomes = {r.outcome for r in env.runs()}
    assert outcomes <= {"ok", "abandoned", "running"}


# --- throttling ---------------------------------------------------------------------------------


def test_throttled_scope_is_postponed_not_failed(env: SyncEnv) -> None:
    seed(env, 10)
    scope = env.scope()
    rule = {"type": "status", "status": 429, "path": "/users/delta", "retryAfter": 120, "count": 50}
    env.graph.admin("POST", "faults", json=rule)
    result = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert result.outcome == "throttled"
    assert result.not_before is not None
    state = env.state()
    assert state.failures == 0 and state.leased_by is None and state.not_before is not None
    assert env.runs()[-1].outcome == "throttled"
    # Before not_before the scope is not run again...
    assert sync.sync_scope(env.engine, env.client, scope, worker="w1").outcome == "postponed"
    # ...after it, it is, and converges.
    env.graph.admin("DELETE", "faults")
    clock = Clock()
    clock.advance(timedelta(seconds=121))
    assert sync.sync_scope(env.engine, env.client, scope, worker="w1", clock=clock).outcome == "ok"
    assert_mirrors_truth(env)


def test_other_errors_back_off_and_are_recorded(env: SyncEnv) -> None:
    seed(env, 5)
    env.graph.admin("POST", "faults", json={"type": "status", "status": 403, "path": "/users/delta", "count": 1})
    result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
    assert result.outcome == "error" and "403" in (result.error or "")
    state = env.state()
    assert state.failures == 1 and state.last_error and state.not_before is not None


# --- leases ---------------------------------------------------------------------------------------


def test_a_leased_scope_is_busy_for_another_worker(env: SyncEnv) -> None:
    seed(env, 5)
    scope = env.scope()
    clock = Clock()
    with pytest.raises(Crash):
        sync.sync_scope(env.engine, env.client, scope, worker="a", clock=clock, fault=crash_at("leased", 1))
    assert sync.sync_scope(env.engine, env.client, scope, worker="b", clock=clock).outcome == "busy"
    clock.advance(scopestate.LEASE_TTL + timedelta(seconds=1))
    assert sync.sync_scope(env.engine, env.client, scope, worker="b", clock=clock).outcome == "ok"


def test_a_worker_whose_lease_was_taken_over_writes_nothing(env: SyncEnv) -> None:
    seed(env, 250)
    scope = env.scope()
    clock = Clock()

    def stall(name: str) -> None:
        # While "a" is between two pages, its lease expires and "b" syncs the scope.
        if name == "page-committed" and not stall.done:  # type: ignore[attr-defined]
            stall.done = True  # type: ignore[attr-defined]
            clock.advance(scopestate.LEASE_TTL + timedelta(seconds=1))
            assert sync.sync_scope(env.engine, env.client, scope, worker="b", clock=clock).outcome == "ok"

    stall.done = False  # type: ignore[attr-defined]
    result = sync.sync_scope(env.engine, env.client, scope, worker="a", clock=clock, fault=stall, commit_every=0.0)
    assert result.outcome == "lost"
    assert_mirrors_truth(env)


# --- fetch by id (resources without delta) ---------------------------------------------------------


def test_fetch_strategy_gets_items_by_id_and_lists_with_sweep(env: SyncEnv) -> None:
    seed(env, 12)
    scope = env.fetch_scope()
    # The periodic list: a full round every time, no deltaLink, swept at the end.
    first = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert (first.outcome, first.full, first.upserted) == ("ok", True, 12)
    ids = sorted(env.rows("users"))
    env.graph.patch(f"users/{ids[0]}", json={"displayName": "Fetched"})
    env.graph.delete(f"users/{ids[1]}")
    env.graph.delete(f"directory/deletedItems/{ids[1]}")
    # A notification names the item: GET it (200 -> upsert, 404 -> removed).
    fetched = fetch_items(
        env.engine, env.client, scope, [f"Users/{ids[0]}?$select=id,displayName,mail,accountEnabled,createdDateTime", f"Users/{ids[1]}"],
        worker="w1",
    )
    assert (fetched.upserted, fetched.deleted) == (1, 1)
    rows = env.rows("users", live=False)
    assert rows[ids[0]]["raw"]["displayName"] == "Fetched"
    assert rows[ids[1]]["reason"] == "deleted"
    env.graph.delete(f"users/{ids[2]}")
    again = sync.sync_scope(env.engine, env.client, scope, worker="w1")
    assert again.full and again.deleted == 1
    assert env.state().delta_link is None
    assert set(env.rows("users")) == set(ids) - {ids[1], ids[2]}


def test_fetch_by_id_while_another_worker_holds_the_scope_writes_nothing(env: SyncEnv) -> None:
    seed(env, 6)
    scope = env.fetch_scope()
    clock = Clock()
    assert sync.sync_scope(env.engine, env.client, scope, worker="w1", clock=clock).outcome == "ok"
    ids = sorted(env.rows("users"))
    env.graph.patch(f"users/{ids[0]}", json={"displayName": "Fetched later"})
    other = ScopeStore(env.engine, scope, worker="w2", clock=clock, lease_ttl=scopestate.LEASE_TTL)
    with env.engine.begin() as connection:
        assert other.take_lease(connection)  # w2 is in the middle of a pass (a list, say)
    runs = len(env.runs())
    busy = fetch_items(env.engine, env.client, scope, [f"Users/{ids[0]}"], worker="w1", clock=clock)
    assert (busy.outcome, busy.run_id, busy.items) == ("busy", None, 0)
    assert env.rows("users")[ids[0]]["raw"]["displayName"] != "Fetched later"
    assert len(env.runs()) == runs and env.state().leased_by == "w2"

    # The lease is taken over while the GETs run: the rows are not written either.
    class TakenOver:
        def get_json(self, path: str) -> Any:
            clock.advance(scopestate.LEASE_TTL + timedelta(seconds=1))
            with env.engine.begin() as connection:
                assert other.take_lease(connection)
            return env.client.get_json(path)

    clock.advance(scopestate.LEASE_TTL + timedelta(seconds=1))  # w2 died: its lease runs out
    lost = fetch_items(env.engine, TakenOver(), scope, [f"Users/{ids[0]}"], worker="w1", clock=clock)  # type: ignore[arg-type]
    assert lost.outcome == "lost" and env.runs()[-1].outcome == "lost"
    assert env.rows("users")[ids[0]]["raw"]["displayName"] != "Fetched later"
    assert env.state().leased_by == "w2"

    # Once the lease is free the same fetch writes the change, and gives back only the lease.
    with env.engine.begin() as connection:
        other.release_lease(connection)
    before = env.state()
    done = fetch_items(env.engine, env.client, scope, [f"Users/{ids[0]}"], worker="w1", clock=clock)
    assert (done.outcome, done.upserted) == ("ok", 1)
    assert env.rows("users")[ids[0]]["raw"]["displayName"] == "Fetched later"
    after = env.state()
    assert after.leased_by is None and after.lease_until is None
    assert (after.last_success_at, after.dirty_since) == (before.last_success_at, before.dirty_since)


# --- progress and status --------------------------------------------------------------------------


def test_sync_command_prints_progress_and_status_shows_the_scope(env: SyncEnv) -> None:
    seed(env, 120)
    runner = CliRunner()
    result = runner.invoke(main, ["sync", "--spec", str(env.spec.path), "--progress"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^users: [\d,]+ items, \d+ pages, [\d,]+ items/s$", result.stderr, re.MULTILINE), result.stderr
    assert "users: ok full, 120 items, 120 upserted" in result.stdout
    shown = status.collect(env.engine)
    (scope,) = shown.scopes
    assert scope.rows == 120 and scope.last_success is not None and scope.last_error is None
    printed = runner.invoke(main, ["status", "--spec", str(env.spec.path)])
    assert printed.exit_code == 0, printed.output
    assert "users" in printed.output and "120" in printed.output and "DECLARATION" in printed.output
    detail = runner.invoke(main, ["status", "users", "--spec", str(env.spec.path)])
    assert detail.exit_code == 0 and "Scopes" in detail.output and "120" in detail.output, detail.output
    # Unknown names are refused with the declared ones.
    bad = runner.invoke(main, ["sync", "--spec", str(env.spec.path), "nope"])
    assert bad.exit_code == 1 and "declared: users" in bad.stderr


# --- the fast row writer agrees with mirror.row_values ---------------------------------------------------


def test_row_writer_converts_like_mirror_row_values(database_url: str) -> None:
    import sqlalchemy as sa

    from syncer import mirror
    from syncer.spec import Column, Mirror

    columns = (
        Column("displayName", "name", "text"), Column("count", "count", "integer"), Column("ratio", "ratio", "float"),
        Column("enabled", "enabled", "boolean"), Column("when", "when", "datetime"), Column("start", "start", "datetime"),
        Column("tags", "tags", "json"), Column("owner.name", "owner_name", "text"), Column("odd", "odd", "text"),
    )
    m = Mirror(table="typed_items", columns=columns)
    scope = Scope(tenant_id="t", key="things", name="things", parent_key="things", table="typed_items",
                  strategy=Strategy("thing", "delta", "things/delta"), initial_url="things/delta", mirror=m)
    items = [
        {"id": "a", "displayName": "Ada", "count": 3, "ratio": 0.5, "enabled": True, "when": "2026-01-02T03:04:05Z",
         "start": {"dateTime": "2030-01-01T10:00:00.0000000", "timeZone": "UTC"}, "tags": ["x", {"y": 1}],
         "owner": {"name": "Grace"}, "odd": 12},
        {"id": "b", "displayName": None, "count": "42", "ratio": 1, "enabled": "yes", "when": "2026-01-02T03:04:05.1234567Z",
         "start": "not a date", "tags": None, "owner": "flat", "odd": {"k": [1, 2]}},
        {"id": "c", "count": 2.5, "ratio": True, "enabled": False, "when": "2026-01-02T03:04:05+02:00", "odd": False},
        {"id": "d", "displayName": "Zoë \u2713 \"quoted\" \\ back", "odd": 0.5, "tags": {"é": "ü", "n": [None, -1]},
         "owner": {"name": None}, "enabled": None, "count": -7},
        {"id": "e", "displayName": "", "odd": [], "tags": {}, "owner": [{"name": "in a list"}], "odd2": "x"},
    ]
    engine = database.create_engine(database_url)
    try:
        mirror.build_table(m).create(engine)
        writer = RowWriter(engine, scope)
        with engine.begin() as connection:
            apply_items(connection, writer, items, now=scopestate.utcnow(), run_id=7)
        table = mirror.build_table(m)
        with engine.connect() as connection:
            stored = {r.id: r for r in connection.execute(sa.select(table))}
    finally:
        engine.dispose()
    for item in items:
        expected = mirror.row_values(m, item)
        row = stored[item["id"]]
        for name, value in expected.items():
            got = getattr(row, name)
            if hasattr(value, "tzinfo") and value is not None:
                got = got if got.tzinfo else got.replace(tzinfo=value.tzinfo)
                assert got == value, (item["id"], name)
            else:
                assert got == value, (item["id"], name, got, value)
        assert row._raw == item and row._scope == "things" and row._sync_run_id == 7


def test_commands_on_a_database_never_upgraded_say_what_to_run(tmp_path: Path, emulator_info: dict[str, Any], graph: Any) -> None:
    from test_sync_support import write_spec

    spec = write_spec(tmp_path, emulator_info, f"sqlite:///{tmp_path / 'fresh.db'}", USERS_SPEC.format(delete="soft"))
    runner = CliRunner()
    for command in (["sync"], ["status"], ["worker"]):  # the worker does not wait for a migration
        result = runner.invoke(main, [*command, "--spec", str(spec.path)])
        assert result.exit_code == 1, (command, result.output)
        assert "run `syncer db upgrade` first" in result.stderr, (command, result.stderr)


def test_pages_written_before_graph_fails_are_kept_and_the_round_resumes(env: SyncEnv) -> None:
    from syncer.errors import ThrottledError

    seed(env, 350)  # four pages of 100
    scope = env.scope()

    class ThrottledAfterTwoPages:
        """The real client, except that Graph throttles the third page request."""

        def __init__(self, client: Any) -> None:
            self.client = client

        def iter_pages(self, url: str, *, headers: Any = None) -> Iterator[Any]:
            for n, page in enumerate(self.client.iter_pages(url, headers=headers)):
                if n == 2:
                    raise ThrottledError("Please retry again later.", status=429, retry_after=30)
                yield page

        def get_json(self, url: str) -> Any:
            return self.client.get_json(url)

    result = sync.sync_scope(env.engine, ThrottledAfterTwoPages(env.client), scope, worker="w1", commit_every=60.0)
    assert result.outcome == "throttled" and result.pages == 2 and result.upserted == 200
    state = env.state()
    assert state.page_link and state.round_full and state.delta_link is None
    assert len(env.rows("users")) == 200
    clock = Clock()
    clock.advance(timedelta(seconds=31))
    resumed = sync.sync_scope(env.engine, env.client, scope, worker="w1", clock=clock)
    assert resumed.outcome == "ok" and resumed.full and resumed.pages == 2 and resumed.upserted == 150
    assert_mirrors_truth(env)


def test_row_writer_copies_new_rows_then_merges_once_a_page_collides(database_url: str) -> None:
    """PostgreSQL COPYs a new scope's pages straight into the table; a page whose key is already
    there (a repeat across pages, a row of another scope) is undone and merged, and so are the next."""
    import sqlalchemy as sa

    from syncer import mirror
    from syncer.spec import Column, Mirror

    m = Mirror(table="copied_items", columns=(Column("displayName", "name", "text"),))

    def scope(key: str) -> Scope:
        return Scope(tenant_id="t", key=key, name=key, parent_key=key, table="copied_items",
                     strategy=Strategy("thing", "delta", "things/delta"), initial_url="things/delta", mirror=m)

    engine = database.create_engine(database_url)
    postgres = engine.dialect.name == "postgresql"
    table = mirror.build_table(m)
    try:
        table.create(engine)
        other = RowWriter(engine, scope("other"))
        with engine.begin() as connection:
            apply_items(connection, other, [{"id": "moved", "displayName": "before"}], now=scopestate.utcnow(), run_id=1)
        writer = RowWriter(engine, scope("folder"))
        with engine.begin() as connection:
            apply_items(connection, writer, [{"id": "a", "displayName": "A1"}, {"id": "b", "displayName": "B"}],
                             now=scopestate.utcnow(), run_id=2)
            assert writer.direct is (True if postgres else None)
            # "a" again (Graph may repeat an item across pages) and a row of another scope.
            page = [{"id": "c", "displayName": "C"}, {"id": "a", "displayName": "A2"}, {"id": "moved", "displayName": "after"}]
            apply_items(connection, writer, page, now=scopestate.utcnow(), run_id=2)
            assert writer.direct is (False if postgres else None)
            apply_items(connection, writer, [{"id": "b", "displayName": "B2"}], now=scopestate.utcnow(), run_id=2)
        with engine.connect() as connection:
            stored = {r.id: (r.name, r._scope, r._sync_run_id) for r in connection.execute(sa.select(table))}
        # A writer for a scope that already has rows merges from its first page.
        again = RowWriter(engine, scope("folder"))
        with engine.begin() as connection:
            apply_items(connection, again, [{"id": "d", "displayName": "D"}], now=scopestate.utcnow(), run_id=3)
            assert again.direct is (False if postgres else None)
    finally:
        engine.dispose()
    assert stored == {
        "a": ("A2", "folder", 2), "b": ("B2", "folder", 2), "c": ("C", "folder", 2), "moved": ("after", "folder", 2),
    }


def test_a_stopping_worker_ends_the_pass_at_a_commit_and_the_next_pass_resumes(env: SyncEnv) -> None:
    seed(env, 500)
    scope = env.scope()
    stop = threading.Event()
    first = sync.sync_scope(
        env.engine, env.client, scope, worker="w1", page_size=100, prefetch=0,
        progress=lambda _p: stop.set(), stop=stop,
    )
    assert (first.outcome, first.pages, first.upserted) == ("stopped", 1, 100)
    state = env.state()
    assert state.page_link and state.delta_link is None and state.leased_by is None
    assert len(env.rows("users")) == 100
    second = sync.sync_scope(env.engine, env.client, scope, worker="w2", page_size=100, prefetch=0)
    assert (second.outcome, second.full) == ("ok", True)
    assert second.upserted == 400, "the second pass resumed where the first stopped"
    assert_mirrors_truth(env)
