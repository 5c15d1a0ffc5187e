"""`syncer sync` as a person runs it: now, despite a back-off; interrupted, it gives its scope back.

Against the emulator over real HTTPS, on SQLite and PostgreSQL; the interrupted pass is a real
`python -m syncer sync --full` process sent SIGINT/SIGTERM mid-pass.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_sync_support import USERS_SPEC, SyncEnv, make_env

from syncer.cli import main
from syncer.worker import scopestate, sync
from syncer.worker.scheduler import sync_once

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, database_url, graph, USERS_SPEC.format(delete="soft"))


def seed(env: SyncEnv, users: int) -> None:
    r = env.graph.admin("POST", "seed", json={"users": users})
    assert r.status_code == 200, r.text


def sync_cli(env: SyncEnv, *args: str) -> Any:
    return CliRunner().invoke(main, ["sync", "--spec", str(env.spec.path), *args])


def test_a_manual_sync_runs_despite_the_back_off_of_a_failure(env: SyncEnv) -> None:
    seed(env, 5)
    env.graph.admin("POST", "faults", json={"type": "status", "status": 403, "path": "/users/delta", "count": 1})
    assert sync.sync_scope(env.engine, env.client, env.scope(), worker="w1").outcome == "error"
    assert env.state().not_before is not None  # the worker would wait
    # The cause is fixed (the fault was used up): a person's `syncer sync users` runs now.
    result = sync_cli(env, "users")
    assert result.exit_code == 0, result.output
    assert "users: ok" in result.stdout and "5 upserted" in result.stdout
    state = env.state()
    assert state.failures == 0 and state.not_before is None and state.last_error is None
    assert len(env.rows("users")) == 5


def test_a_manual_sync_that_syncs_nothing_exits_non_zero(env: SyncEnv) -> None:
    seed(env, 5)
    rule = {"type": "status", "status": 429, "path": "/users/delta", "retryAfter": 120, "count": 100}
    env.graph.admin("POST", "faults", json=rule)
    assert sync.sync_scope(env.engine, env.client, env.scope(), worker="w1").outcome == "throttled"
    # Still throttled: the manual sync tries (not "postponed") and says it did not sync.
    result = sync_cli(env, "users")
    assert result.exit_code == 1, result.output
    assert "users: throttled" in result.stdout and "1 of 1 scopes not synced: users" in result.stderr
    env.graph.admin("DELETE", "faults")


def test_a_manual_sync_leaves_a_scope_a_worker_holds_and_says_so(env: SyncEnv) -> None:
    seed(env, 5)
    scope = env.scope()
    store = scopestate.ScopeStore(env.engine, scope, worker="worker-1", clock=scopestate.utcnow,
                                  lease_ttl=scopestate.LEASE_TTL)
    with env.engine.begin() as connection:
        store.ensure(connection)
        assert store.take_lease(connection)
    result = sync_cli(env, "users")
    assert result.exit_code == 1, result.output
    assert "users: busy" in result.stdout and "running worker holds it" in result.stdout
    assert env.rows("users") == {} and env.state().leased_by == "worker-1"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_full_sync_gives_its_lease_back(env: SyncEnv, signum: int) -> None:
    seed(env, 2500)  # 3 pages of 999 users...
    # ...each taking 1.5 s, so that the signal lands mid-pass.
    env.graph.admin("POST", "faults", json={"type": "latency", "ms": 1500, "path": "/users/delta"})
    process = subprocess.Popen(
        [sys.executable, "-m", "syncer", "sync", "--full", "--progress", "--spec", str(env.spec.path)],
        env={**os.environ, "SYNCER_LOG_LEVEL": "WARNING"}, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # the progress line of the first committed page
        assert first.startswith("users: 999 items"), first
        assert env.state().leased_by is not None
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    state = env.state()
    assert state.leased_by is None and state.lease_until is None, (out, err)
    assert process.returncode == 128 + signum, (out, err)
    assert "Traceback" not in err, err
    assert "users: stopped full" in out and "interrupted" in out, out
    assert state.page_link is not None  # the resume point of the committed pages
    assert 999 <= len(env.rows("users")) < 2500
    # The next `syncer sync` runs at once (not "busy" for the lease's 5 minutes) and finishes the round.
    env.graph.admin("DELETE", "faults")
    started = time.monotonic()
    result = sync_cli(env)
    assert result.exit_code == 0, result.output
    assert "users: ok full" in result.stdout, result.stdout
    assert len(env.rows("users")) == 2500
    assert time.monotonic() - started < timedelta(minutes=1).total_seconds()


def test_a_sync_aborted_mid_pass_still_gives_its_lease_back(env: SyncEnv) -> None:
    # A second Ctrl-C (or any KeyboardInterrupt) lands between two pages: no commit to stop at.
    seed(env, 30)

    def abort(_progress: sync.Progress) -> None:
        raise KeyboardInterrupt

    clients = {env.tenant_id: env.client}
    with pytest.raises(KeyboardInterrupt):
        sync_once(env.spec, clients=clients, engine=env.engine, page_size=10, progress=abort)
    assert env.state().leased_by is None  # not "busy" for the next 5 minutes
    assert len(env.rows("users")) >= 10  # what was committed stays
    (result,) = sync_once(env.spec, clients=clients, engine=env.engine, page_size=10)
    assert result.outcome == "ok" and len(env.rows("users")) == 30
