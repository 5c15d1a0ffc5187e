"""Writing Graph items into a mirror table: the hot path of every sync pass.

Kept apart from :mod:`syncer.worker.sync` (which decides *what* to write and *when* to commit) because it
is where the speed is: a row function compiled once per table, ``executemany`` on plain tuples for
SQLite, ``COPY`` (straight into the table while rows are new, else staged + one ``INSERT … ON
CONFLICT``) for PostgreSQL. Everything here runs inside the
caller's transaction; nothing commits.

Removals only touch rows whose ``_scope`` is the writer's scope: a message moved to another folder
may be upserted by that folder's pass before this folder reports it gone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from syncer import history, mirror, owners, resources, schema
from syncer.storable import storable
from syncer.worker.scopes import Scope
from syncer.worker.tablesql import sweep_statement, table_sql


def offline_owners(scope: Scope) -> dict[str, str | None]:
    """The owner columns of *scope*'s rows its key tells without asking Graph (None for the others)."""
    if scope.mirror is None or not scope.mirror.owners:
        return {}
    rt = resources.BY_KEY.get(scope.strategy.key)
    if rt is None:
        return dict.fromkeys(scope.mirror.owners)
    return owners.values_for(rt, scope.mirror.owners, scope.key, declared=dict(scope.owners))


SWEPT = "swept"
"""``_removed_reason`` of a row a full round did not see (Graph never reported it removed)."""


class RowWriter:
    """Writes a page of items into one mirror table as fast as the database allows.

    SQLite: one prepared ``INSERT … ON CONFLICT DO UPDATE`` run with ``executemany`` on plain tuples
    (no per-row SQLAlchemy work). PostgreSQL: while the scope's rows are new (a first enumeration),
    ``COPY`` straight into the mirror table under a savepoint; otherwise (or once a page collides with
    a row already there) ``COPY`` into a temporary staging table, then one
    ``INSERT … SELECT … ON CONFLICT DO UPDATE``. Values are converted once, here, with the same
    processors SQLAlchemy would use, so rows read back through SQLAlchemy as usual; JSON is
    serialised with orjson.
    """

    def __init__(self, engine: Engine, scope: Scope, *, owners: Mapping[str, str | None] | None = None) -> None:
        """*owners*: the values of the table's owner columns for this scope (:mod:`syncer.owners`); by default
        those its key tells without a lookup (a pass passes the looked-up ids too, :mod:`syncer.worker.lookups`)."""
        if scope.mirror is None:
            raise ValueError(f"scope {scope.key!r} has no mirror table")
        self.scope = scope
        if owners is None:
            owners = offline_owners(scope)
        self.owners = tuple(storable(owners.get(name)) for name in scope.mirror.owners)
        self.dialect = engine.dialect
        self.postgres = self.dialect.name == "postgresql"
        self.sql = table_sql(scope.mirror, self.dialect)
        self.table = self.sql.table
        self.members = self.sql.members_table if scope.strategy.members else None
        self.direct: bool | None = None
        """Write pages as new rows while the scope's rows are new (None: not decided yet): PostgreSQL COPYs
        them straight into the mirror table; SQLite with history inserts them without its upsert. Set by
        the first upsert; False for good after the first page that collided."""
        self._savepoint_in: Any = None
        """The transaction in which our COPY savepoint is open (released by the next page's)."""

    def begin_round(self, *, full: bool, resumed: bool) -> None:
        """Nothing to prepare: a full round sweeps by the round id its rows carry (``_sync_run_id``)."""

    def apply(
        self, connection: Connection, items: Sequence[Mapping[str, Any]], *, now: datetime, round_id: int
    ) -> PageOutcome:
        """Write one page of the round *round_id* (:func:`apply_items`)."""
        return apply_items(connection, self, items, now=now, run_id=round_id)

    def row(self, item: Mapping[str, Any], *, synced_at: Any, run_id: int | None) -> tuple[Any, ...]:
        """The table row of one Graph item, ready for the driver."""
        return self.sql.row(item, self.scope.tenant_id, self.scope.key, synced_at, run_id, self.owners)

    def synced_at(self, now: datetime) -> Any:
        """*now* as the driver wants it for the ``_synced_at`` column."""
        return self.sql.synced_at(now)

    def upsert(self, connection: Connection, items: Sequence[Mapping[str, Any]], *, synced_at: Any, run_id: int | None) -> None:
        """Insert or replace the rows of live *items* (ids unique within the batch)."""
        if not items:
            return
        tenant, scope, build, owners, sql = self.scope.tenant_id, self.scope.key, self.sql.row, self.owners, self.sql
        if not self.postgres:
            rows = [build(item, tenant, scope, synced_at, run_id, owners) for item in items]
            if sql.history is None:
                sql.sqlite_upsert(connection, rows)
                return
            if self.direct is None:
                # With history, rows are inserted as new ones while the scope's rows are new (as for PostgreSQL's
                # COPY below): TableSql.sqlite_upsert says why.
                self.direct = not connection.exec_driver_sql(sql.scope_has_rows_sql, (tenant, scope)).scalar_one()
            self.direct = sql.sqlite_upsert(connection, rows, new=bool(self.direct))
            return
        from psycopg.errors import UniqueViolation  # the postgres extra; imported once, then cached

        dbapi = connection.connection.driver_connection
        assert dbapi is not None
        with dbapi.cursor() as cursor:
            if self.direct is None:
                # A scope with no rows yet (a first enumeration) gets new items: COPY them into the
                # table itself, skipping the staging table and the merge (about half the server's
                # work per row). Its key is checked all the same: an item already there (a message
                # moved in from another folder's scope, a repeat across pages) fails the COPY.
                cursor.execute(sql.scope_has_rows_sql, (self.scope.tenant_id, self.scope.key))
                found = cursor.fetchone()
                self.direct = not (found and found[0])
            if self.direct:
                # The savepoint is released by the next page's (one round trip per page instead of
                # two); it only ever guards the COPY that follows it, which is all a rollback to it
                # undoes. A new transaction has none open yet.
                transaction = connection.get_transaction()
                if self._savepoint_in is not None and self._savepoint_in is transaction:
                    cursor.execute("RELEASE SAVEPOINT syncer_copy; SAVEPOINT syncer_copy")
                else:
                    cursor.execute("SAVEPOINT syncer_copy")
                self._savepoint_in = transaction
                try:
                    with cursor.copy(sql.copy_direct_sql) as copy:
                        # Rows built as they are sent: the server stores the first while we build the next.
                        for item in items:
                            copy.write_row(build(item, tenant, scope, synced_at, run_id, owners))
                except UniqueViolation:
                    # Only this page's COPY is undone; the merge below then writes it, as it does
                    # every later page of this writer.
                    cursor.execute("ROLLBACK TO SAVEPOINT syncer_copy; RELEASE SAVEPOINT syncer_copy")
                    self.direct = False
                    self._savepoint_in = None
                else:
                    return
            # A temporary table lives as long as the database connection (ON COMMIT DELETE ROWS empties
            # it at every commit), but its CREATE is transactional: a transaction that rolls back takes
            # it away again. So no memory of "created on this connection" (a pass whose first page
            # rolled back left every later pass on that pooled connection failing, UndefinedTable):
            # IF NOT EXISTS each page, a catalogue lookup.
            cursor.execute(sql.stage_sql)
            with cursor.copy(sql.copy_sql) as copy:
                for item in items:
                    copy.write_row(build(item, tenant, scope, synced_at, run_id, owners))
            # Emptied at once too (same round trip), in case a caller upserts twice in one transaction.
            cursor.execute(f"{sql.upsert_sql}; DELETE FROM {sql.stage}")

    def remove(self, connection: Connection, removals: Sequence[tuple[str, str]], *, now: datetime, run_id: int | None) -> int:
        """Apply Graph's removals ``(id, reason)`` to rows of this scope; how many rows changed."""
        if not removals:
            return 0
        removals = storable(removals)  # a U+0000 in a reason (ids come cleaned from apply_items)
        t = self.table
        where = [t.c.tenant_id == self.scope.tenant_id, t.c.id == sa.bindparam("b_id"), t.c._scope == self.scope.key]
        if self.scope.delete == "hard":
            stmt: Any = sa.delete(t).where(*where)
            params: list[dict[str, Any]] = [{"b_id": i} for i, _reason in removals]
        else:
            stmt = (
                sa.update(t)
                .where(*where)
                .values(
                    # The first removal time is kept: a replayed @removed must not look like a new one.
                    _deleted_at=sa.func.coalesce(t.c._deleted_at, sa.bindparam("b_now", type_=schema.UtcDateTime)),
                    _removed_reason=sa.bindparam("b_reason"),
                    _synced_at=sa.bindparam("b_now", type_=schema.UtcDateTime),
                    _sync_run_id=run_id,
                )
            )
            params = [{"b_id": i, "b_reason": reason, "b_now": now} for i, reason in removals]
        changed = connection.execute(stmt, params).rowcount
        if self.members is not None:
            m = self.members
            where = [m.c.tenant_id == self.scope.tenant_id, m.c.group_id == sa.bindparam("b_id")]
            history.close_members(connection, self.scope.mirror, m, where, [{"b_id": i} for i, _r in removals], now=now)
            connection.execute(sa.delete(m).where(*where), [{"b_id": i} for i, _r in removals])
        return max(changed, 0)

    def soft_deleted(self, connection: Connection, deleted: Sequence[tuple[str, datetime]]) -> int:
        """Rows just written whose item Graph lists as soft-deleted ``(id, when)``: removed with reason
        ``deleted`` at Graph's time (the row keeps Graph's item), or deleted under ``delete: hard``."""
        if not deleted:
            return 0
        t = self.table
        where = [t.c.tenant_id == self.scope.tenant_id, t.c.id == sa.bindparam("b_id"), t.c._scope == self.scope.key]
        if self.scope.delete == "hard":
            stmt: Any = sa.delete(t).where(*where)
            params: list[dict[str, Any]] = [{"b_id": i} for i, _at in deleted]
        else:
            stmt = sa.update(t).where(*where).values(
                _deleted_at=sa.bindparam("b_at", type_=schema.UtcDateTime), _removed_reason="deleted"
            )
            params = [{"b_id": i, "b_at": at} for i, at in deleted]
        return max(connection.execute(stmt, params).rowcount, 0)

    def sweep(self, connection: Connection, *, round_id: int, now: datetime, round_started: datetime | None) -> int:
        """After a full round: remove this scope's rows the round did not see."""
        t = self.table
        if self.members is not None and round_started is not None:
            m = self.members
            groups = sa.select(t.c.id).where(t.c.tenant_id == self.scope.tenant_id, t.c._scope == self.scope.key)
            gone = [m.c.tenant_id == self.scope.tenant_id, m.c.group_id.in_(groups), m.c._synced_at < round_started]
            history.close_members(connection, self.scope.mirror, m, gone, now=now)
            connection.execute(sa.delete(m).where(*gone))
        hard = self.scope.delete == "hard"
        params: dict[str, Any] = {"k_tenant": self.scope.tenant_id, "k_scope": self.scope.key, "k_round": round_id}
        if not hard:
            params.update(_deleted_at=now, _removed_reason=SWEPT, _synced_at=now)
        return max(connection.execute(sweep_statement(self.sql.spec, hard=hard), params).rowcount, 0)

    def members_delta(self, connection: Connection, changes: Sequence[tuple[str, Mapping[str, Any]]], *, now: datetime) -> None:
        """Apply ``members@delta`` entries ``(group id, member)`` to ``<table>_members``."""
        if self.members is None or not changes:
            return
        changes = storable(changes)  # a U+0000 in a member's id or type (syncer.storable)
        m = self.members
        added: dict[tuple[str, str], dict[str, Any]] = {}
        removed: dict[tuple[str, str], dict[str, Any]] = {}
        for group_id, member in changes:
            key = (group_id, str(member.get("id")))
            if "@removed" in member:
                added.pop(key, None)
                removed[key] = {"b_g": key[0], "b_m": key[1]}
            else:
                removed.pop(key, None)
                added[key] = {
                    "tenant_id": self.scope.tenant_id,
                    "group_id": key[0],
                    "member_id": key[1],
                    "member_type": member.get("@odata.type"),
                    "_synced_at": now,
                }
        if removed:
            where = [m.c.tenant_id == self.scope.tenant_id, m.c.group_id == sa.bindparam("b_g"), m.c.member_id == sa.bindparam("b_m")]
            history.close_members(connection, self.scope.mirror, m, where, list(removed.values()), now=now)
            connection.execute(sa.delete(m).where(*where), list(removed.values()))
        if added:
            insert = (postgresql.insert(m) if self.postgres else sqlite.insert(m))
            stmt = insert.on_conflict_do_update(
                index_elements=[m.c.tenant_id, m.c.group_id, m.c.member_id],
                set_={"member_type": insert.excluded.member_type, "_synced_at": insert.excluded._synced_at},
            )
            connection.execute(stmt, list(added.values()))


def remove_rows(
    connection: Connection, table: sa.Table, where: Sequence[sa.ColumnElement[bool]], *, hard: bool, reason: str,
    now: datetime,
) -> int:
    """Remove the mirror rows matching *where*: deleted when *hard*, else soft-deleted with *reason* (a row
    already removed keeps its first removal); how many rows changed."""
    if hard:
        return max(connection.execute(sa.delete(table).where(*where)).rowcount, 0)
    stmt = sa.update(table).where(*where, table.c._deleted_at.is_(None)).values(
        _deleted_at=now, _removed_reason=reason, _synced_at=now
    )
    return max(connection.execute(stmt).rowcount, 0)


def removal_of(item: Mapping[str, Any], *, deleted_facet: bool) -> str | None:
    """Graph's removal reason for *item*, or None when it is a live item."""
    removed = item.get("@removed")
    if removed is not None:
        reason = removed.get("reason") if isinstance(removed, dict) else None
        return str(reason or "deleted")
    if deleted_facet and item.get("deleted") is not None:
        return "deleted"
    return None


_ANNOTATION_ONLY = frozenset({"id", "members@delta", "@odata.type", "@odata.id", "@odata.etag"})


@dataclass
class PageOutcome:
    upserted: int = 0
    deleted: int = 0


def inline_items(items: Sequence[Mapping[str, Any]], inline: str) -> list[Mapping[str, Any]]:
    """Each item without its *inline* list (and that list's nextLink), followed by the items of the list."""
    out: list[Mapping[str, Any]] = []
    for item in items:
        if inline not in item and f"{inline}@odata.nextLink" not in item:
            out.append(item)
            continue
        out.append({k: v for k, v in item.items() if k not in (inline, f"{inline}@odata.nextLink")})
        out += [child for child in item.get(inline) or () if isinstance(child, Mapping)]
    return out


def apply_items(
    connection: Connection,
    writer: RowWriter,
    items: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    run_id: int | None,
) -> PageOutcome:
    """Write one page: the last state of each item wins (an item may repeat within a page)."""
    strategy = writer.scope.strategy
    if strategy.inline is not None:
        items = inline_items(items, strategy.inline)
    synced_at = writer.synced_at(now)
    last: dict[str, Mapping[str, Any]] = {}
    members: list[tuple[str, Mapping[str, Any]]] = []
    for item in items:
        item_id = item.get("id")
        if item_id is None:
            continue
        key = str(item_id)
        if "\x00" in key:  # the id the row is stored under (syncer.storable), for removals and repeats too
            key = storable(key)
        if strategy.members:
            members += [(key, member) for member in item.get("members@delta") or ()]
            # A large group is split across pages: a repeat carrying only members is not a new state.
            if "members@delta" in item and set(item) <= _ANNOTATION_ONLY:
                continue
        last.pop(key, None)
        last[key] = item
    live = []
    removals = []
    soft_deleted: list[tuple[str, datetime]] = []
    for key, item in last.items():
        reason = removal_of(item, deleted_facet=strategy.deleted_facet)
        if reason is None:
            live.append(item)
            if strategy.deleted_property is not None and item.get(strategy.deleted_property) is not None:
                at = mirror.convert(item[strategy.deleted_property], "datetime")
                soft_deleted.append((key, at if isinstance(at, datetime) else now))
        else:
            removals.append((key, reason))
    writer.upsert(connection, live, synced_at=synced_at, run_id=run_id)
    deleted = writer.remove(connection, removals, now=now, run_id=run_id)
    deleted += writer.soft_deleted(connection, soft_deleted)
    writer.members_delta(connection, members, now=now)
    return PageOutcome(upserted=len(live), deleted=deleted)
