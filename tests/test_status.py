"""``syncer status``: freshness and health per scope, a summary per declaration, details on request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from test_sync_support import USERS_SPEC, SyncEnv, make_env
from test_worker import GROUPS_SPEC, notify, record_subscription

from syncer import schema, status
from syncer.cli import main
from syncer.worker import sync


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, database_url, graph, USERS_SPEC.format(delete="soft") + GROUPS_SPEC)


def _age(env: SyncEnv, scope_key: str, by: timedelta) -> None:
    """Make the scope's last pass (and its run) look *by* older."""
    s, r = schema.sync_state, schema.sync_runs
    with env.engine.begin() as connection:
        state = connection.execute(sa.select(s.c.last_success_at).where(s.c.scope_key == scope_key)).scalar_one()
        connection.execute(sa.update(s).where(s.c.scope_key == scope_key).values(last_success_at=state - by))
        for run in connection.execute(sa.select(r.c.id, r.c.started_at, r.c.finished_at).where(r.c.scope_key == scope_key)).all():
            connection.execute(
                sa.update(r).where(r.c.id == run.id).values(started_at=run.started_at - by, finished_at=run.finished_at - by)
            )


def test_status_shows_scopes_and_subscription_expiry(env: SyncEnv) -> None:
    env.graph.admin("POST", "seed", json={"users": 7})
    record_subscription(env, "sub-users", "users", "users")
    sync.sync_scope(env.engine, env.client, env.scope("users"), worker="w1")
    env.graph.admin("POST", "faults", json={"type": "status", "status": 429, "path": "/groups/delta", "retryAfter": 900, "count": 10})
    assert sync.sync_scope(env.engine, env.client, env.scope("groups"), worker="w1").outcome == "throttled"
    shown = status.collect(env.engine)
    by_scope = {s.scope: s for s in shown.scopes}
    assert by_scope["users"].rows == 7 and by_scope["users"].lag is not None and by_scope["users"].last_outcome == "ok"
    assert by_scope["users"].health == "healthy" and by_scope["groups"].health == "failing"
    assert by_scope["groups"].not_before is not None and by_scope["groups"].last_outcome == "throttled"
    assert by_scope["groups"].last_success is None and "429" in (by_scope["groups"].last_error or "")
    (sub,) = shown.subscriptions
    assert sub.name == "users" and timedelta(days=1) < sub.expires_in <= timedelta(days=2)
    text = status.render(shown, failing=True) + status.render(shown, names=["users"])
    assert "postponed to" in text and "sub-users" in text and "1d 23h" in text and "never" in text

    # For monitoring: JSON, and an exit code when a scope is staler than allowed.
    runner = CliRunner()
    result = runner.invoke(main, ["status", "--spec", str(env.spec.path), "--output", "json", "--max-lag", "1h"])
    assert result.exit_code == 2, result.output
    assert "1 scope(s) staler than 1h 0m: groups" in result.stderr
    data = json.loads(result.stdout)
    scopes_by_key = {sc["scope"]: sc for sc in data["scopes"]}
    assert scopes_by_key["users"]["rows"] == 7 and 0 <= scopes_by_key["users"]["lag_seconds"] < 3600
    assert 0 <= scopes_by_key["users"]["freshness_seconds"] < 3600
    assert scopes_by_key["groups"]["last_success"] is None and scopes_by_key["groups"]["lag_seconds"] is None
    assert datetime.fromisoformat(scopes_by_key["groups"]["not_before"]) > datetime.now(UTC)
    assert data["subscriptions"][0]["expires_in_seconds"] > 86400 and data["inbox_waiting"] == 0
    declarations = {d["name"]: d for d in data["declarations"]}
    assert declarations["users"]["healthy"] == 1 and declarations["users"]["rows"] == 7
    assert declarations["groups"]["failing"] == 1 and declarations["users"]["subscriptions"] == 1
    env.graph.admin("DELETE", "faults")
    assert sync.sync_scope(env.engine, env.client, env.scope("groups"), worker="w1", full=True).outcome == "ok"
    checked = runner.invoke(main, ["status", "--spec", str(env.spec.path), "--max-lag", "1h", "--no-rows", "--output", "json"])
    assert checked.exit_code == 0, checked.output
    assert {sc["rows"] for sc in json.loads(checked.stdout)["scopes"]} == {None}  # not counted
    bad = runner.invoke(main, ["status", "--spec", str(env.spec.path), "--max-lag", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.stderr
    unknown = runner.invoke(main, ["status", "nosuch", "--spec", str(env.spec.path)])
    assert unknown.exit_code == 2 and "no declaration named 'nosuch'" in unknown.stderr


def test_a_quiet_scope_is_fresh_until_its_sync_interval_and_a_notified_change_makes_it_stale_from_then(env: SyncEnv) -> None:
    """Freshness is what the mirror reflects, not the time since the last pass: a quiet scope with its
    safety net on a 1-hour sync_interval is healthy 50 minutes after its pass (the README's old advice,
    `--max-lag 30m`, called it stale), stale once past its interval and grace; a notification still
    waiting caps freshness at its arrival; a fetch by id of notified items counts as fresh."""
    env.graph.admin("POST", "seed", json={"users": 3})
    record_subscription(env, "sub-users", "users", "users")
    assert sync.sync_scope(env.engine, env.client, env.scope("users"), worker="w1").outcome == "ok"
    assert sync.sync_scope(env.engine, env.client, env.scope("groups"), worker="w1").outcome == "ok"
    _age(env, "users", timedelta(minutes=50))
    runner = CliRunner()
    checked = runner.invoke(main, ["status", "--spec", str(env.spec.path), "--check", "--no-rows"])
    assert checked.exit_code == 0, checked.output + checked.stderr
    users = next(sc for sc in status.collect(env.engine, intervals={"users": timedelta(hours=1)}).scopes if sc.scope == "users")
    assert users.health == "healthy" and timedelta(minutes=49) < users.freshness < timedelta(minutes=51)

    _age(env, "users", timedelta(minutes=30))  # 80 minutes: past 1h + 15m of grace
    late = runner.invoke(main, ["status", "--spec", str(env.spec.path), "--check", "--no-rows"])
    assert late.exit_code == 2 and "1 scope(s) need attention: users (stale)" in late.stderr

    # A pass now, then a notification waits: the mirror lacks that change since it came.
    assert sync.sync_scope(env.engine, env.client, env.scope("users"), worker="w1").outcome == "ok"
    came = datetime.now(UTC) - timedelta(hours=3)
    with env.engine.begin() as connection:
        connection.execute(sa.update(schema.sync_state).where(schema.sync_state.c.scope_key == "users").values(dirty_since=came))
    users = next(sc for sc in status.collect(env.engine).scopes if sc.scope == "users")
    assert users.fresh_as_of == came and users.health == "stale" and users.dirty
    notify(env, "sub-users", "users/x")
    summary = status.collect(env.engine)
    assert {d.name: d.inbox_waiting for d in summary.declarations or []}["users"] == 1


def test_the_summary_fits_the_terminal_and_details_are_asked_for(env: SyncEnv) -> None:
    env.graph.admin("POST", "seed", json={"users": 2})
    assert sync.sync_scope(env.engine, env.client, env.scope("users"), worker="w1").outcome == "ok"
    with env.engine.begin() as connection:  # a long error, as Graph's can be
        connection.execute(
            sa.update(schema.sync_state).where(schema.sync_state.c.scope_key == "users").values(last_error="x" * 500)
        )
    shown = status.collect(env.engine, intervals={"users": timedelta(hours=1), "groups": timedelta(hours=1)})
    summary = status.render(shown, width=80)
    assert summary.splitlines()[0].split()[:2] == ["DECLARATION", "SCOPES"]
    assert "users" in summary and "groups" in summary and "1 needing attention" in summary
    groups = next(d for d in shown.declarations or [] if d.name == "groups")
    assert groups.scopes == 0 and groups.oldest_fresh_as_of is None  # declared, never run: still listed
    assert all(len(line) <= 80 for line in summary.splitlines()), summary
    detail = status.render(shown, pattern="us*", width=100)
    assert "users" in detail and "groups" not in detail.split("Subscriptions")[0].split("\n", 2)[2]
    assert all(len(line) <= 100 for line in detail.splitlines()), detail
    assert "…" in detail  # the error was cut, not wrapped
    failing = status.render(shown, failing=True, width=120)
    assert "failing" in failing and "xxxxx" in failing
