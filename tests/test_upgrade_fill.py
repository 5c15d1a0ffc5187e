"""Issue 18 item 8: a column added by `db upgrade` is filled, from `_raw` or by the full pass it announces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from test_sync_support import USERS_SPEC, SyncEnv, make_env

from syncer.cli import main


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, database_url, graph, USERS_SPEC.format(delete="soft"))


def test_a_column_never_fetched_is_announced_and_filled_by_the_next_pass(env: SyncEnv) -> None:
    titles = {env.graph.create_user(f"fill{n}", jobTitle=f"Title {n}")["id"]: f"Title {n}" for n in range(3)}
    runner = CliRunner()
    spec_path = str(env.spec.path)
    first = runner.invoke(main, ["sync", "users", "--spec", spec_path])
    assert first.exit_code == 0, first.output
    rows = len(env.rows("users"))
    assert rows >= 3 and all("jobTitle" not in r["raw"] for r in env.rows("users").values())

    env.spec.path.write_text(env.spec.path.read_text().replace("        - mail\n", "        - mail\n        - jobTitle\n"))
    upgraded = runner.invoke(main, ["db", "upgrade", "--spec", spec_path])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"added column users.job_title (text, from jobTitle): filled from _raw for 0 of {rows} rows" in upgraded.output
    assert f"{rows} rows of users wait for a full pass of 'users'" in upgraded.output, upgraded.output
    assert "syncer sync users --full" in upgraded.output
    assert env.state().resync_requested and env.state().delta_link is None

    # A plain pass (what the worker runs next) is the full one asked for: no NULL is left where Graph has a title.
    again = runner.invoke(main, ["sync", "users", "--spec", spec_path])
    assert again.exit_code == 0, again.output
    with env.engine.connect() as connection:
        filled = dict(connection.execute(sa.text("SELECT id, job_title FROM users WHERE _deleted_at IS NULL")).all())
    assert {k: filled[k] for k in titles} == titles
    truth = env.truth("users/delta?$select=id,jobTitle")
    assert filled == {k: v.get("jobTitle") for k, v in truth.items()}
    assert not env.state().resync_requested
