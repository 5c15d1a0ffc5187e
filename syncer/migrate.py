"""Run alembic on syncer's core tables, without an alembic.ini.

The migration scripts live in the top-level ``migrations/`` folder of the repository, which the
package ships as ``syncer.migrations`` (see pyproject.toml), so an installed syncer can upgrade a
database on its own.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from syncer.database import create_engine, is_sqlite, unbounded
from syncer.errors import DatabaseError

# A fixed key for pg_advisory_lock: two processes upgrading one database at once would race on DDL.
_PG_MIGRATION_LOCK = 0x5359_4E43_0001


def script_location() -> Path:
    """Where the migration scripts are."""
    return Path(str(resources.files("syncer.migrations")))


def alembic_config(url: str) -> Config:
    """An alembic Config for *url*, pointing at syncer's migrations."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_core(url: str, revision: str = "head") -> None:
    """Bring syncer's core tables in *url* up to *revision*."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection, unbounded(connection):  # a migration may take minutes
            if not is_sqlite(engine):
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except sa.exc.OperationalError as error:
        raise DatabaseError(f"cannot upgrade the database at {engine.url!r}: {error.orig}") from error
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The alembic revision the database at *url* is at (None: never migrated)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    """The newest revision shipped with this syncer."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
