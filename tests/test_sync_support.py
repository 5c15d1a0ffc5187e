"""Shared setup for the sync tests: a spec pointing at the test's emulator, a migrated database, the truth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from syncer import database, mirror, schema
from syncer.graph.client import GraphClient
from syncer.graph.retry import RetryPolicy
from syncer.migrate import upgrade_core
from syncer.spec import Spec, load_spec
from syncer.worker import scopes
from syncer.worker.scopes import FETCH, Scope, Strategy

USERS_SPEC = """
  - name: users
    resource: users
    change_types: [updated, deleted]
    mirror:
      table: users
      delete: {delete}
      columns:
        - displayName
        - mail
        - accountEnabled
        - {{field: createdDateTime, column: created_at, type: datetime}}
"""


@dataclass
class SyncEnv:
    """Everything a sync test needs, bound to one emulator and one database."""

    spec: Spec
    engine: Engine
    client: GraphClient
    graph: Any  # tests.emulator_fixtures.EmulatorClient

    def scope(self, name: str = "users") -> Scope:
        found = scopes.declared_scopes(self.spec, clients={t.name: self.client for t in self.spec.tenants}, names=[name])
        assert found, name
        return found[0]

    @property
    def tenant_id(self) -> str:
        return self.spec.tenants[0].tenant_id

    def rows(self, table: str, *, live: bool = True) -> dict[str, dict[str, Any]]:
        """Mirror rows by id (live only by default), with _raw parsed."""
        t = sa.table(table, sa.column("id"), sa.column("_raw"), sa.column("_deleted_at"), sa.column("_removed_reason"))
        query = sa.select(t.c.id, t.c._raw, t.c._deleted_at, t.c._removed_reason)
        if live:
            query = query.where(t.c._deleted_at.is_(None))
        with self.engine.connect() as connection:
            out = {}
            for row in connection.execute(query):
                raw = row._raw if isinstance(row._raw, dict) else orjson.loads(row._raw)
                out[row.id] = {"raw": raw, "deleted_at": row._deleted_at, "reason": row._removed_reason}
        return out

    def truth(self, path: str) -> dict[str, dict[str, Any]]:
        """What Graph has now, by a fresh full delta (the emulator's truth)."""
        items, _link = self.graph.delta_all(path)
        return {i["id"]: i for i in items if "@removed" not in i}

    def fetch_scope(self) -> Scope:
        """The users declaration synced as a resource without delta: a list, and GETs by id."""
        strategy = Strategy("user-by-id", FETCH, "users", item_path="{resource}")
        return Scope(
            tenant_id=self.tenant_id, key="users", name="users", parent_key="users", table="users", strategy=strategy,
            initial_url="users?$select=id,displayName,mail,accountEnabled,createdDateTime", mirror=self.scope().mirror,
        )

    def state(self, key: str = "users") -> Any:
        s = schema.sync_state
        with self.engine.connect() as connection:
            return connection.execute(sa.select(s).where(s.c.scope_key == key)).one()

    def runs(self) -> list[Any]:
        r = schema.sync_runs
        with self.engine.connect() as connection:
            return list(connection.execute(sa.select(r).order_by(r.c.id)).all())


def write_spec(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, subscriptions: str) -> Spec:
    """A subscriptions.yaml for the test's emulator and database, loaded and resolved."""
    info = tmp_path / "emulator.json"
    info.write_text(json.dumps(emulator_info))
    path = tmp_path / "subscriptions.yaml"
    path.write_text(
        f"version: 1\ngraph: {{cloud: emulator, emulator_info: {info}}}\n"
        f"database: {{url: '{database_url}'}}\nsubscriptions:\n{subscriptions}"
    )
    return load_spec(path).resolve_emulator()


def make_env(tmp_path: Path, emulator_info: dict[str, Any], database_url: str, graph: Any, subscriptions: str) -> Iterator[SyncEnv]:
    spec = write_spec(tmp_path, emulator_info, database_url, subscriptions)
    upgrade_core(spec.database_url)
    mirror.upgrade(spec)
    engine = database.create_engine(spec.database_url)
    client = GraphClient.from_spec(spec, spec.tenants[0].name, retry=RetryPolicy(max_retry_after=2.0, max_elapsed=20.0, backoff_base=0.05))
    try:
        yield SyncEnv(spec, engine, client, graph)
    finally:
        client.close()
        engine.dispose()


class Clock:
    """A settable clock for leases (real time plus an offset)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta
