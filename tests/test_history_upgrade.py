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
    assert any("users_versions.job_title" in c for c in mirror.upgrade(spec))
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
    assert any(line.startswith("users_versions: column(s) employee_id take their new type") for line in changes)
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
    # Only a table with `keep` has retention's index (a version's start; an interval's end): a table kept forever
    # would update it on every change for nothing. Adding `keep` creates it, taking it away drops it.
    def indexes(table: str) -> set[str]:
        with env.engine.connect() as connection:
            return {str(i["name"]) for i in sa.inspect(connection).get_indexes(table)}

    assert mirror.index_name("users_history", "valid_from") in indexes("users_versions")
    assert mirror.index_name("groups_history", "valid_from") not in indexes("groups_versions")
    assert mirror.index_name("groups_members_history", "valid_to") not in indexes("groups_members_history")
    changes = _rewrite(env, "history: true", "history: {keep: 30d}", rebuild=False)
    assert mirror.index_name("groups_history", "valid_from") in indexes("groups_versions")
    assert mirror.index_name("groups_members_history", "valid_to") in indexes("groups_members_history")
    assert any("created index" in c for c in changes), changes
    _rewrite(env, "history: {keep: 400d}", "history: true", rebuild=False)
    assert mirror.index_name("users_history", "valid_from") not in indexes("users_versions")
    assert _rewrite(env, "history: true", "history: true", rebuild=False) == []


def _first_layout(m: Any) -> sa.Table:
    """``<table>_history`` as syncer wrote it first: a table, each version ended in place (``_valid_to``, and the
    ended version's ``_raw`` written into it)."""
    from sqlalchemy.dialects.postgresql import JSONB

    from syncer.mirror_owners import OWNER_TYPE
    from syncer.schema import UtcDateTime

    name = f"{m.table}_history"
    return sa.Table(
        name, sa.MetaData(),
        sa.Column("_version", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(512), nullable=False),
        sa.Column("_valid_from", UtcDateTime, nullable=False),
        sa.Column("_valid_to", UtcDateTime, nullable=True),
        *[sa.Column(c.name, mirror.SQL_TYPES[c.type], nullable=True) for c in m.columns],
        *[sa.Column(o, OWNER_TYPE, nullable=True) for o in m.owners],
        # NULL, not JSON's null, for a current version's _raw (the mirror row's).
        sa.Column("_raw", sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql"), nullable=True),
        sa.Column("_scope", sa.String(500), nullable=False),
        sa.Column("_change", sa.String(16), nullable=False),
        sa.Column("_run_id", sa.BigInteger, nullable=True),
        sa.Column("_graph_time", UtcDateTime, nullable=True),
        sa.Column("_learned_at", UtcDateTime, nullable=False),
        sa.Index(mirror.index_name(name, "key"), "tenant_id", "id", "_valid_from"),
        sa.Index(mirror.index_name(name, "valid_to"), "_valid_to", postgresql_where=sa.text("_valid_to IS NOT NULL"),
                 sqlite_where=sa.text("_valid_to IS NOT NULL")),
    )


def test_a_history_table_of_the_first_layout_becomes_the_versions_table(env: SyncEnv) -> None:
    """A database whose history was written when versions were ended in place: `db upgrade` moves them to
    <table>_versions, <table>_history becomes the view, and every version reads as before; new ones follow."""
    a = env.graph.create_user("ada")["id"]
    run(env, "users", at(0))
    assert env.graph.patch(f"users/{a}", json={"displayName": "Ada Lovelace"}).status_code == 204
    run(env, "users", at(1))
    before = versions(env, "users", a)
    assert [v[0] for v in before] == ["created", "updated"]
    subscription = next(s for s in env.spec.subscriptions if s.mirror.table == "users")
    old = _first_layout(subscription.mirror)
    with env.engine.begin() as connection:
        rows = [dict(r._mapping) for r in connection.execute(sa.select(history.build_view(subscription.mirror)))]
        history.drop_triggers(connection, subscription)
        if env.engine.dialect.name == "postgresql":
            connection.exec_driver_sql("DROP FUNCTION users_asof(timestamptz)")
        connection.exec_driver_sql("DROP VIEW users_history")
        connection.exec_driver_sql("DROP TABLE users_versions")
        old.create(connection)
        connection.execute(sa.insert(old), [{c.name: r[c.name] for c in old.columns} for r in rows])
        if env.engine.dialect.name == "postgresql":  # its sequence as it was: past the versions written
            connection.exec_driver_sql("SELECT setval(pg_get_serial_sequence('users_history', '_version'), max(_version)) FROM users_history")
    closed_raw = sql(env, "SELECT _raw FROM users_history WHERE _valid_to IS NOT NULL")
    assert len(closed_raw) == 1 and "Ada" in str(closed_raw[0][0])

    changes = mirror.upgrade(env.spec)
    assert "users_history: its versions moved to users_versions, written once from now on; users_history is a view over it" in changes
    inspector = sa.inspect(env.engine)
    assert "users_history" in inspector.get_view_names() and "users_versions" in inspector.get_table_names()
    assert mirror.index_name("users_history", "valid_from") in {i["name"] for i in inspector.get_indexes("users_versions")}
    assert versions(env, "users", a) == before
    assert sql(env, "SELECT _raw FROM users_history WHERE _valid_to IS NOT NULL") == closed_raw
    # Written by the new triggers from now on: the next change ends the current version.
    assert env.graph.patch(f"users/{a}", json={"displayName": "Ada King"}).status_code == 204
    run(env, "users", at(2))
    after = versions(env, "users", a)
    assert after[:1] == before[:1] and after[1][:3] == ("updated", at(1), at(2)) and after[2][:4] == ("updated", at(2), None, "Ada King")
    raws = sql(env, "SELECT _raw FROM users_history WHERE id = :a AND _valid_to IS NOT NULL ORDER BY _version", a=a)
    assert ["Lovelace" in str(raw) for (raw,) in raws] == [False, True]
