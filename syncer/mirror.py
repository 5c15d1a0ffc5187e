"""Mirror tables: the SQL tables users query, derived from the ``mirror:`` part of each subscription.

A mirror table has syncer's key and bookkeeping columns plus one typed column per declared field::

    tenant_id, id            primary key (one database may mirror several tenants)
    <declared columns>       typed copies of the declared Graph properties, for plain SQL
    <owner columns>          ids of what owns the row, from its scope (user_id, folder_id...; syncer.owners)
    _raw                     the item as Graph last sent it (JSON), so nothing is lost
    _scope                   which delta scope the row came from (a mailbox folder, a drive...)
    _deleted_at              set when Graph reported the item removed (soft delete)
    _removed_reason          Graph's @removed reason: "changed" (restorable) or "deleted"
    _synced_at               when syncer last wrote the row
    _sync_run_id             the pass that last saw the row (mark-and-sweep after a resync)

Group subscriptions also get ``<table>_members`` (group id, member id, member type).

The layout last applied is recorded in ``syncer_mirror_tables``; :func:`upgrade` compares it with the
spec and adds columns in place, refusing what cannot be applied in place unless asked to rebuild.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from syncer import applied as applied_spec
from syncer import database, history, schema
from syncer.errors import SchemaChangeRefused
from syncer.graph.times import parse_datetime
from syncer.mirror_owners import OWNER_TYPE, add_owner_columns

if TYPE_CHECKING:
    from syncer.spec import Mirror, Spec, Subscription

# The SQL type of each column type a spec may declare (syncer.spec.model.COLUMN_TYPES names them).
SQL_TYPES: dict[str, Any] = {
    "text": sa.Text,
    "integer": sa.BigInteger,
    "float": sa.Float,
    "boolean": sa.Boolean,
    "datetime": schema.UtcDateTime,
    "json": sa.JSON,
}

# Columns syncer adds to every mirror table; declared columns may not take these names.
# Every bookkeeping column starts with "_", which the spec refuses for declared columns (as it
# refuses the key columns, syncer.spec.model.KEY_COLUMNS).
BOOKKEEPING_COLUMNS = ("_raw", "_scope", "_deleted_at", "_removed_reason", "_synced_at", "_sync_run_id")


@dataclass(frozen=True)
class ColumnLayout:
    """A declared column as recorded in ``syncer_mirror_tables``."""

    name: str
    type: str
    field: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "field": self.field}


RAW_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
"""``_raw``: jsonb on PostgreSQL (indexable, ``->`` without re-parsing each row; COPY's text format
feeds it the same JSON text), JSON text on SQLite."""


def layout_of(mirror: Mirror) -> list[ColumnLayout]:
    """The declared columns of *mirror*, in order."""
    return [ColumnLayout(c.name, c.type, c.field) for c in mirror.columns]


def build_table(mirror: Mirror, metadata: sa.MetaData | None = None) -> sa.Table:
    """The SQLAlchemy Table for *mirror* (not created)."""
    metadata = metadata if metadata is not None else sa.MetaData()
    columns: list[sa.Column[Any]] = [
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(512), primary_key=True),
    ]
    columns += [sa.Column(c.name, SQL_TYPES[c.type], nullable=True) for c in mirror.columns]
    columns += [sa.Column(name, OWNER_TYPE, nullable=True) for name in mirror.owners]
    columns += [
        sa.Column("_raw", RAW_TYPE, nullable=False),
        sa.Column("_scope", sa.String(500), nullable=False),
        sa.Column("_deleted_at", schema.UtcDateTime, nullable=True),
        sa.Column("_removed_reason", sa.String(32), nullable=True),
        sa.Column("_synced_at", schema.UtcDateTime, nullable=False),
        sa.Column("_sync_run_id", sa.BigInteger, nullable=True),
    ]
    indexes = [sa.Index(index_name(mirror.table, name), "tenant_id", name) for name in mirror.indexed]
    return sa.Table(
        mirror.table,
        metadata,
        *columns,
        sa.Index(f"ix_{mirror.table}__scope", "tenant_id", "_scope"),
        *indexes,
    )


def index_name(table: str, column: str) -> str:
    """``ix_<table>_<column>``, shortened with a hash past PostgreSQL's 63 characters."""
    name = f"ix_{table}_{column}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"ix_{digest}_{column}"[:63]


def build_members_table(mirror: Mirror, metadata: sa.MetaData | None = None) -> sa.Table:
    """``<table>_members``: group membership from ``members@delta``."""
    metadata = metadata if metadata is not None else sa.MetaData()
    return sa.Table(
        f"{mirror.table}_members",
        metadata,
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("group_id", sa.String(512), primary_key=True),
        sa.Column("member_id", sa.String(512), primary_key=True),
        sa.Column("member_type", sa.String(200), nullable=True),
        sa.Column("_synced_at", schema.UtcDateTime, nullable=False),
        sa.Index(f"ix_{mirror.table}_members_member", "tenant_id", "member_id"),
    )


def tables_for(subscription: Subscription, metadata: sa.MetaData | None = None) -> list[sa.Table]:
    """Every mirror table *subscription* writes to."""
    metadata = metadata if metadata is not None else sa.MetaData()
    tables = [build_table(subscription.mirror, metadata)]
    if subscription.resource_type.key == "group":  # not group.owners: its rows are the owners
        tables.append(build_members_table(subscription.mirror, metadata))
    return tables


def describe_url(url: str) -> str:
    """*url* without its password, for messages."""
    return sa.make_url(url).render_as_string(hide_password=True)


def _now() -> datetime:
    return datetime.now(UTC)


def upgrade(spec: Spec, *, rebuild: bool = False, engine: sa.Engine | None = None) -> list[str]:
    """Create or alter the mirror tables of *spec*; return one line per change made.

    New declared columns are added in place and filled from ``_raw`` where the data is already
    there; the scope is then marked for a resync so that Graph sends the new property for every
    item. A column whose type changed, or a table that exists but was not created by syncer, is
    refused with :class:`SchemaChangeRefused` unless *rebuild* is set, which drops and recreates
    the table and resyncs its scopes.
    """
    own_engine = engine is None
    engine = engine if engine is not None else database.create_engine(spec.database_url)
    changes: list[str] = []
    try:
        for subscription in spec.subscriptions:
            # A new column is filled from _raw over the whole table: minutes on a large mirror.
            with engine.begin() as connection, database.unbounded(connection):
                # History triggers off while the upgrade rewrites rows (a filled column is no new version), back after.
                history.drop_triggers(connection, subscription)
                changes += _upgrade_one(connection, subscription, rebuild=rebuild)
                changes += history.upgrade(connection, subscription)
        if spec.fingerprint:
            with engine.begin() as connection:  # running workers compare their copy with it (syncer.applied)
                applied_spec.record(connection, spec.fingerprint, by="db upgrade", path=str(spec.path))
    finally:
        if own_engine:
            engine.dispose()
    return changes


def _upgrade_one(connection: sa.Connection, subscription: Subscription, *, rebuild: bool) -> list[str]:
    mirror = subscription.mirror
    desired = layout_of(mirror)
    inspector = sa.inspect(connection)
    exists = inspector.has_table(mirror.table)
    record = connection.execute(
        sa.select(schema.mirror_tables).where(schema.mirror_tables.c.table_name == mirror.table)
    ).first()
    metadata = sa.MetaData()
    tables = tables_for(subscription, metadata)

    if exists and record is None and not rebuild:
        raise SchemaChangeRefused(
            f"table {mirror.table!r} (subscription {subscription.name!r}) already exists and was not created by "
            "syncer; choose another mirror.table, or run `syncer db upgrade --rebuild` to replace it"
        )
    if not exists or record is None:
        if exists:
            tables[0].drop(connection)
        for table in tables:
            table.create(connection, checkfirst=True)
        _record(connection, subscription, desired, insert=record is None)
        _request_resync(connection, subscription)
        return [f"created table {mirror.table} ({len(desired)} declared columns)"]

    applied = [ColumnLayout(c["name"], c["type"], c["field"]) for c in record.columns]
    # A "{placeholder}" column recorded by the first SharePoint code is an owner column now (syncer.owners).
    applied = [c for c in applied if not (c.field.startswith("{") and c.name in mirror.owners)]
    problems = _incompatible(applied, desired)
    if problems:
        if not rebuild:
            raise SchemaChangeRefused(
                f"table {mirror.table!r} (subscription {subscription.name!r}) cannot be changed in place: "
                + "; ".join(problems)
                + ". Run `syncer db upgrade --rebuild` to drop and re-mirror it"
            )
        history.before_rebuild(connection, subscription)  # its rows' last _raw, for the resync to compare with
        for table in reversed(tables):
            table.drop(connection, checkfirst=True)
        for table in tables:
            table.create(connection)
        _record(connection, subscription, desired, insert=False)
        _request_resync(connection, subscription)
        return [f"rebuilt table {mirror.table}: " + "; ".join(problems)]

    changes: list[str] = _raw_to_jsonb(connection, inspector, mirror.table)
    for table in tables[1:]:
        if not inspector.has_table(table.name):
            table.create(connection)
            changes.append(f"created table {table.name}")
    applied_names = {c.name for c in applied}
    added = [c for c in desired if c.name not in applied_names]
    waiting = 0
    for column in added:
        total, unfetched = _add_column(connection, tables[0], column)
        waiting = max(waiting, unfetched)
        filled = f"filled from _raw for {total - unfetched} of {total} rows" if total else "no rows yet"
        changes.append(f"added column {mirror.table}.{column.name} ({column.type}, from {column.field}): {filled}")
    changes += add_owner_columns(connection, subscription, tables[0])
    existing_indexes = {ix["name"] for ix in inspector.get_indexes(mirror.table)}
    for index in tables[0].indexes:
        if index.name not in existing_indexes:
            index.create(connection)
            changes.append(f"created index {index.name}")
    if subscription.resource_type.key == "group.owners" and inspector.has_table(f"{mirror.table}_members"):
        # Before issue 16 an owners declaration mirrored the group and its members: that table is no longer written.
        changes.append(f"table {mirror.table}_members is no longer written (the owners are rows of {mirror.table}); kept with its data")
    dropped = [c.name for c in applied if c.name not in {d.name for d in desired}]
    for name in dropped:
        changes.append(f"column {mirror.table}.{name} is no longer declared; kept with its data")
    if added or desired != applied:
        # Keep undeclared columns in the record so a later re-declaration is checked against them.
        kept = [c for c in applied if c.name in dropped]
        _record(connection, subscription, desired + kept, insert=False)
    if added:
        scopes = _request_resync(connection, subscription)
        if waiting:
            # Never NULLs without a word: the rows Graph never sent the property for wait for a full pass.
            changes.append(
                f"{waiting} rows of {mirror.table} wait for a full pass of {subscription.name!r} (the new fields were "
                f"never fetched for them): resync requested for its {scopes} scope(s), the worker runs it next; "
                f"or now: `syncer sync {subscription.name} --full`"
            )
    return changes


def _raw_to_jsonb(connection: sa.Connection, inspector: sa.Inspector, table: str) -> list[str]:
    """A table created before ``_raw`` was jsonb on PostgreSQL is converted in place (the values are kept)."""
    if connection.dialect.name != "postgresql":
        return []
    raw = next((c for c in inspector.get_columns(table) if c["name"] == "_raw"), None)
    if raw is None or isinstance(raw["type"], postgresql.JSONB):
        return []
    quoted = connection.dialect.identifier_preparer.quote(table)
    # A rewrite of the table under an exclusive lock, like a column added to it: minutes on a large mirror.
    connection.execute(sa.text(f"ALTER TABLE {quoted} ALTER COLUMN _raw TYPE jsonb USING _raw::jsonb"))
    return [f"converted {table}._raw from json to jsonb (the table was rewritten, values kept)"]


def _incompatible(applied: list[ColumnLayout], desired: list[ColumnLayout]) -> list[str]:
    by_name = {c.name: c for c in applied}
    problems = []
    for column in desired:
        old = by_name.get(column.name)
        if old is not None and old.type != column.type:
            problems.append(f"column {column.name} changes type from {old.type} to {column.type}")
    return problems


def _add_column(connection: sa.Connection, table: sa.Table, column: ColumnLayout) -> tuple[int, int]:
    """Add *column*, fill it from ``_raw``; return the number of rows and of rows whose ``_raw`` lacks the field."""
    preparer = connection.dialect.identifier_preparer
    type_sql = SQL_TYPES[column.type]().compile(dialect=connection.dialect)
    connection.execute(
        sa.text(
            f"ALTER TABLE {preparer.quote(table.name)} ADD COLUMN {preparer.quote(column.name)} {type_sql}"
        )
    )
    # Fill it from the JSON we already hold; the resync then brings what was never selected.
    target = table.c[column.name]
    rows = connection.execute(sa.select(table.c.tenant_id, table.c.id, table.c._raw)).all()
    updates = [
        {"t": tenant_id, "i": item_id, "v": convert(extract(raw, column.field), column.type)}
        for tenant_id, item_id, raw in rows
    ]
    unfetched = sum(1 for _, _, raw in rows if not fetched(raw, column.field))
    updates = [u for u in updates if u["v"] is not None]
    if updates:
        connection.execute(
            sa.update(table)
            .where(table.c.tenant_id == sa.bindparam("t"), table.c.id == sa.bindparam("i"))
            .values({target: sa.bindparam("v")}),
            updates,
        )
    return len(rows), unfetched


def _record(
    connection: sa.Connection, subscription: Subscription, layout: list[ColumnLayout], *, insert: bool
) -> None:
    values = {
        "subscription_name": subscription.name,
        "columns": [c.as_dict() for c in layout],
        "updated_at": _now(),
    }
    table = schema.mirror_tables
    if insert:
        connection.execute(sa.insert(table).values(table_name=subscription.mirror.table, **values))
    else:
        connection.execute(
            sa.update(table).where(table.c.table_name == subscription.mirror.table).values(**values)
        )


def _request_resync(connection: sa.Connection, subscription: Subscription) -> int:
    # The next pass of every scope of this subscription enumerates from scratch (mark-and-sweep).
    state = schema.sync_state
    result = connection.execute(
        sa.update(state)
        .where(state.c.name == subscription.name)
        .values(delta_link=None, resync_requested=True, updated_at=_now())
    )
    return int(result.rowcount)


# --- turning Graph items into rows ---------------------------------------------------------------


def fetched(item: Any, field: str) -> bool:
    """Whether Graph sent dotted *field* in *item* (a null counts: it was asked for and is empty)."""
    value: Any = item
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def extract(item: dict[str, Any], field: str) -> Any:
    """The value at dotted *field* in *item*, or None when any step is missing."""
    value: Any = item
    for part in field.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _parse_datetime(value: str) -> datetime | None:
    try:
        return parse_datetime(value)
    except ValueError:
        return None  # not a time after all: the column stays empty, _raw keeps the text


def convert(value: Any, type_name: str) -> Any:
    """*value* from Graph's JSON as the Python value for a column of *type_name* (None if it does not fit)."""
    if value is None:
        return None
    if type_name == "json":
        return value
    if type_name == "text":
        return value if isinstance(value, str) else _json_text(value)
    if type_name == "boolean":
        return value if isinstance(value, bool) else None
    if type_name == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        return None
    if type_name == "float":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if type_name == "datetime":
        if isinstance(value, dict):  # Outlook dateTimeTimeZone: {"dateTime": ..., "timeZone": "UTC"}
            value = value.get("dateTime")
        return _parse_datetime(value) if isinstance(value, str) else None
    raise ValueError(f"unknown column type {type_name!r}")


def _json_text(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def row_values(mirror: Mirror, item: dict[str, Any]) -> dict[str, Any]:
    """The declared columns of one Graph *item*, converted to their types."""
    return {c.name: convert(extract(item, c.field), c.type) for c in mirror.columns}


def iter_mirror_tables(spec: Spec) -> Iterator[tuple[Subscription, sa.Table]]:
    """Each subscription of *spec* with its main mirror table."""
    metadata = sa.MetaData()
    seen: dict[str, sa.Table] = {}
    for subscription in spec.subscriptions:
        table = seen.get(subscription.mirror.table)
        if table is None:
            table = seen[subscription.mirror.table] = build_table(subscription.mirror, metadata)
        yield subscription, table
