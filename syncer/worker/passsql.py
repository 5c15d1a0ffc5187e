"""The statements a pass's bookkeeping runs (:class:`~syncer.worker.scopestate.ScopeStore`), built once per process.

Part of :mod:`syncer.worker.scopestate`, which owns these tables and alone runs them; kept apart because
they are a different kind of code: SQLAlchemy statements with bind parameters in place of values. A
tenant's initial mirror is thousands of passes over small scopes, and there building a statement
(``update(...).where(...).values(...)``) and its cache key cost more CPU than running it: about 1 ms per
statement and pass on the bench's machine (bench/tenant.py). A statement built once is compiled once, its
cache key is memoized, and a pass only binds values: the ``k_*`` parameters of the ``WHERE``, and the
columns to write given as execution parameters (SQLAlchemy sets the columns a parameter names).
"""

from __future__ import annotations

import sqlalchemy as sa

from syncer import schema

__all__ = ["ABANDON_RUNS", "END_ROUND", "INSERT_RUN", "MINE", "SCOPE", "TAKE", "TAKE_ASYNC", "UPDATE_RUN"]

_s, _r, _t = schema.sync_state, schema.sync_runs, schema.mirror_tables

_key = (_s.c.tenant_id == sa.bindparam("k_tenant"), _s.c.scope_key == sa.bindparam("k_scope"))

SCOPE = sa.update(_s).where(*_key)
"""The scope's state row (``k_tenant``, ``k_scope``); the columns to write as parameters."""

MINE = sa.update(_s).where(*_key, _s.c.leased_by == sa.bindparam("k_worker"))
"""... while worker ``k_worker`` holds its lease (renewals, releases)."""

TAKE = (
    sa.update(_s)
    .where(
        *_key,
        # Free for k_worker: nobody holds it, the lease expired, or it is k_worker's own (its killed predecessor's).
        sa.or_(
            _s.c.leased_by.is_(None), _s.c.lease_until.is_(None), _s.c.lease_until < sa.bindparam("k_now"),
            _s.c.leased_by == sa.bindparam("k_worker"),
        ),
    )
    .returning(
        *_s.c,
        # What db upgrade recorded of the mirror table's columns (k_table; NULL for none).
        sa.select(_t.c.columns).where(_t.c.table_name == sa.bindparam("k_table")).scalar_subquery().label("layout"),
        # Whether a run of the scope is still "running": its worker died.
        sa.exists()
        .where(_r.c.tenant_id == sa.bindparam("k_tenant"), _r.c.scope_key == sa.bindparam("k_scope"), _r.c.outcome == "running")
        .label("open_run"),
    )
)
"""Take the lease (``k_now``, ``k_worker``, ``k_table``; set ``leased_by``, ``lease_until``, ``updated_at``) and
read the state row with the table's recorded layout and whether a run is open, in one round trip."""

TAKE_ASYNC = TAKE.returning(sa.func.set_config("synchronous_commit", "off", True).label("async_commit"))
"""PostgreSQL: :data:`TAKE`, whose transaction's commit, once a row is leased, does not wait for its WAL flush
(``SET LOCAL synchronous_commit = off`` without a round trip of its own: ``set_config`` with ``is_local``,
https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADMIN-SET)."""

END_ROUND = MINE.values(
    dirty_since=sa.case((_s.c.dirty_since <= sa.bindparam("k_started", type_=schema.UtcDateTime), None), else_=_s.c.dirty_since)
)
"""A release after a pass that succeeded: the scope stays dirty only if marked after the pass started (``k_started``)."""

INSERT_RUN = sa.insert(_r)

UPDATE_RUN = sa.update(_r).where(_r.c.id == sa.bindparam("k_run"))

ABANDON_RUNS = sa.update(_r).where(
    _r.c.tenant_id == sa.bindparam("k_tenant"), _r.c.scope_key == sa.bindparam("k_scope"), _r.c.outcome == "running"
)
