"""Lost sync state: a stored link the next pass cannot use is a resync, not a silent or endless failure.

Before: a stored ``""`` deltaLink made every pass "ok, 0 pages" while Graph moved on; a link Graph
refused (bad token) or one on another origin failed every pass, with backoff, forever. Now each starts
a full round with mark-and-sweep (as a 410 does), the mirror ends equal to Graph, the reason is logged
without the link's token and shown by ``syncer status``; a resource that is gone still fails as before.
Against the emulator over HTTPS, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from test_graph_paging import Listener
from test_sync_support import USERS_SPEC, Clock, SyncEnv, make_env

from syncer import status, verify
from syncer.worker import scopestate, sync
from syncer.worker.scopestate import ScopeStore
from syncer.worker.writer import SWEPT

SELECT = "users/delta?$select=id,displayName,mail,accountEnabled,createdDateTime"


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, database_url, graph, USERS_SPEC.format(delete="soft"))


def synced_then_changed(env: SyncEnv, users: int = 150) -> tuple[str, str]:
    """A first pass, then Graph changes: one user purged (only a sweep can learn it), one renamed."""
    assert env.graph.admin("POST", "seed", json={"users": users}).status_code == 200
    first = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
    assert (first.outcome, first.full) == ("ok", True)
    ids = sorted(env.rows("users"))
    victim, renamed = ids[3], ids[5]
    assert env.graph.delete(f"users/{victim}").status_code == 204
    assert env.graph.delete(f"directory/deletedItems/{victim}").status_code == 204
    assert env.graph.patch(f"users/{renamed}", json={"displayName": "After the loss"}).status_code == 204
    return victim, renamed


def store_links(env: SyncEnv, **values: Any) -> None:
    """Write the scope's cursor the way a corrupt row would hold it, through the cursor's owner."""
    store = ScopeStore(env.engine, env.scope(), worker="test", clock=scopestate.utcnow, lease_ttl=scopestate.LEASE_TTL)
    with env.engine.begin() as connection:
        store.update_state(connection, **values)


def assert_resynced(env: SyncEnv, result: sync.PassResult, victim: str, renamed: str, reason: str) -> None:
    assert (result.outcome, result.full) == ("ok", True), result
    assert result.resync and reason in result.resync
    rows = env.rows("users", live=False)
    assert rows[victim]["reason"] == SWEPT and rows[victim]["deleted_at"] is not None
    assert rows[renamed]["raw"]["displayName"] == "After the loss"
    assert verify.compare_scope(env.engine, env.client, env.scope()) == []
    state = env.state()
    assert state.delta_link and state.page_link is None and not state.round_full and state.failures == 0
    (shown,) = status.collect(env.engine).scopes
    assert shown.last_outcome == "ok" and shown.last_resync and reason in shown.last_resync
    assert "resynced" in status.render(status.collect(env.engine), names=["users"])
    # The next pass is an ordinary incremental one again.
    again = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
    assert (again.outcome, again.full, again.resync) == ("ok", False, None)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "syncer.worker.sync" and r.levelno >= logging.WARNING]


def test_an_empty_stored_delta_link_runs_a_full_round(env: SyncEnv, caplog: pytest.LogCaptureFixture) -> None:
    victim, renamed = synced_then_changed(env)
    store_links(env, delta_link="")
    with caplog.at_level(logging.INFO, logger="syncer.worker.sync"):
        result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
    (warning,) = warnings_of(caplog)
    assert "users" in warning and "stored deltaLink is empty" in warning
    assert_resynced(env, result, victim, renamed, "stored deltaLink is empty")


@pytest.mark.parametrize("corrupt", ["garbage", "truncated"])
def test_a_delta_link_with_a_bad_token_is_refused_by_graph_and_resynced(
    env: SyncEnv, caplog: pytest.LogCaptureFixture, corrupt: str
) -> None:
    victim, renamed = synced_then_changed(env)
    good = env.state().delta_link
    token = good.rsplit("$deltatoken=", 1)[1]
    forged = "G4rbage-t0ken-that-Graph-never-issued" if corrupt == "garbage" else token[: len(token) // 2]
    bad = good.replace(token, forged)
    # What Graph answers a token that is not one of its own (observed: 400; an expired one is a 410).
    assert env.graph.get(bad).status_code == 400
    store_links(env, delta_link=bad)
    with caplog.at_level(logging.INFO, logger="syncer.worker.sync"):
        result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
    (warning,) = warnings_of(caplog)
    assert "users" in warning and "HTTP 400" in warning
    assert forged not in caplog.text and forged not in (result.resync or "")
    assert forged not in str(env.runs()[-1].error)
    assert_resynced(env, result, victim, renamed, "refused the stored deltaLink with HTTP 400")


def test_a_delta_link_to_another_origin_is_never_called_and_resynced(
    env: SyncEnv, caplog: pytest.LogCaptureFixture
) -> None:
    victim, renamed = synced_then_changed(env)
    elsewhere = Listener()
    try:
        # Same host as the emulator, another port: another origin, which would receive our bearer token.
        store_links(env, delta_link=f"https://127.0.0.1:{elsewhere.port}/v1.0/users/delta?$deltatoken=stolen-token")
        with caplog.at_level(logging.INFO, logger="syncer.worker.sync"):
            result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
    finally:
        elsewhere.close()
    assert elsewhere.connections == 0
    (warning,) = warnings_of(caplog)
    assert "users" in warning and "outside the Graph origin" in warning and "stolen-token" not in warning
    assert_resynced(env, result, victim, renamed, "points outside the Graph origin")


def test_a_404_on_the_stored_delta_link_alone_is_a_bad_token(env: SyncEnv) -> None:
    victim, renamed = synced_then_changed(env)
    rule = {"type": "status", "status": 404, "path": "/users/delta", "count": 1}
    assert env.graph.admin("POST", "faults", json=rule).status_code == 201
    result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
    assert_resynced(env, result, victim, renamed, "refused the stored deltaLink with HTTP 404")


def test_a_resource_that_is_gone_fails_as_before_and_keeps_its_delta_link(env: SyncEnv) -> None:
    # 404 on the stored link and on the initial URL too: the resource is gone, which says nothing
    # against the token; the pass fails and backs off as it always did, and the link is kept.
    synced_then_changed(env)
    before = env.state().delta_link
    rule = {"type": "status", "status": 404, "path": "/users/delta", "count": 2}
    assert env.graph.admin("POST", "faults", json=rule).status_code == 201
    result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
    assert result.outcome == "error" and "404" in (result.error or "") and result.resync is None
    state = env.state()
    assert state.delta_link == before and state.page_link is None and not state.round_full
    assert state.failures == 1 and state.not_before is not None
    # Once it is back, the pass carries on from the link: an incremental round.
    clock = Clock()
    clock.advance(timedelta(hours=1))
    back = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1", clock=clock)
    assert (back.outcome, back.full) == ("ok", False)
    assert verify.compare_scope(env.engine, env.client, env.scope()) == []


def test_graph_failing_on_the_stored_link_is_not_a_lost_state(env: SyncEnv) -> None:
    synced_then_changed(env)
    before = env.state().delta_link
    rule = {"type": "status", "status": 503, "path": "/users/delta", "count": 50}
    assert env.graph.admin("POST", "faults", json=rule).status_code == 201
    result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
    assert result.outcome in ("throttled", "error") and not result.full and result.resync is None
    assert env.state().delta_link == before


def test_an_empty_next_link_of_an_incremental_round_restarts_it_from_its_delta_link(env: SyncEnv) -> None:
    victim, renamed = synced_then_changed(env)
    run_id = env.runs()[-1].id
    store_links(env, page_link="", round_id=run_id, round_full=False)
    result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
    assert (result.outcome, result.full) == ("ok", False)
    assert result.upserted >= 1 and result.deleted == 1
    rows = env.rows("users", live=False)
    assert rows[victim]["deleted_at"] is not None and rows[renamed]["raw"]["displayName"] == "After the loss"
    assert verify.compare_scope(env.engine, env.client, env.scope()) == []


def test_an_empty_next_link_of_a_full_round_starts_the_round_again(env: SyncEnv) -> None:
    victim, renamed = synced_then_changed(env)
    run_id = env.runs()[-1].id
    store_links(env, delta_link=None, page_link="", round_id=run_id, round_full=True)
    result = sync.sync_scope(env.engine, env.client, env.scope(), worker="w1")
    assert_resynced(env, result, victim, renamed, "stored nextLink of the round in progress is empty")
