"""History tables: every version of each mirror row, for "what was true then" (``history:`` in the spec).

``<table>_history`` is a view with one row per version of a mirror row::

    _version                 surrogate key, in the order versions were written
    tenant_id, id            the mirror row's key
    _valid_from, _valid_to   half-open interval in UTC; _valid_to NULL for the current version
    <declared columns>       as in the mirror, then the owner columns
    _raw                     the item as Graph last sent it while the version was current; NULL on the
                             current version of a row still in the mirror, whose own _raw it is (not
                             written twice: the initial mirror's speed; ``<table>_asof`` fills it in)
    _scope                   the scope whose write made the version
    _change                  created, updated, deleted, swept (a full pass did not see it)
    _run_id                  the pass that wrote it (``syncer_sync_runs``); NULL for a write outside a pass
    _graph_time              Graph's own time of the change (lastModifiedDateTime) where the item has one
    _learned_at              when syncer wrote it

over the table ``<table>_versions``, where each version is written once and never updated when the next one
starts: that one's start is its ``_valid_to``, and that one's ``_raw_before`` (the mirror row's ``_raw`` it
replaced) its ``_raw`` (a version's own ``_raw`` is set only where no mirror row holds it: a row removed from
the mirror, a table about to be rebuilt). Ending a version in place cost more than writing the next one.

``_valid_from`` is Graph's time where the item carries one, else the time syncer learned the change:
Graph's time says when the change happened, which is what "as of" asks; syncer learns it up to a sync
interval later. A version never starts before the one it follows (clocks disagree).

Group membership gets ``<table>_members_history``: one row per membership interval.

The rows are written in the transaction that writes the mirror row: by triggers in the very statement,
except the rows SQLite's writer adds, versioned by its statements right after its upsert
(:mod:`syncer.history_triggers`, what both databases share; :mod:`syncer.history_postgres`,
:mod:`syncer.history_sqlite`). This module owns the history tables and the view: created and altered by
``syncer db upgrade``, purged by the worker's housekeeping, read by ``syncer history``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from syncer import history_postgres, history_sqlite, history_triggers, mirror, schema
from syncer.history_triggers import VERSIONS
from syncer.mirror_owners import OWNER_TYPE

if TYPE_CHECKING:
    from syncer.spec import Mirror, Spec, Subscription

log = logging.getLogger(__name__)

PURGE_BATCH = 5000
"""Versions deleted per transaction by :func:`purge`: short transactions beside a busy worker."""


def build_table(m: Mirror, metadata: sa.MetaData | None = None) -> sa.Table:
    """``<table>_versions`` for mirror *m* (not created): the versions as written, each once."""
    metadata = metadata if metadata is not None else sa.MetaData()
    logical = f"{m.table}_history"  # indexes keep the names they had when this was the history table
    return sa.Table(
        f"{m.table}{VERSIONS}",
        metadata,
        # INTEGER on SQLite: the rowid itself (the key index ends with it, so a row's versions are read in order).
        sa.Column("_version", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(512), nullable=False),
        sa.Column("_valid_from", schema.UtcDateTime, nullable=False),
        *[sa.Column(c.name, mirror.SQL_TYPES[c.type], nullable=True) for c in m.columns],
        *[sa.Column(o, OWNER_TYPE, nullable=True) for o in m.owners],
        sa.Column("_raw", mirror.RAW_TYPE, nullable=True),
        sa.Column("_raw_before", mirror.RAW_TYPE, nullable=True),
        sa.Column("_scope", sa.String(500), nullable=False),
        sa.Column("_change", sa.String(16), nullable=False),
        sa.Column("_run_id", sa.BigInteger, nullable=True),
        sa.Column("_graph_time", schema.UtcDateTime, nullable=True),
        sa.Column("_learned_at", schema.UtcDateTime, nullable=False),
        sa.Index(mirror.index_name(logical, "key"), "tenant_id", "id", "_valid_from"),
        *_retention_index(m, logical, "_valid_from"),
    )


def build_view(m: Mirror, metadata: sa.MetaData | None = None) -> sa.Table:
    """``<table>_history``, the view (:func:`_view_sql`), as a table to read from (never created as one)."""
    metadata = metadata if metadata is not None else sa.MetaData()
    base = build_table(m)
    columns: list[sa.Column[Any]] = []
    for column in base.columns:
        if column.name == "_raw_before":
            continue
        columns.append(sa.Column(column.name, column.type, primary_key=column.name == "_version"))
        if column.name == "_valid_from":
            columns.append(sa.Column("_valid_to", schema.UtcDateTime))
    return sa.Table(f"{m.table}_history", metadata, *columns)


def _view_sql(connection: sa.Connection, m: Mirror) -> str:
    """``CREATE VIEW <table>_history``: each version with its end (the next version's start) and its ``_raw`` (its
    own, else the one the next version ended), over the columns ``<table>_versions`` has (in their order).

    A query naming a row's key (``syncer history``, a recipe for one item) reads that row's versions alone on
    both databases. Over a whole table, PostgreSQL reads the next version with a window function (0.23 s at
    100,000 versions against 0.36 s looking each one up), SQLite looks each one up (0.15 s against 0.48 s)."""
    q = connection.dialect.identifier_preparer.quote
    h, b = q(f"{m.table}_history"), q(f"{m.table}{VERSIONS}")
    postgres = connection.dialect.name == "postgresql"
    after = ("lead(v._valid_from) OVER w", "lead(v._raw_before) OVER w") if postgres else ("n._valid_from", "n._raw_before")
    select = []
    for name in (c["name"] for c in sa.inspect(connection).get_columns(f"{m.table}{VERSIONS}")):
        if name == "_raw_before":
            continue
        select.append(f"coalesce(v._raw, {after[1]}) AS _raw" if name == "_raw" else f"v.{q(name)}")
        if name == "_valid_from":
            select.append(f"{after[0]} AS _valid_to")
    if postgres:
        # Versions start in order: ordered by their start, the key index can give a row's versions in order.
        return (
            f"CREATE VIEW {h} AS SELECT {', '.join(select)} FROM {b} v "
            "WINDOW w AS (PARTITION BY v.tenant_id, v.id ORDER BY v._valid_from, v._version)"
        )
    return (
        f"CREATE VIEW {h} AS SELECT {', '.join(select)} FROM {b} v LEFT JOIN {b} n ON n._version = "
        f"(SELECT min(x._version) FROM {b} x WHERE x.tenant_id = v.tenant_id AND x.id = v.id AND x._version > v._version)"
    )


_ENDED = sa.text("_valid_to IS NOT NULL")


def _retention_index(m: Mirror, name: str, column: str) -> list[sa.Index]:
    """Retention's lookup, only where there is retention (``keep``): an index on the versions' start (a version
    ended before the cutoff started before it), on the intervals' end (the open ones, NULL, left out); a table
    kept forever would maintain it for nothing."""
    if m.history is None or m.history.keep is None:
        return []
    where = _ENDED if column == "_valid_to" else None
    return [sa.Index(mirror.index_name(name, column.strip("_")), column, postgresql_where=where, sqlite_where=where)]


def build_members_table(m: Mirror, metadata: sa.MetaData | None = None) -> sa.Table:
    """``<table>_members_history``: one row per interval a member was in a group."""
    metadata = metadata if metadata is not None else sa.MetaData()
    name = f"{m.table}_members_history"
    return sa.Table(
        name,
        metadata,
        sa.Column("_version", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("group_id", sa.String(512), nullable=False),
        sa.Column("member_id", sa.String(512), nullable=False),
        sa.Column("member_type", sa.String(200), nullable=True),
        sa.Column("_valid_from", schema.UtcDateTime, nullable=False),
        sa.Column("_valid_to", schema.UtcDateTime, nullable=True),
        sa.Index(mirror.index_name(name, "key"), "tenant_id", "group_id", "member_id", "_valid_from"),
        *_retention_index(m, name, "_valid_to"),
    )


def _has_members(subscription: Subscription) -> bool:
    return subscription.resource_type.key == "group"  # as syncer.mirror.tables_for


def drop_triggers(connection: sa.Connection, subscription: Subscription) -> None:
    """Stop versioning *subscription*'s table (before ``db upgrade`` rewrites its rows: no fake versions)."""
    table = subscription.mirror.table
    inspector = sa.inspect(connection)
    if not inspector.has_table(table):
        return
    postgres = connection.dialect.name == "postgresql"
    members = _has_members(subscription) and inspector.has_table(f"{table}_members")
    for statement in history_triggers.drop_ddl(table, postgres=postgres, members=members):
        connection.exec_driver_sql(statement)


def before_rebuild(connection: sa.Connection, subscription: Subscription) -> None:
    """Keep in each current version the ``_raw`` of its mirror row, which ``db upgrade --rebuild`` is about to drop.

    The resync that follows compares each row it brings back with that version (its declared columns, and which
    properties it held): a new version only where something changed (:mod:`syncer.history_triggers`)."""
    m = subscription.mirror
    inspector = sa.inspect(connection)
    if not inspector.has_table(f"{m.table}{VERSIONS}") or not inspector.has_table(m.table):
        return
    q = connection.dialect.identifier_preparer.quote
    h, t = q(f"{m.table}{VERSIONS}"), q(m.table)
    connection.exec_driver_sql(
        f"UPDATE {h} SET _raw = (SELECT m._raw FROM {t} m WHERE m.tenant_id = {h}.tenant_id AND m.id = {h}.id) "
        f"WHERE _raw IS NULL AND _version IN (SELECT max(_version) FROM {h} GROUP BY tenant_id, id)"
    )


def upgrade(connection: sa.Connection, subscription: Subscription) -> list[str]:
    """Create or extend *subscription*'s history tables, (re)install its triggers and its view; one line per change.

    Runs after :func:`syncer.mirror.upgrade` has shaped the mirror table, in its transaction. Columns added
    to the versions table are filled from each version's ``_raw``; no version is written for them.
    """
    m = subscription.mirror
    if m.history is None:
        return []
    postgres = connection.dialect.name == "postgresql"
    members = _has_members(subscription)
    q = connection.dialect.identifier_preparer.quote
    view = f"{m.table}_history"
    inspector = sa.inspect(connection)
    has_view = view in inspector.get_view_names()

    def drop_view() -> None:
        # Made again below over the columns then (a view lists its columns when it is made); on PostgreSQL with the
        # function returning its rows. Only when the columns change: a user's own view may be built on it.
        nonlocal has_view
        if postgres:
            connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {q(f'{m.table}_asof')}(timestamptz)")
        if has_view:
            connection.exec_driver_sql(f"DROP VIEW {q(view)}")
        has_view = False

    changes: list[str] = []
    if view in inspector.get_table_names():
        changes += _convert(connection, subscription)
        inspector = sa.inspect(connection)
    md = sa.MetaData()
    wanted = [build_table(m, md)] + ([build_members_table(m, md)] if members else [])
    for table in wanted:
        if not inspector.has_table(table.name):
            table.create(connection)
            changes.append(f"created table {table.name}")
            continue
        present = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                if table.name == f"{m.table}{VERSIONS}":
                    drop_view()
                _add_column(connection, table, column, m)
                changes.append(f"added column {table.name}.{column.name}")
        retyped = [c.name for c in m.columns if c.name in present and _type_changed(connection, present[c.name], table.c[c.name])]
        if table.name == f"{m.table}{VERSIONS}" and retyped:
            drop_view()
            _retype(connection, table, retyped, m)
            changes.append(f"{table.name}: column(s) {', '.join(retyped)} take their new type, converted from each version's _raw")
        changes += _retention_index_follows(connection, table, m)
    seeded = connection.exec_driver_sql(history_triggers.seed_sql(m, postgres=postgres)).rowcount
    if members:
        connection.exec_driver_sql(history_triggers.seed_members_sql(m))
    if seeded and seeded > 0:
        changes.append(f"{view}: the current state of {seeded} rows recorded as their first version")
    ddl = history_postgres.ddl if postgres else history_sqlite.ddl
    for statement in ddl(m, members=members):
        connection.exec_driver_sql(statement)
    if not has_view:
        connection.exec_driver_sql(_view_sql(connection, m))
    if postgres:
        columns = [c["name"] for c in sa.inspect(connection).get_columns(view)]
        connection.exec_driver_sql(history_postgres.asof_function(m, columns))
    return changes


def _convert(connection: sa.Connection, subscription: Subscription) -> list[str]:
    """A history table of the first layout (each version ended in place: ``_valid_to`` a column, the ended
    version's ``_raw`` written into it) becomes ``<table>_versions``; each version keeps its own ``_raw``, which
    the view prefers to the next version's ``_raw_before``, and its end is the next version's start, as it was."""
    m = subscription.mirror
    q = connection.dialect.identifier_preparer.quote
    old, new = f"{m.table}_history", f"{m.table}{VERSIONS}"
    postgres = connection.dialect.name == "postgresql"
    for statement in history_triggers.drop_ddl(m.table, postgres=postgres, members=False):
        connection.exec_driver_sql(statement)  # the triggers writing the old table; made again by upgrade
    if postgres:
        # Its indexes keep their names (build_table names them so), the one on _valid_to goes with the column.
        connection.exec_driver_sql(f"ALTER TABLE {q(old)} RENAME TO {q(new)}")
        connection.exec_driver_sql(f"ALTER TABLE {q(new)} DROP COLUMN _valid_to")
    else:
        # SQLite drops a column only from 3.35 on, and not one an index uses: the table is copied instead.
        present = [c["name"] for c in sa.inspect(connection).get_columns(old)]
        for index in sa.inspect(connection).get_indexes(old):
            connection.exec_driver_sql(f"DROP INDEX {q(str(index['name']))}")
        table = build_table(m)
        table.create(connection)
        kept = ", ".join(q(c.name) for c in table.columns if c.name in present)
        connection.exec_driver_sql(f"INSERT INTO {q(new)} ({kept}) SELECT {kept} FROM {q(old)}")
        connection.exec_driver_sql(f"DROP TABLE {q(old)}")
        for declared in m.columns:
            if declared.name not in present:
                _fill_from_raw(connection, table, declared)
    return [f"{old}: its versions moved to {new}, written once from now on; {old} is a view over it"]


def _retention_index_follows(connection: sa.Connection, table: sa.Table, m: Mirror) -> list[str]:
    """Create retention's index when ``keep`` was added, drop it when ``keep`` went (:func:`_retention_index`)."""
    versions = table.name == f"{m.table}{VERSIONS}"
    name = mirror.index_name(f"{m.table}_history", "valid_from") if versions else mirror.index_name(table.name, "valid_to")
    present = any(index["name"] == name for index in sa.inspect(connection).get_indexes(table.name))
    wanted = next((index for index in table.indexes if index.name == name), None)
    if wanted is not None and not present:
        wanted.create(connection)
        return [f"created index {name} (retention: keep)"]
    if wanted is None and present:
        connection.exec_driver_sql(f"DROP INDEX {connection.dialect.identifier_preparer.quote(name)}")
        return [f"dropped index {name} (no keep: no retention)"]
    return []


def _type_changed(connection: sa.Connection, present: Any, wanted: sa.Column[Any]) -> bool:
    """Whether a column's type in the database is not the one its declaration asks for (as the type's name)."""
    def name(t: Any) -> str:
        text = str(t.compile(dialect=connection.dialect)).upper().split("(")[0]
        return {"FLOAT": "DOUBLE PRECISION", "DOUBLE": "DOUBLE PRECISION"}.get(text, text)
    return name(present) != name(wanted.type)


def _retype(connection: sa.Connection, table: sa.Table, names: list[str], m: Mirror) -> None:
    """Give the history columns *names* their declared type; each version's value converted again from its ``_raw``
    (as the mirror's own column is filled by the resync), never cast from the old value."""
    q = connection.dialect.identifier_preparer.quote
    if connection.dialect.name == "postgresql":
        for name in names:
            type_sql = table.c[name].type.compile(dialect=connection.dialect)
            connection.exec_driver_sql(f"ALTER TABLE {q(table.name)} ALTER COLUMN {q(name)} TYPE {type_sql} USING NULL")
    else:
        # SQLite cannot change a column's type (its affinity would turn an integer back into text): the table is
        # recreated under its name, with its versions and their _version, the retyped columns left empty.
        old = f"{table.name}_retyped"
        connection.exec_driver_sql(f"ALTER TABLE {q(table.name)} RENAME TO {q(old)}")
        for index in table.indexes:
            connection.exec_driver_sql(f"DROP INDEX IF EXISTS {q(str(index.name))}")
        table.create(connection)
        kept = ", ".join(q(c.name) for c in table.columns if c.name not in names)
        connection.exec_driver_sql(f"INSERT INTO {q(table.name)} ({kept}) SELECT {kept} FROM {q(old)}")
        connection.exec_driver_sql(f"DROP TABLE {q(old)}")
    for name in names:
        declared = next(c for c in m.columns if c.name == name)
        _fill_from_raw(connection, table, declared)


def _fill_from_raw(connection: sa.Connection, table: sa.Table, declared: Any) -> None:
    """Fill column *declared* of each version with a ``_raw`` (its own, else the one the next version ended; a
    current version's is the mirror row's, filled by the resync: see "news" in :mod:`syncer.history_triggers`)."""
    v, n = table.alias("v"), table.alias("n")
    raw = sa.func.coalesce(v.c._raw, n.c._raw_before, type_=table.c._raw.type)
    query = sa.select(v.c._version, raw).select_from(v.outerjoin(n, n.c._version == _next(table, v))).where(raw.is_not(None))
    rows = connection.execute(query).all()
    updates = [
        {"v": version, "x": value}
        for version, raw in rows
        if (value := mirror.convert(mirror.extract(raw, declared.field), declared.type)) is not None
    ]
    if updates:
        connection.execute(
            sa.update(table).where(table.c._version == sa.bindparam("v")).values({declared.name: sa.bindparam("x")}),
            updates,
        )


def _add_column(connection: sa.Connection, table: sa.Table, column: sa.Column[Any], m: Mirror) -> None:
    preparer = connection.dialect.identifier_preparer
    type_sql = column.type.compile(dialect=connection.dialect)
    connection.exec_driver_sql(
        f"ALTER TABLE {preparer.quote(table.name)} ADD COLUMN {preparer.quote(column.name)} {type_sql}"
    )
    declared = next((c for c in m.columns if c.name == column.name), None)
    if declared is None:
        return  # an owner column: its value came from the scope, which old versions do not keep apart
    _fill_from_raw(connection, table, declared)


def close_members(
    connection: sa.Connection, m: Mirror | None, members: sa.Table, where: Sequence[sa.ColumnElement[bool]],
    params: Sequence[dict[str, Any]] = (), *, now: datetime,
) -> None:
    """Close the intervals of the ``<table>_members`` rows matching *where* (with *params*), about to be deleted.

    Called by the writer just before it deletes them, so that an interval ends at its pass's time (as the
    interval a trigger opened began at it); one statement, whatever the number of members.
    """
    if m is None or m.history is None:
        return
    h = build_members_table(m)
    doomed = (
        sa.select(sa.literal(1))
        .where(members.c.tenant_id == h.c.tenant_id, members.c.group_id == h.c.group_id,
               members.c.member_id == h.c.member_id, *where)
        .exists()
    )
    at = sa.bindparam("h_now", type_=schema.UtcDateTime)
    stmt = sa.update(h).where(h.c._valid_to.is_(None), doomed).values(
        _valid_to=sa.case((h.c._valid_from > at, h.c._valid_from), else_=at)
    )
    connection.execute(stmt, [{**p, "h_now": now} for p in params] if params else {"h_now": now})


# --- after a rebuild -------------------------------------------------------------------------------


def close_orphans(engine: sa.Engine, spec: Spec, *, now: datetime, settled: dict[str, Any]) -> int:
    """Close the current versions (and open membership intervals) of items that left Graph while their mirror
    table was rebuilt; how many versions and intervals were closed.

    ``db upgrade --rebuild`` drops the mirror rows, not their history. The resync that follows brings back every
    item still in Graph; one removed meanwhile has no mirror row left for a sweep to mark, so its current version
    would stay open for ever, and history would disagree with the mirror. Once the item's scope has finished a full
    round that began after the version was written, and the mirror still has no row for it, the round did not see
    it: it gets a ``swept`` version starting when that round began, as a sweep would have written (a
    rebuilt member list the same, its interval closed then).

    *settled*: per table, the ``syncer_mirror_tables.updated_at`` for which nothing is left to close or to wait
    for; such a table is not read again until ``db upgrade`` changes it (the caller keeps the dict between calls).
    """
    closed = 0
    seen: set[str] = set()
    for subscription in spec.subscriptions:
        m = subscription.mirror
        if m.history is None or m.table in seen:
            continue
        seen.add(m.table)
        with engine.begin() as connection:
            record = schema.mirror_tables
            stamp = connection.execute(sa.select(record.c.updated_at).where(record.c.table_name == m.table)).scalar()
            if stamp is None or settled.get(m.table) == stamp:
                continue
            names = set(sa.inspect(connection).get_table_names())
            if not {m.table, f"{m.table}{VERSIONS}"} <= names:
                continue
            waiting = False
            if _has_members(subscription) and {f"{m.table}_members", f"{m.table}_members_history"} <= names:
                done, waiting = _close_orphan_intervals(connection, m)
                closed += done
            done, waiting_rows = _close_orphan_versions(connection, m, now=now)
            closed += done
        if done:
            log.info("history: closed %d versions of %s whose items left Graph during a rebuild", done, m.table)
        if not (waiting or waiting_rows):
            settled[m.table] = stamp
    return closed


def _listed_after(state: Any, written: datetime) -> datetime | None:
    """When the scope's last full round began, if it is over and began after *written*; else None."""
    if state.listed_at is None or state.resync_requested or (state.round_full and state.page_link is not None):
        return None
    return state.listed_at if state.listed_at > written else None


def _close_orphan_versions(connection: sa.Connection, m: Mirror, *, now: datetime) -> tuple[int, bool]:
    h, v, s = build_table(m), build_view(m), schema.sync_state
    rows = sa.table(m.table, sa.column("tenant_id"), sa.column("id"))
    in_mirror = sa.select(sa.literal(1)).where(rows.c.tenant_id == v.c.tenant_id, rows.c.id == v.c.id).exists()
    query = (
        sa.select(v, s.c.listed_at, s.c.resync_requested, s.c.round_full, s.c.page_link)
        .join(s, sa.and_(s.c.tenant_id == v.c.tenant_id, s.c.scope_key == v.c._scope))
        .where(v.c._valid_to.is_(None), v.c._change.not_in(history_triggers.NOT_LIVE), ~in_mirror)
    )
    opening, waiting = [], False
    for row in connection.execute(query):
        listed = _listed_after(row, row._learned_at)
        if listed is None:
            waiting = True  # its scope has not yet finished a full round since
            continue
        # The swept version ends the current one (which keeps its own _raw, the dropped mirror row's).
        version = {c.name: getattr(row, c.name) for c in h.columns if c.name not in ("_version", "_raw_before")}
        opening.append({**version, "_valid_from": max(listed, row._valid_from), "_change": "swept", "_run_id": None,
                        "_graph_time": None, "_learned_at": now})
    if opening:
        connection.execute(sa.insert(h), opening)
    return len(opening), waiting


def _close_orphan_intervals(connection: sa.Connection, m: Mirror) -> tuple[int, bool]:
    mh, h, s = build_members_table(m), build_view(m), schema.sync_state
    rows = sa.table(f"{m.table}_members", sa.column("tenant_id"), sa.column("group_id"), sa.column("member_id"))
    in_mirror = sa.select(sa.literal(1)).where(
        rows.c.tenant_id == mh.c.tenant_id, rows.c.group_id == mh.c.group_id, rows.c.member_id == mh.c.member_id
    ).exists()
    # The group's scope: the one its current version was written by.
    query = (
        sa.select(mh.c._version, mh.c._valid_from, s.c.listed_at, s.c.resync_requested, s.c.round_full, s.c.page_link)
        .join(h, sa.and_(h.c.tenant_id == mh.c.tenant_id, h.c.id == mh.c.group_id, h.c._valid_to.is_(None)))
        .join(s, sa.and_(s.c.tenant_id == h.c.tenant_id, s.c.scope_key == h.c._scope))
        .where(mh.c._valid_to.is_(None), ~in_mirror)
    )
    closing, waiting = [], False
    for row in connection.execute(query):
        listed = _listed_after(row, row._valid_from)
        if listed is None:
            waiting = True
            continue
        closing.append({"v": row._version, "t": listed})
    if closing:
        connection.execute(
            sa.update(mh).where(mh.c._version == sa.bindparam("v")).values(_valid_to=sa.bindparam("t", type_=schema.UtcDateTime)),
            closing,
        )
    return len(closing), waiting


# --- retention --------------------------------------------------------------------------------------


def purge(engine: sa.Engine, spec: Spec, *, now: datetime) -> int:
    """Delete versions that ended longer ago than their declaration's ``keep``, in batches; how many.

    A current version is never deleted, however old: it is the row's present.
    """
    total = 0
    for table, keep in _retained(spec):
        cutoff = now - keep
        while True:
            with engine.begin() as connection:
                if not sa.inspect(connection).has_table(table.name):
                    break
                if "_valid_to" in table.c:  # membership intervals: their end is a column
                    batch = sa.select(table.c._version).where(table.c._valid_to < cutoff).limit(PURGE_BATCH)
                    deleted = connection.execute(sa.delete(table).where(table.c._version.in_(batch.scalar_subquery()))).rowcount
                else:
                    deleted = _purge_versions(connection, table, cutoff)
            total += max(deleted, 0)
            if deleted < PURGE_BATCH:
                break
    return total


def _purge_versions(connection: sa.Connection, table: sa.Table, cutoff: datetime) -> int:
    """One batch of versions whose next version started before *cutoff*; the next one's ``_raw_before`` (the
    ``_raw`` of the version deleted) goes with them."""
    v, n = table.alias("v"), table.alias("n")
    # A version ended before the cutoff started before it: the index on _valid_from finds the candidates.
    pairs = connection.execute(
        sa.select(v.c._version, n.c._version).select_from(v.join(n, n.c._version == _next(table, v)))
        .where(v.c._valid_from < cutoff, n.c._valid_from < cutoff).limit(PURGE_BATCH)
    ).all()
    if not pairs:
        return 0
    connection.execute(sa.delete(table).where(table.c._version.in_([ended for ended, _ in pairs])))
    connection.execute(
        sa.update(table).where(table.c._version.in_([later for _, later in pairs])).values(_raw_before=sa.null())
    )
    return len(pairs)


def _next(table: sa.Table, v: sa.FromClause) -> sa.ScalarSelect[Any]:
    """The ``_version`` of the version after the one *v* (an alias of versions *table*) reads; NULL for a current one."""
    x = table.alias("x")
    return (
        sa.select(sa.func.min(x.c._version))
        .where(x.c.tenant_id == v.c.tenant_id, x.c.id == v.c.id, x.c._version > v.c._version)
        .scalar_subquery()
    )


def _retained(spec: Spec) -> list[tuple[sa.Table, timedelta]]:
    md = sa.MetaData()
    out: list[tuple[sa.Table, timedelta]] = []
    seen: set[str] = set()
    for subscription in spec.subscriptions:
        m = subscription.mirror
        if m.history is None or m.history.keep is None or m.table in seen:
            continue
        seen.add(m.table)
        out.append((build_table(m, md), m.history.keep))
        if _has_members(subscription):
            out.append((build_members_table(m, md), m.history.keep))
    return out


# --- reading ----------------------------------------------------------------------------------------


def versions(connection: sa.Connection, m: Mirror, item_id: str, *, tenant_id: str | None = None) -> list[dict[str, Any]]:
    """Every version of the row *item_id* of mirror *m*, oldest first."""
    table = build_view(m)
    query = sa.select(table).where(table.c.id == item_id).order_by(table.c._valid_from, table.c._version)
    if tenant_id is not None:
        query = query.where(table.c.tenant_id == tenant_id)
    return [dict(row._mapping) for row in connection.execute(query)]


def render(m: Mirror, rows: Sequence[dict[str, Any]]) -> str:
    """*rows* (:func:`versions`) as text: each version's interval and change, then what changed from the one before."""
    if not rows:
        return "no versions\n"
    names = [c.name for c in m.columns] + list(m.owners)
    lines: list[str] = []
    before: dict[str, Any] | None = None
    for row in rows:
        until = _time(row["_valid_to"]) if row["_valid_to"] is not None else "now"
        run = f", pass {row['_run_id']}" if row["_run_id"] is not None else ""
        lines.append(f"{_time(row['_valid_from'])} .. {until}  {row['_change']}{run}")
        for name in names:
            old, new = (before or {}).get(name), row.get(name)
            if before is None:
                if new is not None:
                    lines.append(f"    {name} = {new!r}")
            elif old != new:
                lines.append(f"  - {name} = {old!r}")
                lines.append(f"  + {name} = {new!r}")
        before = row
    return "\n".join(lines) + "\n"


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
