"""History tables (issue 20): a scripted sequence of changes in the emulator, synced at known times, yields exactly
the versions expected, on SQLite and PostgreSQL; the AS OF recipes of docs/history.md answer for every time."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from test_sync_support import SyncEnv, make_env

from syncer import history, mirror
from syncer.errors import SpecErrors
from syncer.graph.times import parse_datetime
from syncer.spec import load_spec
from syncer.worker import sync

HISTORY_SPEC = """
  - name: users
    resource: users
    change_types: [updated, deleted]
    history: {keep: 400d}
    mirror:
      table: users
      columns: [displayName, accountEnabled]
  - name: groups
    resource: groups
    change_types: [updated, deleted]
    history: true
    mirror:
      table: groups
      columns: [displayName]
"""

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[SyncEnv]:
    yield from make_env(tmp_path, emulator_info, database_url, graph, HISTORY_SPEC)


def run(env: SyncEnv, name: str, when: datetime, *, full: bool = False) -> None:
    """One pass of *name* whose clock reads *when* (the time syncer learns what it writes)."""
    result = sync.sync_scope(env.engine, env.client, env.scope(name), worker="w1", clock=lambda: when, full=full)
    assert result.outcome == "ok", result


def versions(env: SyncEnv, table: str, item_id: str) -> list[tuple[Any, ...]]:
    m = next(s.mirror for s in env.spec.subscriptions if s.mirror.table == table)
    with env.engine.connect() as connection:
        rows = history.versions(connection, m, item_id)
    names = [c.name for c in m.columns]
    return [(r["_change"], r["_valid_from"], r["_valid_to"], *(r[n] for n in names)) for r in rows]


def sql(env: SyncEnv, text: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run a recipe of docs/history.md; on SQLite a time ``:t`` is written ``strftime(...)`` as the docs say."""
    if env.engine.dialect.name == "sqlite":
        for name in [k for k, v in params.items() if isinstance(v, datetime)]:
            text = text.replace(f":{name}", f"(strftime('%Y-%m-%d %H:%M:%f', :{name}) || '000')")
    with env.engine.connect() as connection:
        return [tuple(r) for r in connection.execute(sa.text(text), params)]


def test_user_versions_follow_renames_disables_and_deletes(env: SyncEnv) -> None:
    a = env.graph.create_user("ada")["id"]
    b = env.graph.create_user("bob")["id"]
    c = env.graph.create_user("cyd")["id"]
    run(env, "users", at(0))
    assert env.graph.patch(f"users/{a}", json={"displayName": "Ada Lovelace"}).status_code == 204
    run(env, "users", at(1))
    assert env.graph.patch(f"users/{b}", json={"accountEnabled": False}).status_code == 204
    run(env, "users", at(2))
    # Nothing declared changed: a pass with nothing new, a full resync (every item re-sent): no version.
    run(env, "users", at(3))
    run(env, "users", at(4), full=True)
    assert env.graph.delete(f"users/{c}").status_code == 204
    run(env, "users", at(5))

    assert versions(env, "users", a) == [
        ("created", at(0), at(1), "Ada", True),
        ("updated", at(1), None, "Ada Lovelace", True),
    ]
    assert versions(env, "users", b) == [
        ("created", at(0), at(2), "Bob", True),
        ("updated", at(2), None, "Bob", False),
    ]
    assert versions(env, "users", c) == [
        ("created", at(0), at(5), "Cyd", True),
        ("deleted", at(5), None, "Cyd", True),
    ]
    # The AS OF pattern of docs/history.md, at each moment of the sequence.
    asof = (
        "SELECT id, display_name, account_enabled FROM users_history WHERE _valid_from <= :t "
        "AND (_valid_to IS NULL OR _valid_to > :t) AND _change NOT IN ('deleted', 'swept') ORDER BY display_name"
    )
    assert [r[1] for r in sql(env, asof, t=at(0.5))] == ["Ada", "Bob", "Cyd"]
    assert [r[1] for r in sql(env, asof, t=at(1))] == ["Ada Lovelace", "Bob", "Cyd"]
    assert [r[2] for r in sql(env, asof, t=at(2.5))] == [True, False, True]
    assert [r[1] for r in sql(env, asof, t=at(6))] == ["Ada Lovelace", "Bob"]
    assert sql(env, asof, t=at(-1)) == []
    # Changes between two dates, and the users disabled in that time (docs/history.md).
    between = (
        "SELECT id, _change, _valid_from, display_name, account_enabled FROM users_history "
        "WHERE _valid_from >= :since AND _valid_from < :until AND _change <> 'created' ORDER BY _valid_from, _version"
    )
    assert [(r[0], r[1]) for r in sql(env, between, since=at(0.5), until=at(5.5))] == [
        (a, "updated"), (b, "updated"), (c, "deleted"),
    ]
    assert [r[0] for r in sql(env, between, since=at(1.5), until=at(4))] == [b]
    disabled = between.replace("ORDER BY", "AND _change = 'updated' AND account_enabled = false ORDER BY")
    assert [r[0] for r in sql(env, disabled, since=at(0), until=at(6))] == [b]
    # _raw as of a time: a current version's is the mirror row's (the recipe's LEFT JOIN).
    raw_asof = (
        "SELECT h.id, coalesce(h._raw, u._raw) FROM users_history h LEFT JOIN users u ON h._valid_to IS NULL "
        "AND h._raw IS NULL AND u.tenant_id = h.tenant_id AND u.id = h.id WHERE h._valid_from <= :t "
        "AND (h._valid_to IS NULL OR h._valid_to > :t) AND h._change NOT IN ('deleted', 'swept')"
    )
    raws = {i: r if isinstance(r, dict) else json.loads(r) for i, r in sql(env, raw_asof, t=at(0.5))}
    assert raws[a]["displayName"] == "Ada" and raws[c]["displayName"] == "Cyd"
    later = {i: r if isinstance(r, dict) else json.loads(r) for i, r in sql(env, raw_asof, t=at(6))}
    assert {i: r["displayName"] for i, r in later.items()} == {a: "Ada Lovelace", b: "Bob"}
    if env.engine.dialect.name == "postgresql":  # the SQL function db upgrade installs
        assert sql(env, "SELECT display_name FROM users_asof(:t) ORDER BY display_name", t=at(6)) == [
            ("Ada Lovelace",), ("Bob",)
        ]


def test_membership_intervals(env: SyncEnv) -> None:
    users = [env.graph.create_user(n)["id"] for n in ("ann", "ben", "cat")]
    r = env.graph.post("groups", json={"displayName": "Finance", "mailEnabled": False, "mailNickname": "fin",
                                       "securityEnabled": True})
    assert r.status_code == 201, r.text
    gid = r.json()["id"]

    def add(user: str) -> None:
        ref = {"@odata.id": f"{env.graph.graph}/directoryObjects/{user}"}
        assert env.graph.post(f"groups/{gid}/members/$ref", json=ref).status_code == 204

    add(users[0])
    add(users[1])
    run(env, "groups", at(0))
    assert env.graph.delete(f"groups/{gid}/members/{users[0]}/$ref").status_code == 204
    add(users[2])
    run(env, "groups", at(1))
    run(env, "groups", at(2), full=True)  # the same membership again: no interval opened or closed
    add(users[0])
    run(env, "groups", at(3))

    members_on = (
        "SELECT member_id FROM groups_members_history WHERE group_id = :g AND _valid_from <= :t "
        "AND (_valid_to IS NULL OR _valid_to > :t) ORDER BY member_id"
    )
    expected = {
        0.5: {users[0], users[1]},
        1.5: {users[1], users[2]},
        2.5: {users[1], users[2]},
        3.5: set(users),
    }
    for hours, who in expected.items():
        assert {r[0] for r in sql(env, members_on, g=gid, t=at(hours))} == who, hours
        if env.engine.dialect.name == "postgresql":
            asof = "SELECT member_id FROM groups_members_asof(:t) WHERE group_id = :g"
            assert {r[0] for r in sql(env, asof, g=gid, t=at(hours))} == who, hours
    intervals = sql(env, "SELECT member_id, count(*) FROM groups_members_history GROUP BY member_id")
    assert dict(intervals) == {users[0]: 2, users[1]: 1, users[2]: 1}
    assert versions(env, "groups", gid) == [("created", at(0), None, "Finance")]


def test_spec_history_forms(tmp_path: Path) -> None:
    def spec(history_yaml: str) -> Any:
        path = tmp_path / "s.yaml"
        path.write_text(textwrap.dedent(f"""\
            version: 1
            graph: {{cloud: emulator}}
            subscriptions:
              - name: mail
                resource: users/u1/messages
                history: {history_yaml}
                mirror: {{table: mail, columns: [subject]}}
            """))
        return load_spec(path).subscriptions[0].mirror

    assert spec("true").history == mirror_history(None, "lastModifiedDateTime")
    assert spec("false").history is None
    assert spec("{keep: 400d}").history.keep == timedelta(days=400)
    assert "lastModifiedDateTime" in spec("true").select
    with pytest.raises(SpecErrors) as caught:
        spec("{keep: soon}")
    assert "subscriptions[0].history.keep" in str(caught.value) and "s.yaml:6:" in str(caught.value)
    with pytest.raises(SpecErrors) as caught:
        spec("{kept: 4d}")
    assert "subscriptions[0].history" in str(caught.value)


def mirror_history(keep: timedelta | None, field: str | None) -> Any:
    from syncer.spec.model import History

    return History(keep, field)


def test_tables_created(env: SyncEnv) -> None:
    inspector = sa.inspect(env.engine)
    assert {"users_versions", "groups_versions", "groups_members_history"} <= set(inspector.get_table_names())
    assert {"users_history", "groups_history"} <= set(inspector.get_view_names())
    assert mirror  # imported for the upgrade the fixture ran


EVENTS_SPEC = """
  - name: calendar
    resource: users/{{user}}/events
    for_each: {{users: [{user}]}}
    window: {{past: 30d, future: 90d}}
    history: true
    mirror:
      table: events
      columns: [subject, {{field: start, column: starts_at, type: datetime}}]
"""


@pytest.fixture
def calendar(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> Iterator[tuple[SyncEnv, str]]:
    user = graph.create_user("eve")["id"]
    for env in make_env(tmp_path, emulator_info, database_url, graph, EVENTS_SPEC.format(user=user)):
        yield env, user


def set_graph_clock(env: SyncEnv, when: datetime) -> None:
    r = env.graph.admin("POST", "clock", json={"set": when.isoformat().replace("+00:00", "Z"), "freeze": True})
    assert r.status_code == 200, r.text


def test_a_moved_event_takes_graphs_time(calendar: tuple[SyncEnv, str]) -> None:
    env, user = calendar
    now = datetime.now(UTC).replace(microsecond=0)
    start = (now + timedelta(days=10)).replace(hour=10, minute=0, second=0)
    changed = [now + timedelta(minutes=5), now + timedelta(minutes=25)]  # Graph's clock at each change (ahead: tokens stay valid)
    scope = "calendar"
    try:
        set_graph_clock(env, changed[0])
        event = env.graph.post(f"users/{user}/events", json={
            "subject": "Audit", "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {"dateTime": (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        })
        assert event.status_code == 201, event.text
        run(env, scope, now + timedelta(minutes=15))
        set_graph_clock(env, changed[1])
        moved = start + timedelta(days=1)
        r = env.graph.patch(f"users/{user}/events/{event.json()['id']}", json={
            "start": {"dateTime": moved.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
            "end": {"dateTime": (moved + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
        })
        assert r.status_code == 200, r.text
        run(env, scope, now + timedelta(minutes=35))
    finally:
        env.graph.admin("POST", "clock", json={"set": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "freeze": False})
    found = versions(env, "events", event.json()["id"])
    # Graph's lastModifiedDateTime starts each version (requested although not declared), not the pass's time.
    assert found == [
        ("created", changed[0], changed[1], "Audit", start),
        ("updated", changed[1], None, "Audit", moved),
    ]
    with env.engine.connect() as connection:
        learned = connection.execute(sa.text("SELECT _learned_at, _graph_time FROM events_history ORDER BY _version")).all()
    assert len(learned) == 2 and all(g is not None for _l, g in learned)


def test_retention_keeps_current_versions_and_the_cli_prints_a_diff(env: SyncEnv) -> None:
    from click.testing import CliRunner

    from syncer.cli import main
    from syncer.worker.jobs import Retention, Worker
    from syncer.worker.scopes import ScopeIndex

    a = env.graph.create_user("ada")["id"]
    b = env.graph.create_user("bob")["id"]
    run(env, "users", at(0))
    for n, hours in enumerate((1, 2, 3)):
        assert env.graph.patch(f"users/{a}", json={"displayName": f"Ada {n}"}).status_code == 204
        run(env, "users", at(hours))
    out = CliRunner().invoke(main, ["history", "users", a, "--spec", str(env.spec.path)])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[:4] == [
        f"users {a}: 4 versions",
        "2026-03-02T09:00:00.000000Z .. 2026-03-02T10:00:00.000000Z  created, pass 1",
        "    display_name = 'Ada'",
        "    account_enabled = True",
    ]
    assert "  - display_name = 'Ada 1'\n  + display_name = 'Ada 2'\n" in out.output
    assert out.output.rstrip().splitlines()[-3:] == [
        "2026-03-02T12:00:00.000000Z .. now  updated, pass 4",
        "  - display_name = 'Ada 1'",
        "  + display_name = 'Ada 2'",
    ]
    refused = CliRunner().invoke(main, ["history", "groups_members", a, "--spec", str(env.spec.path)])
    assert refused.exit_code != 0 and "tables with history: groups, users" in refused.output

    # keep: 400d. Housekeeping 400 days and 2.5 hours after T0: the versions that ended before T0+2.5h go.
    worker = Worker(env.engine, {}, ScopeIndex.of([]), worker_id="w1", spec=env.spec,
                    clock=lambda: at(2.5) + timedelta(days=400))
    worker.retention = Retention(notifications=None, runs=None)
    old = history.PURGE_BATCH
    history.PURGE_BATCH = 1  # several batches
    try:
        worker.housekeeping()
    finally:
        history.PURGE_BATCH = old
    assert [v[1] for v in versions(env, "users", a)] == [at(2), at(3)]
    assert [v[1] for v in versions(env, "users", b)] == [at(0)]  # current, however old
    # The versions left read their _raw as before; the _raw of those deleted (the next one's _raw_before) went too.
    assert sql(env, "SELECT count(*) FROM users_history WHERE id = :a AND _valid_to IS NOT NULL AND _raw IS NULL", a=a) == [(0,)]
    kept = sql(env, "SELECT _raw_before IS NULL FROM users_versions WHERE id = :a ORDER BY _version", a=a)
    assert [bool(empty) for (empty,) in kept] == [True, False]


def test_a_crash_after_the_mirror_write_leaves_history_and_mirror_equal(env: SyncEnv) -> None:
    a = env.graph.create_user("ada")["id"]
    run(env, "users", at(0))
    assert env.graph.patch(f"users/{a}", json={"displayName": "Ada L"}).status_code == 204
    from syncer.worker import writer

    real = writer.RowWriter.members_delta

    def crash(*args: Any, **kwargs: Any) -> None:  # after the page's rows, before its cursor and commit
        raise RuntimeError("crash")

    writer.RowWriter.members_delta = crash  # type: ignore[method-assign]
    try:
        failed = sync.sync_scope(env.engine, env.client, env.scope("users"), worker="w1", clock=lambda: at(1))
        assert failed.outcome != "ok"  # the pass's transaction rolled back: mirror row and version alike
        # (On PostgreSQL that rollback also undid the writer's CREATE TEMP TABLE; the next pass on the same
        # pooled connection used to fail with UndefinedTable: the run below checks it does not.)
    finally:
        writer.RowWriter.members_delta = real  # type: ignore[method-assign]
    assert versions(env, "users", a) == [("created", at(0), None, "Ada", True)]
    run(env, "users", at(2))
    assert versions(env, "users", a) == [("created", at(0), at(2), "Ada", True), ("updated", at(2), None, "Ada L", True)]
    current = sql(env, "SELECT count(*) FROM users u JOIN users_history h ON h.id = u.id AND h._valid_to IS NULL "
                       "AND h.display_name = u.display_name")
    assert current == [(1,)]


CHANNEL_SPEC = """
  - name: channel-messages
    resource: 'teams/{{team}}/channels/{{channel}}/messages'
    for_each: {{teams: [{team}]}}
    history: true
    mirror:
      table: channel_messages
      columns: [{{field: body.content, column: body_text}}]
"""


def test_a_messages_edit_history(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any) -> None:
    from test_teams_sync import _say, _team

    from syncer.reconcile import graphs_for
    from syncer.worker.scheduler import sync_once

    ada, alan = graph.create_user("ada")["id"], graph.create_user("alan")["id"]
    team = _team(graph, ada, alan)
    general = next(c["id"] for c in graph.get(f"teams/{team}/channels").json()["value"] if c["displayName"] == "General")
    for env in make_env(tmp_path, emulator_info, database_url, graph, CHANNEL_SPEC.format(team=team)):
        graphs = graphs_for(env.spec)

        def sync_all(env: SyncEnv = env, graphs: Any = graphs) -> None:
            results = sync_once(env.spec, ["channel-messages"], clients=graphs, engine=env.engine)
            assert results and all(r.outcome == "ok" for r in results), results

        said = _say(graph, team, general, ada, "<p>budget is 10k</p>")
        sync_all()
        edits = []
        for text in ("<p>budget is 12k</p>", "<p>budget is 12k (approved)</p>"):
            graph.admin("POST", "clock", json={"advance": 60})
            graph._token = None
            r = graph.admin("PATCH", f"teams/{team}/channels/{quote(general, safe='')}/messages/{said['id']}",
                            json={"body": {"contentType": "html", "content": text}})
            assert r.status_code == 200, r.text
            edits.append(r.json().get("lastModifiedDateTime"))
            sync_all()
        sync_all()  # nothing new: no version
        # The recipe of docs/history.md: a message's edit history, oldest first.
        recipe = ("SELECT _valid_from, _change, body_text FROM channel_messages_history "
                  "WHERE id = :id ORDER BY _valid_from, _version")
        found = sql(env, recipe, id=said["id"])
        assert [(c, b) for _t, c, b in found] == [
            ("created", "<p>budget is 10k</p>"),
            ("updated", "<p>budget is 12k</p>"),
            ("updated", "<p>budget is 12k (approved)</p>"),
        ]
        times = [t if isinstance(t, datetime) else datetime.fromisoformat(t).replace(tzinfo=UTC) for t, _c, _b in found]
        # Each edit's version starts at Graph's lastModifiedDateTime of that edit (its clock moved a minute each time).
        assert times[1:] == [parse_datetime(e) for e in edits] and times[2] - times[1] >= timedelta(seconds=60)
        for graph_client in graphs.values():
            graph_client.close()


HARD_SPEC = """
  - name: users
    resource: users
    change_types: [updated, deleted]
    history: true
    mirror:
      table: users
      delete: hard
      columns: [displayName]
"""


def test_a_hard_removal_is_a_version_and_the_row_coming_back_another(
    tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any,
) -> None:
    for env in make_env(tmp_path, emulator_info, database_url, graph, HARD_SPEC):
        a = env.graph.create_user("ada")["id"]
        run(env, "users", at(0))
        before = datetime.now(UTC)
        assert env.graph.delete(f"users/{a}").status_code == 204
        run(env, "users", at(1))
        assert env.rows("users", live=False) == {}
        found = versions(env, "users", a)
        # The removal is recorded at the database's clock (a hard removal leaves no row to carry a time).
        assert [(v[0], v[3]) for v in found] == [("created", "Ada"), ("deleted", "Ada")]
        assert found[0][2] == found[1][1] and found[1][1] >= before - timedelta(seconds=5) and found[1][2] is None
        raw = sql(env, "SELECT _raw FROM users_history WHERE _change = 'deleted'")[0][0]
        assert (raw if isinstance(raw, dict) else json.loads(raw))["displayName"] == "Ada"  # its last state kept
        # Restored (Graph's deleted items): a row history knows enters the mirror again, a version "created".
        assert env.graph.post(f"directory/deletedItems/{a}/restore").status_code == 200
        run(env, "users", datetime.now(UTC) + timedelta(hours=1))
        assert [v[0] for v in versions(env, "users", a)] == ["created", "deleted", "created"]
        assert sql(env, "SELECT count(*) FROM users_history WHERE _valid_to IS NULL") == [(1,)]


def test_a_first_enumeration_inserts_new_rows_and_upserts_those_already_there(env: SyncEnv) -> None:
    """While a scope's rows are new the writer inserts pages as new rows (on SQLite without its upsert, which the
    UPDATE triggers slow down); a page holding a row already there is upserted, and versioned, all the same."""
    from dataclasses import replace

    from syncer.worker.writer import RowWriter, apply_items

    scope = replace(env.scope("users"), key="users:first-enumeration")
    m = scope.mirror
    assert m is not None
    writer = RowWriter(env.engine, scope)
    with env.engine.begin() as connection:
        apply_items(connection, writer, [{"id": "a", "displayName": "A"}, {"id": "b", "displayName": "B"}], now=at(0), run_id=None)
        assert writer.direct is True
        apply_items(connection, writer, [{"id": "c", "displayName": "C"}, {"id": "a", "displayName": "A2"}], now=at(1), run_id=None)
        assert writer.direct is False
    assert [(v[0], v[3]) for v in versions(env, "users", "a")] == [("created", "A"), ("updated", "A2")]
    assert [(v[0], v[3]) for v in versions(env, "users", "c")] == [("created", "C")]
    again = RowWriter(env.engine, scope)
    with env.engine.begin() as connection:
        apply_items(connection, again, [{"id": "b", "displayName": "B2"}], now=at(2), run_id=None)
        assert again.direct is False
    assert [(v[0], v[3]) for v in versions(env, "users", "b")] == [("created", "B"), ("updated", "B2")]
