"""Fixtures shared by the whole suite: databases (SQLite always, PostgreSQL when configured).

PostgreSQL tests need ``SYNCER_TEST_DATABASE_URL`` (CI sets it, see .ci/run), for example::

    SYNCER_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test

Each test gets its own PostgreSQL schema, dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncer.database import normalize_url

pytest_plugins = [
    name
    for name in ("emulator_fixtures", "graph_fixtures")
    # The emulator's fixtures live beside this file; tolerate their absence while it is being built.
    if (Path(__file__).parent / f"{name}.py").exists()
]

PG_ENV = "SYNCER_TEST_DATABASE_URL"
PG_SKIP = f"PostgreSQL tests need {PG_ENV}, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_base_url() -> str | None:
    """The configured PostgreSQL URL, or None."""
    url = os.environ.get(PG_ENV)
    return normalize_url(url) if url else None


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file."""
    return f"sqlite:///{tmp_path / 'syncer.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema of its own."""
    base = postgres_base_url()
    if base is None:
        if os.environ.get("SYNCER_REQUIRE_POSTGRES"):
            pytest.fail(f"SYNCER_REQUIRE_POSTGRES is set but {PG_ENV} is not")
        pytest.skip(PG_SKIP)
    schema_name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema_name}"'))
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema_name}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema_name}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(autouse=True)
def _fresh_tenant_budgets() -> None:
    """Each test starts with full, unpaused tenant budgets (a 429 of one test must not slow the next)."""
    from syncer.graph import limits

    limits.reset_budgets()
