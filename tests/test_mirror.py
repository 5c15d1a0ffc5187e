"""Mirror tables derived from the spec: creation, in-place column adds, refused changes, rebuild."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from syncer import database, mirror, schema
from syncer.cli import main
from syncer.errors import SchemaChangeRefused
from syncer.migrate import upgrade_core
from syncer.spec import Spec, parse_spec

BASE = """
version: 1
graph: {{cloud: emulator}}
database: {{url: "{url}"}}
subscriptions:
  - name: users
    resource: users
    change_types: [updated, deleted]
    mirror:
      table: people
      columns:
{columns}
  - name: groups
    resource: groups
    mirror:
      table: teams
      columns: [displayName]
"""


def make_spec(tmp_path: Path, url: str, columns: list[str]) -> Spec:
    text = BASE.format(url=url, columns="\n".join(f"        - {c}" for c in columns))
    return parse_spec(text, path=tmp_path / "subscriptions.yaml", environ={})


def columns_of(engine: sa.Engine, table: str) -> dict[str, str]:
    return {c["name"]: type(c["type"]).__name__ for c in sa.inspect(engine).get_columns(table)}


@pytest.fixture
def engine(database_url: str) -> sa.Engine:
    upgrade_core(database_url)
    engine = database.create_engine(database_url)
    yield engine  # type: ignore[misc]
    engine.dispose()


def test_creates_mirror_and_members_tables(tmp_path: Path, database_url: str, engine: sa.Engine) -> None:
    spec = make_spec(
        tmp_path,
        database_url,
        ["displayName", "accountEnabled", "{field: createdDateTime, column: created_at, type: datetime}"],
    )
    changes = mirror.upgrade(spec, engine=engine)
    assert changes == [
        "created table people (3 declared columns)",
        "created table teams (1 declared columns)",
    ]
    people = columns_of(engine, "people")
    assert {
        "tenant_id",
        "id",
        "display_name",
        "account_enabled",
        "created_at",
        "_raw",
        "_scope",
        "_deleted_at",
        "_removed_reason",
        "_synced_at",
        "_sync_run_id",
    } <= set(people)
    assert "teams_members" in sa.inspect(engine).get_table_names()
    # A second run changes nothing.
    assert mirror.upgrade(spec, engine=engine) == []


def test_adding_a_field_adds_a_column_keeps_rows_and_fills_it_from_raw(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    spec = make_spec(tmp_path, database_url, ["displayName"])
    mirror.upgrade(spec, engine=engine)
    people = mirror.build_table(spec.subscription("users").mirror)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(people),
            [
                {
                    "tenant_id": "t",
                    "id": "u1",
                    "display_name": "Ada",
                    "_raw": {"id": "u1", "displayName": "Ada", "jobTitle": "Engineer"},
                    "_scope": "users",
                    "_synced_at": now,
                },
                {
                    "tenant_id": "t",
                    "id": "u2",
                    "display_name": "Alan",
                    "_raw": {"id": "u2", "displayName": "Alan"},
                    "_scope": "users",
                    "_synced_at": now,
                },
            ],
        )
        connection.execute(
            sa.insert(schema.sync_state).values(
                tenant_id="t",
                scope_key="users",
                name="users",
                table_name="people",
                delta_link="https://graph/v1.0/users/delta?$deltatoken=abc",
                resync_requested=False,
                updated_at=now,
            )
        )

    wider = make_spec(tmp_path, database_url, ["displayName", "jobTitle"])
    changes = mirror.upgrade(wider, engine=engine)
    assert changes == [
        "added column people.job_title (text, from jobTitle): filled from _raw for 1 of 2 rows",
        "1 rows of people wait for a full pass of 'users' (the new fields were never fetched for them): resync "
        "requested for its 1 scope(s), the worker runs it next; or now: `syncer sync users --full`",
    ]
    with engine.connect() as connection:
        rows = dict(connection.execute(sa.text("SELECT id, job_title FROM people ORDER BY id")).all())
        state = connection.execute(
            sa.select(schema.sync_state.c.delta_link, schema.sync_state.c.resync_requested)
        ).one()
    assert rows == {"u1": "Engineer", "u2": None}
    # The new property must come from Graph for every item: the scope starts over.
    assert state == (None, True)


def test_removing_a_field_keeps_the_column(tmp_path: Path, database_url: str, engine: sa.Engine) -> None:
    mirror.upgrade(make_spec(tmp_path, database_url, ["displayName", "jobTitle"]), engine=engine)
    changes = mirror.upgrade(make_spec(tmp_path, database_url, ["displayName"]), engine=engine)
    assert changes == ["column people.job_title is no longer declared; kept with its data"]
    assert "job_title" in columns_of(engine, "people")


def test_type_change_is_refused_unless_rebuild(tmp_path: Path, database_url: str, engine: sa.Engine) -> None:
    mirror.upgrade(make_spec(tmp_path, database_url, ["displayName"]), engine=engine)
    changed = make_spec(tmp_path, database_url, ["{field: displayName, type: json}"])
    with pytest.raises(SchemaChangeRefused) as info:
        mirror.upgrade(changed, engine=engine)
    message = str(info.value)
    assert (
        "people" in message
        and "display_name changes type from text to json" in message
        and "--rebuild" in message
    )
    assert mirror.upgrade(changed, rebuild=True, engine=engine) == [
        "rebuilt table people: column display_name changes type from text to json"
    ]
    assert mirror.upgrade(changed, engine=engine) == []


def test_a_table_syncer_did_not_create_is_refused(
    tmp_path: Path, database_url: str, engine: sa.Engine
) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE people (x INTEGER)"))
    with pytest.raises(SchemaChangeRefused, match="already exists and was not created by syncer"):
        mirror.upgrade(make_spec(tmp_path, database_url, ["displayName"]), engine=engine)


def test_cli_db_upgrade_on_sqlite(tmp_path: Path) -> None:
    spec_path = tmp_path / "subscriptions.yaml"
    spec_path.write_text(BASE.format(url="sqlite:///mirror.db", columns="        - displayName"))
    runner = CliRunner()
    result = runner.invoke(main, ["db", "upgrade", "--spec", str(spec_path)])
    assert result.exit_code == 0, result.output
    assert "created table people" in result.output
    # The SQLite file is next to the spec, whatever the working directory.
    assert (tmp_path / "mirror.db").exists()
    again = runner.invoke(main, ["db", "upgrade", "--spec", str(spec_path)])
    assert again.exit_code == 0 and "created" not in again.output


def test_cli_validate_reports_errors_with_location(tmp_path: Path) -> None:
    spec_path = tmp_path / "subscriptions.yaml"
    spec_path.write_text(
        BASE.format(url="sqlite:///m.db", columns="        - {field: displayName, type: texty}")
    )
    result = CliRunner().invoke(main, ["validate", "--spec", str(spec_path)])
    assert result.exit_code == 1
    assert f"{spec_path}:12:" in result.output and "columns[0].type" in result.output


@pytest.mark.parametrize(
    "value, type_name, expected",
    [
        ("2026-03-20T11:00:00.1234567Z", "datetime", datetime(2026, 3, 20, 11, 0, 0, 123456, tzinfo=UTC)),
        (
            {"dateTime": "2026-03-20T11:00:00.0000000", "timeZone": "UTC"},
            "datetime",
            datetime(2026, 3, 20, 11, tzinfo=UTC),
        ),
        ("not a date", "datetime", None),
        (True, "boolean", True),
        ("true", "boolean", None),
        ("42", "integer", 42),
        (True, "integer", None),
        (1.5, "float", 1.5),
        (["a", "b"], "text", '["a","b"]'),
        ({"a": 1}, "json", {"a": 1}),
        (None, "text", None),
    ],
)
def test_convert(value: object, type_name: str, expected: object) -> None:
    assert mirror.convert(value, type_name) == expected


def test_extract_dotted_fields() -> None:
    item = {"from": {"emailAddress": {"address": "a@b.c"}}, "x": None}
    assert mirror.extract(item, "from.emailAddress.address") == "a@b.c"
    assert mirror.extract(item, "x.y") is None
    assert mirror.extract(item, "missing") is None


@pytest.mark.postgres
def test_raw_is_jsonb_on_postgres_and_an_old_json_column_is_converted(tmp_path: Path, postgres_url: str) -> None:
    # Issue 18 item 9: new mirror tables get jsonb; `db upgrade` converts a table created with json, keeping rows.
    upgrade_core(postgres_url)
    engine = database.create_engine(postgres_url)
    try:
        spec = make_spec(tmp_path, postgres_url, ["displayName"])
        mirror.upgrade(spec, engine=engine)
        raw_type = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("people")}["_raw"]
        assert type(raw_type).__name__ == "JSONB"
        with engine.begin() as connection:  # the table as syncer created it before
            connection.execute(sa.text("ALTER TABLE people ALTER COLUMN _raw TYPE json USING _raw::json"))
            connection.execute(sa.text(
                "INSERT INTO people (tenant_id, id, display_name, _raw, _scope, _synced_at) "
                """VALUES ('t', 'u1', 'Ada', '{"id": "u1", "displayName": "Ada"}', 'users', now())"""
            ))
        assert mirror.upgrade(spec, engine=engine) == ["converted people._raw from json to jsonb (the table was rewritten, values kept)"]
        assert mirror.upgrade(spec, engine=engine) == []
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT _raw ->> 'displayName' FROM people")).scalar_one() == "Ada"
            assert connection.execute(sa.text("SELECT pg_typeof(_raw)::text FROM people")).scalar_one() == "jsonb"
    finally:
        engine.dispose()
