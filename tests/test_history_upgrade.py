"""History across ``syncer db upgrade`` (issue 20): a column added, a column's type changed (``--rebuild``), on
SQLite and PostgreSQL: the versions stay, none is faked, and the history table takes the new column types."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_history import HISTORY_SPEC, at, run, sql, versions
from test_sync_support import SyncEnv, make_env

from syncer import history, mirror
from syncer.spec import load_spec


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, database_url, graph, HISTORY_SPEC)


def test_db_upgrade_adding_a_column_fakes_no_version(tmp_path: Path, env: SyncEnv) -> None:
    a = env.graph.create_user("ada", jobTitle="Clerk")["id"]
    run(env, "users", at(0))
    spec_path = env.spec.path
    spec_path.write_text(spec_path.read_text().replace("columns: [displayName, accountEnabled]",
                                                       "columns: [displayName, accountEnabled, jobTitle]"))
    spec = load_spec(spec_path).resolve_emulator()
    assert any("users_history.job_title" in c for c in mirror.upgrade(spec))
    env.spec = spec
    run(env, "users", at(1))  # the resync db upgrade asked for brings jobTitle: news, not a change
    run(env, "users", at(2), full=True)
    found = versions(env, "users", a)
    assert found == [("created", at(0), None, "Ada", True, "Clerk")]


def _rewrite(env: SyncEnv, old: str, new: str, *, rebuild: bool) -> list[str]:
    """Change the spec's text, apply it as `syncer db upgrade [--rebuild]` would; the changes it printed."""
    env.spec.path.write_text(env.spec.path.read_text().replace(old, new))
    spec = load_spec(env.spec.path).resolve_emulator()
    changes = mirror.upgrade(spec, rebuild=rebuild)
    env.spec = spec
    return changes


def test_a_rebuild_and_a_changed_type_fake_no_version(env: SyncEnv) -> None:
    a = env.graph.create_user("ada", employeeId="42")["id"]
    b = env.graph.create_user("bob", employeeId="7")["id"]
    c = env.graph.create_user("cyd", employeeId="x-9")["id"]
    _rewrite(env, "columns: [displayName, accountEnabled]", "columns: [displayName, accountEnabled, employeeId]",
             rebuild=False)
    run(env, "users", at(0))
    assert env.graph.patch(f"users/{a}", json={"displayName": "Ada Lovelace"}).status_code == 204
    run(env, "users", at(1))
    # employeeId's column becomes an integer: the mirror table is rebuilt, the history table keeps its versions.
    changes = _rewrite(env, "accountEnabled, employeeId]",
                       "accountEnabled, {field: employeeId, column: employee_id, type: integer}]", rebuild=True)
    assert "rebuilt table users: column employee_id changes type from text to integer" in changes
    assert any(line.startswith("users_history: column(s) employee_id take their new type") for line in changes)
    # A real change while the table was empty: the resync writes it, and only it.
    assert env.graph.patch(f"users/{b}", json={"displayName": "Bob B"}).status_code == 204
    d = env.graph.create_user("dan", employeeId="5")["id"]  # new to history, in the same page as rows it knows
    run(env, "users", at(2))
    run(env, "users", at(3), full=True)
    assert versions(env, "users", a) == [
        ("created", at(0), at(1), "Ada", True, 42),
        ("updated", at(1), None, "Ada Lovelace", True, 42),
    ]
    assert versions(env, "users", b) == [("created", at(0), at(2), "Bob", True, 7), ("updated", at(2), None, "Bob B", True, 7)]
    assert versions(env, "users", c) == [("created", at(0), None, "Cyd", True, None)]  # "x-9" is no integer
    assert versions(env, "users", d) == [("created", at(2), None, "Dan", True, 5)]
    # The current versions' _raw is the mirror rows' again (as before the rebuild); the closed ones keep theirs.
    assert sql(env, "SELECT count(*) FROM users_history WHERE _valid_to IS NULL AND _raw IS NOT NULL") == [(0,)]
    assert sql(env, "SELECT count(*) FROM users_history WHERE _valid_to IS NOT NULL AND _raw IS NULL") == [(0,)]
    column_type = sa.inspect(env.engine).get_columns("users_history")
    assert str(next(col["type"] for col in column_type if col["name"] == "employee_id")).upper() == "BIGINT"
    if env.engine.dialect.name == "sqlite":  # stored as integers, not as text under a text affinity
        assert sql(env, "SELECT DISTINCT typeof(employee_id) FROM users_history WHERE employee_id IS NOT NULL") == [
            ("integer",)
        ]


def test_a_rebuilt_group_table_opens_no_second_membership_interval(env: SyncEnv) -> None:
    users = [env.graph.create_user(n)["id"] for n in ("ann", "ben", "cat")]
    r = env.graph.post("groups", json={"displayName": "Finance", "mailEnabled": False, "mailNickname": "fin",
                                       "securityEnabled": True})
    assert r.status_code == 201, r.text
    gid = r.json()["id"]
    for user in users[:2]:
        ref = {"@odata.id": f"{env.graph.graph}/directoryObjects/{user}"}
        assert env.graph.post(f"groups/{gid}/members/$ref", json=ref).status_code == 204
    run(env, "groups", at(0))
    changes = _rewrite(env, "columns: [displayName]\n", "columns: [{field: displayName, column: display_name, type: json}]\n",
                       rebuild=True)
    assert "rebuilt table groups: column display_name changes type from text to json" in changes
    run(env, "groups", at(1))
    assert [v[:3] for v in versions(env, "groups", gid)] == [("created", at(0), None)]
    intervals = sql(env, "SELECT member_id, _valid_from, _valid_to FROM groups_members_history ORDER BY member_id")
    times = [(m, t if isinstance(t, datetime) else datetime.fromisoformat(t).replace(tzinfo=UTC), e) for m, t, e in intervals]
    assert times == sorted([(users[0], at(0), None), (users[1], at(0), None)])


def test_an_item_gone_from_graph_during_a_rebuild_is_swept_from_history(env: SyncEnv) -> None:
    a = env.graph.create_user("ada", employeeId="42")["id"]
    b = env.graph.create_user("bob", employeeId="7")["id"]
    _rewrite(env, "columns: [displayName, accountEnabled]", "columns: [displayName, accountEnabled, employeeId]",
             rebuild=False)
    run(env, "users", at(0))
    _rewrite(env, "accountEnabled, employeeId]", "accountEnabled, {field: employeeId, column: employee_id, type: integer}]",
             rebuild=True)
    assert env.graph.delete(f"users/{b}").status_code == 204  # while the mirror table is empty
    settled: dict[str, object] = {}
    # Before the resync nothing says bob is gone: his version stays open, and the table is looked at again later.
    assert history.close_orphans(env.engine, env.spec, now=at(1), settled=settled) == 0
    assert "users" not in settled
    run(env, "users", at(2))  # the resync the rebuild asked for: a full round, which does not see bob
    assert versions(env, "users", b) == [("created", at(0), None, "Bob", True, 7)]  # no mirror row for a sweep
    assert history.close_orphans(env.engine, env.spec, now=at(3), settled=settled) == 1
    assert versions(env, "users", b) == [("created", at(0), at(2), "Bob", True, 7), ("swept", at(2), None, "Bob", True, 7)]
    assert versions(env, "users", a) == [("created", at(0), None, "Ada", True, 42)]
    # The swept version keeps bob's last item: no mirror row holds it.
    raw = sql(env, "SELECT _raw FROM users_history WHERE id = :b AND _change = 'swept'", b=b)
    assert raw[0][0] is not None and b in str(raw[0][0])
    # Nothing is left to wait for: the table is settled and not read again until the next db upgrade.
    assert settled.get("users") is not None
    assert history.close_orphans(env.engine, env.spec, now=at(4), settled=settled) == 0


def test_a_member_removed_during_a_rebuild_has_its_interval_closed(env: SyncEnv) -> None:
    users = [env.graph.create_user(n)["id"] for n in ("ann", "ben")]
    r = env.graph.post("groups", json={"displayName": "Finance", "mailEnabled": False, "mailNickname": "fin",
                                       "securityEnabled": True})
    assert r.status_code == 201, r.text
    gid = r.json()["id"]
    for user in users:
        ref = {"@odata.id": f"{env.graph.graph}/directoryObjects/{user}"}
        assert env.graph.post(f"groups/{gid}/members/$ref", json=ref).status_code == 204
    run(env, "groups", at(0))
    _rewrite(env, "columns: [displayName]\n", "columns: [{field: displayName, column: display_name, type: json}]\n",
             rebuild=True)
    assert env.graph.delete(f"groups/{gid}/members/{users[1]}/$ref").status_code == 204
    run(env, "groups", at(1))
    assert history.close_orphans(env.engine, env.spec, now=at(2), settled={}) == 1
    intervals = sql(env, "SELECT member_id, _valid_from, _valid_to FROM groups_members_history ORDER BY member_id")
    def utc(t: object) -> object:
        return t if not isinstance(t, str) else datetime.fromisoformat(t).replace(tzinfo=UTC)
    assert sorted((m, utc(f), utc(t)) for m, f, t in intervals) == sorted([(users[0], at(0), None), (users[1], at(0), at(1))])


def test_retentions_index_follows_keep(env: SyncEnv) -> None:
    # Only a table with `keep` has retention's index on _valid_to: a table kept forever would update it on every
    # change for nothing. Adding `keep` creates it, taking it away drops it.
    def indexes(table: str) -> set[str]:
        with env.engine.connect() as connection:
            return {str(i["name"]) for i in sa.inspect(connection).get_indexes(table)}

    assert mirror.index_name("users_history", "valid_to") in indexes("users_history")
    assert mirror.index_name("groups_history", "valid_to") not in indexes("groups_history")
    assert mirror.index_name("groups_members_history", "valid_to") not in indexes("groups_members_history")
    changes = _rewrite(env, "history: true", "history: {keep: 30d}", rebuild=False)
    assert mirror.index_name("groups_history", "valid_to") in indexes("groups_history")
    assert mirror.index_name("groups_members_history", "valid_to") in indexes("groups_members_history")
    assert any("created index" in c for c in changes), changes
    _rewrite(env, "history: {keep: 400d}", "history: true", rebuild=False)
    assert mirror.index_name("users_history", "valid_to") not in indexes("users_history")
    assert _rewrite(env, "history: true", "history: true", rebuild=False) == []
