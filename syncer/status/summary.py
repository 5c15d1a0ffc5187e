"""The per-declaration summary of ``syncer status`` as aggregate SQL: its cost is the database's, not a Python
object per scope.

:func:`syncer.status.collect.collect` reads every scope into a :class:`~syncer.status.collect.ScopeStatus` for the
details; the summary (what ``syncer status`` prints without arguments, every minute in some deployments) only needs
counts per declaration, which one grouped query over the scopes computes with the same rules (freshness and health,
see :mod:`syncer.status.collect`). Measured by bench/tenant.py's part 3 at 3,000 and 30,000 scopes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncer import schema

__all__ = ["declaration_counts"]


def _later(a: sa.ColumnElement[Any], b: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """The later of two nullable times, null only when both are (SQLite's max(a, b) is null if either is)."""
    return sa.case((b.is_(None), a), (a.is_(None), b), (a >= b, a), else_=b)


def declaration_counts(
    connection: Connection, *, now: datetime, allowed: Mapping[str, timedelta], default: timedelta,
    count_rows: bool, tables: set[str],
) -> dict[str, dict[str, Any]]:
    """name -> ``scopes, healthy, stale, failing, new, rows, oldest_fresh_as_of, table`` of the declarations
    the database holds scopes of. *allowed*: each declaration's allowance (else *default*); *tables*: those that
    exist (rows of a declaration whose table is missing are None)."""
    s, r = schema.sync_state, schema.sync_runs
    # The finish of the scope's last run that succeeded (a fetch by id leaves last_success_at alone): one probe of
    # the (tenant_id, scope_key, started_at) index per scope, as collect() does.
    last_ok = (
        sa.select(r.c.finished_at)
        .where(r.c.tenant_id == s.c.tenant_id, r.c.scope_key == s.c.scope_key, r.c.outcome == "ok")
        .order_by(r.c.started_at.desc(), r.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    # OFFSET 0 keeps the planners from pulling the subquery up into the aggregate (PostgreSQL and SQLite both would),
    # which would copy the probe into each of the expressions below that read it: ~8 probes per scope, not one.
    per_scope = sa.select(
        s.c.name, s.c.table_name, s.c.last_error, s.c.dirty_since, s.c.last_success_at,
        sa.type_coerce(last_ok, schema.UtcDateTime).label("last_ok"),
    ).offset(0).subquery()
    synced = sa.type_coerce(_later(per_scope.c.last_success_at, per_scope.c.last_ok), schema.UtcDateTime)
    # A notified change still waiting caps freshness at its arrival.
    fresh = sa.type_coerce(
        sa.case((sa.and_(per_scope.c.dirty_since.is_not(None), synced > per_scope.c.dirty_since),
                 per_scope.c.dirty_since), else_=synced),
        schema.UtcDateTime,
    )
    cutoff = sa.case(
        {name: sa.literal(now - a, schema.UtcDateTime) for name, a in allowed.items()},
        value=per_scope.c.name, else_=sa.literal(now - default, schema.UtcDateTime),
    ) if allowed else sa.literal(now - default, schema.UtcDateTime)
    failing = sa.and_(per_scope.c.last_error.is_not(None), per_scope.c.last_error != "")
    new = sa.and_(sa.not_(failing), fresh.is_(None))
    stale = sa.and_(sa.not_(failing), fresh.is_not(None), fresh < cutoff)

    def count(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        return sa.func.sum(sa.case((condition, 1), else_=0))

    query = sa.select(
        per_scope.c.name,
        sa.func.min(per_scope.c.table_name).label("table"),
        sa.func.count().label("scopes"),
        count(failing).label("failing"),
        count(new).label("new"),
        count(stale).label("stale"),
        count(fresh.is_(None)).label("never"),
        sa.type_coerce(sa.func.min(fresh), schema.UtcDateTime).label("oldest"),
    ).group_by(per_scope.c.name)
    found: dict[str, dict[str, Any]] = {}
    for row in connection.execute(query):
        scopes, failing_n, new_n, stale_n = int(row.scopes), int(row.failing or 0), int(row.new or 0), int(row.stale or 0)
        found[row.name] = {
            "table": row.table, "scopes": scopes, "failing": failing_n, "new": new_n, "stale": stale_n,
            "healthy": scopes - failing_n - new_n - stale_n,
            "oldest_fresh_as_of": None if row.never else row.oldest,
            # (A missing table counts 0, as collect() sums its scopes' rows.)
            "rows": (_live_rows(connection, row.name, row.table) if row.table in tables else 0) if count_rows else None,
        }
    return found


def _live_rows(connection: Connection, name: str, table_name: str) -> int:
    """Live rows of *table_name* that belong to a scope of declaration *name* (as collect() sums them)."""
    s = schema.sync_state
    t = sa.table(table_name, sa.column("tenant_id"), sa.column("_scope"), sa.column("_deleted_at"))
    return int(connection.execute(
        sa.select(sa.func.count()).select_from(t)
        .join(s, sa.and_(s.c.tenant_id == t.c.tenant_id, s.c.scope_key == t.c._scope))
        .where(s.c.name == name, t.c._deleted_at.is_(None))
    ).scalar_one())
