"""A worker left running while its spec is edited and applied never acts on its old copy.

Before: the old worker kept its declarations, acknowledged the new subscription's notifications
without a pass and spent the resync that ``db upgrade`` asked for with the old ``$select``: the new
column stayed NULL in every row, even after a restart. Now ``db upgrade`` and ``reconcile`` record
the spec's fingerprint (syncer.applied); the worker notices, stops, and starts again on the file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from test_sync_support import SyncEnv, make_env

from syncer import applied, schema
from syncer.applied import SpecOutdated
from syncer.cli import main
from syncer.spec import load_spec
from syncer.worker import sync
from syncer.worker.scheduler import Schedule, run_worker

ROOT = Path(__file__).resolve().parent.parent

USERS = """
  - name: users
    resource: users
    change_types: [updated, deleted]
    sync_interval: 1m
    mirror:
      table: users
      columns: [displayName, mail{extra}]
"""
GROUPS = """
  - name: groups
    resource: groups
    change_types: [updated, deleted]
    mirror:
      table: groups
      columns: [displayName]
"""


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, database_url, graph, USERS.format(extra=""))


def _edit(env: SyncEnv, subscriptions: str) -> None:
    text = env.spec.path.read_text()
    env.spec.path.write_text(text[: text.index("subscriptions:\n")] + "subscriptions:\n" + subscriptions)


def _wait(what: str, check: Any, timeout: float = 60, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + (f"; worker: {log.read_text()}" if log else "")
        time.sleep(0.2)


def test_a_running_worker_restarts_on_the_spec_db_upgrade_applied(env: SyncEnv, tmp_path: Path) -> None:
    env.graph.admin("POST", "seed", json={"users": 30, "groups": 3})
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "syncer", "worker", "--spec", str(env.spec.path), "--worker-id", "w-edit",
         "--drain-interval", "0.1", "--safety-net-interval", "0.5"],
        env={**os.environ, "SYNCER_LOG_LEVEL": "WARNING"}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait("the first mirror", lambda: len(env.rows("users")) == 30)
        # The edit: a new column and a new declaration, applied while the worker runs.
        _edit(env, USERS.format(extra=", jobTitle") + GROUPS)
        upgraded = subprocess.run([sys.executable, "-m", "syncer", "db", "upgrade", "--spec", str(env.spec.path)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert upgraded.returncode == 0, upgraded.stderr

        def job_titles_read() -> bool:
            """Every row read again with the new $select: its _raw has jobTitle, its column holds it."""
            with env.engine.connect() as connection:
                rows = connection.execute(sa.text("SELECT job_title, _raw FROM users")).all()
            raws = [orjson.loads(raw) if isinstance(raw, str | bytes) else raw for _, raw in rows]
            return (
                len(rows) == 30
                and all("jobTitle" in raw and raw["jobTitle"] == title for (title, _), raw in zip(rows, raws, strict=True))
                and sum(title is not None for title, _ in rows) >= 20
            )

        _wait("job titles in every row", job_titles_read, log=tmp_path / "worker.log")
        _wait("the new declaration's rows", lambda: len(env.rows("groups")) == 3)
        assert worker.poll() is None, "the worker restarts itself, it does not exit"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        log.close()
    output = (tmp_path / "worker.log").read_text()
    assert "this worker stops rather than act on its older copy of the spec" in output, output
    assert "starting again on" in output and "started on 2 subscriptions" in output, output
    assert "Traceback" not in output, output


def test_a_pass_on_other_columns_than_the_table_gives_the_scope_back_untouched(env: SyncEnv) -> None:
    """The fence in the pass itself: a stale copy that slipped past the job's check writes nothing and
    leaves the requested resync for a worker with the new columns."""
    env.graph.admin("POST", "seed", json={"users": 4})
    old_scope = env.scope("users")
    assert sync.sync_scope(env.engine, env.client, old_scope, worker="w1").outcome == "ok"
    _edit(env, USERS.format(extra=", jobTitle"))
    result = CliRunner().invoke(main, ["db", "upgrade", "--spec", str(env.spec.path)])
    assert result.exit_code == 0, result.output
    stale = sync.sync_scope(env.engine, env.client, old_scope, worker="w1")
    assert stale.outcome == "outdated" and "syncer db upgrade" in (stale.error or "")
    state = env.state()
    assert state.resync_requested and state.leased_by is None  # the resync waits for the new columns

    # A worker started on the old copy refuses at once, naming what to do.
    with pytest.raises(SpecOutdated, match=r"the database follows another subscriptions\.yaml"):
        run_worker(env.spec, schedule=Schedule(drain=3600, safety_net=3600, reconcile=3600), blocking=False,
                   worker_id="old", startup_wait=0)
    new_spec = load_spec(env.spec.path).resolve_emulator()
    with env.engine.connect() as connection:
        assert applied.outdated(connection, new_spec.fingerprint) is None
        assert connection.execute(sa.select(schema.applied_spec.c.applied_by)).scalar_one() == "db upgrade"
