"""alembic: `upgrade head` works on both databases and the models have no drift from the migrations."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from syncer import database, schema
from syncer.migrate import alembic_config, current_revision, head_revision, upgrade_core


def test_upgrade_head_creates_every_core_table(database_url: str) -> None:
    assert current_revision(database_url) is None
    upgrade_core(database_url)
    assert current_revision(database_url) == head_revision()
    engine = database.create_engine(database_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(schema.metadata.tables) <= tables


def test_upgrade_is_idempotent(database_url: str) -> None:
    upgrade_core(database_url)
    upgrade_core(database_url)
    assert current_revision(database_url) == head_revision()


def test_autogenerate_finds_no_drift(database_url: str) -> None:
    upgrade_core(database_url)
    engine = database.create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"compare_type": True, "include_object": _only_core},
            )
            diff = compare_metadata(context, schema.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ; write a migration: {diff}"


def test_alembic_check_command_passes(database_url: str) -> None:
    upgrade_core(database_url)
    # `alembic check` through our programmatic config: the same wiring `env.py` uses.
    command.check(alembic_config(database_url))


def test_downgrade_to_base_and_back(sqlite_url: str) -> None:
    upgrade_core(sqlite_url)
    command.downgrade(alembic_config(sqlite_url), "base")
    assert current_revision(sqlite_url) is None
    upgrade_core(sqlite_url)
    assert current_revision(sqlite_url) == head_revision()


def _only_core(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    if type_ == "table":
        return name in schema.metadata.tables
    table = getattr(obj, "table", None)
    return table is None or table.name in schema.metadata.tables


def test_a_new_sqlite_database_and_its_wal_files_are_owner_only(tmp_path: Path) -> None:
    """The database holds the mirror and the subscriptions' clientState secrets: 0600, whatever the umask
    (SQLite itself would create it 0644 under the usual 022)."""
    path = tmp_path / "syncer.db"
    previous = os.umask(0o022)
    try:
        upgrade_core(f"sqlite:///{path}")
        engine = database.create_engine(f"sqlite:///{path}")
        with engine.connect() as connection:  # WAL mode: the -wal and -shm files exist while connected
            connection.execute(sa.select(schema.inbox.c.id)).all()
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        engine.dispose()
    finally:
        os.umask(previous)
    assert modes == {"syncer.db": 0o600, "syncer.db-wal": 0o600, "syncer.db-shm": 0o600}


def test_an_existing_sqlite_database_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    upgrade_core(f"sqlite:///{path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_sync_runs_full_is_renamed_full_round_keeping_the_values(database_url: str) -> None:
    # Issue 18 item 9: "full" is reserved in PostgreSQL; 0008 renames it and keeps each pass's record.
    upgrade_core(database_url, "0007")
    engine = database.create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(
                'INSERT INTO syncer_sync_runs (tenant_id, scope_key, started_at, "full", pages, upserted, deleted, outcome)'
                " VALUES ('t', 'users', CURRENT_TIMESTAMP, :f, 1, 2, 0, 'ok')"
            ), [{"f": True}, {"f": False}])
        upgrade_core(database_url)
        with engine.connect() as connection:
            values = connection.execute(sa.text("SELECT full_round FROM syncer_sync_runs ORDER BY id")).scalars().all()
        columns = {c["name"] for c in sa.inspect(engine).get_columns("syncer_sync_runs")}
    finally:
        engine.dispose()
    assert [bool(v) for v in values] == [True, False]
    assert "full_round" in columns and "full" not in columns
