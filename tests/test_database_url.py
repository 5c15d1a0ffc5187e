"""Database URLs as users write them: ``postgres://`` (libpq, Heroku) is PostgreSQL too."""

from __future__ import annotations

import sqlalchemy as sa
from click.testing import CliRunner
from test_replay import SPEC

from syncer import database, schema
from syncer.cli import main


def test_postgres_scheme_is_an_alias_of_postgresql(postgres_url: str) -> None:
    url = sa.make_url(postgres_url)
    written = url.set(drivername="postgres").render_as_string(hide_password=False)
    assert written.startswith("postgres://")
    assert database.normalize_url(written).startswith("postgresql+psycopg://")
    assert database.normalize_url("postgres+psycopg://u@h/db").startswith("postgresql+psycopg://")
    # As a user gives it: `syncer db upgrade` with SYNCER_DATABASE_URL=postgres://... creates the tables.
    result = CliRunner().invoke(main, ["db", "upgrade", "--spec", str(SPEC)], env={"SYNCER_DATABASE_URL": written})
    assert result.exit_code == 0, result.output
    engine = database.create_engine(written)
    try:
        assert schema.inbox.name in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
