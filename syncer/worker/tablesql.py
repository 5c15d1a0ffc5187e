"""What a mirror table's writes need that does not depend on the scope: built once per table and process.

A tenant's initial mirror is thousands of small passes (a mailbox's folders, its calendar, its contacts),
most of them one page of a few items or none. Building the SQLAlchemy ``Table``, the SQL strings and
the compiled row function for every pass cost about as much CPU as the pass's own SQL (bench/tenant.py
measured ~7 ms a pass for the table alone), so they are kept here per declaration (:class:`Mirror` is a
frozen value) and dialect, shared by every :class:`~syncer.worker.writer.RowWriter` of that table.
Reusing the same ``Table`` object also lets SQLAlchemy's compiled-statement cache serve the statements
built on it (sweeps, owner fills), where a new ``Table`` per pass compiled them again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from syncer import history_sqlite, mirror
from syncer.spec import Mirror
from syncer.storable import has_nul, storable

__all__ = ["TableSql", "fill_statement", "sweep_statement", "table_of", "table_sql"]

_ISO_UTC = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d{1,7}))?Z$")


@lru_cache(maxsize=1024)
def table_of(spec: Mirror) -> tuple[sa.Table, sa.Table]:
    """The mirror table of *spec* and its ``<table>_members`` table (used by group scopes), on one metadata."""
    md = sa.MetaData()
    return mirror.build_table(spec, md), mirror.build_members_table(spec, md)


@lru_cache(maxsize=1024)
def sweep_statement(spec: Mirror, *, hard: bool) -> sa.Executable:
    """The end of a full round, removing the scope's rows the round did not see: ``k_tenant``, ``k_scope``,
    ``k_round`` (the round's id), and for a soft delete ``_deleted_at``, ``_removed_reason``, ``_synced_at``
    (a row already removed keeps its first removal)."""
    t, _members = table_of(spec)
    unseen = (
        t.c.tenant_id == sa.bindparam("k_tenant"), t.c._scope == sa.bindparam("k_scope"),
        sa.or_(t.c._sync_run_id.is_(None), t.c._sync_run_id != sa.bindparam("k_round")),
    )
    if hard:
        return sa.delete(t).where(*unseen)
    return sa.update(t).where(*unseen, t.c._deleted_at.is_(None))


@lru_cache(maxsize=1024)
def fill_statement(spec: Mirror, names: tuple[str, ...]) -> sa.Executable:
    """Set the owner columns *names* on the rows of one scope where they differ (the ``syncer.mirror_owners``
    fill, built once): ``k_tenant``, ``k_scope``, and each column's value under its name and ``k_<name>``."""
    t, _members = table_of(spec)
    stale = sa.or_(*(sa.or_(t.c[n].is_(None), t.c[n] != sa.bindparam(f"k_{n}")) for n in names))
    return sa.update(t).where(t.c.tenant_id == sa.bindparam("k_tenant"), t.c._scope == sa.bindparam("k_scope"), stale)


HISTORY_CACHE_KIB = 8192
"""SQLite's page cache (KiB) on a connection writing a table with history (:attr:`SqliteHistory.cache`)."""


@dataclass(frozen=True)
class SqliteHistory:
    """SQLite: the statements versioning the rows an upsert adds to a mirror table with history, each taking the
    largest rowid before the upsert (the rows it added are above it)."""

    cache: str
    """A larger page cache for the connection (a cap, allocated as used): a page of rows with history dirties a
    third more pages, and a transaction of several pages outgrew SQLite's default 2 MB, spilling them to the WAL
    before the commit and writing some twice (about a third of an initial mirror's cost of history)."""
    last_rowid: str
    """The largest rowid now."""
    known: str
    """The added rows history already knows (their rowids)."""
    compare: tuple[str, ...]
    """Run in order for each of those (its rowid): compared with its current version."""
    first_versions: str
    """The first versions of the others."""
    first_versions_all: str
    """The first versions of all of them, when history knew none."""
    insert_new: str
    """The rows as new ones only (``ON CONFLICT DO NOTHING``): see :meth:`TableSql.sqlite_upsert`."""
    added_keys: str
    """The keys of the rows added (rowid above ``?``)."""


_BUILT: dict[tuple[Mirror, str, str], TableSql] = {}


def table_sql(spec: Mirror, dialect: Dialect) -> TableSql:
    """The shared :class:`TableSql` of *spec* on *dialect*."""
    # Keyed by the dialect's name and driver (syncer builds every engine of a kind alike), not by the
    # dialect object: tests build an engine per database. Two threads may build one at once; either wins.
    key = (spec, dialect.name, dialect.driver)
    found = _BUILT.get(key)
    if found is None:
        if len(_BUILT) >= 1024:
            _BUILT.clear()
        found = _BUILT.setdefault(key, TableSql(spec, dialect))
    return found


class TableSql:
    """One mirror table's statements (upsert, COPY, staging) and its row function, for one dialect."""

    def __init__(self, spec: Mirror, dialect: Dialect) -> None:
        self.spec = spec
        self.table, self.members_table = table_of(spec)
        self.postgres = dialect.name == "postgresql"
        self.columns = [c.name for c in self.table.columns]
        self.declared = [(c.name, c.field, c.type) for c in spec.columns]
        self.owner_count = len(spec.owners)
        self._dt = sa.DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
        q = dialect.identifier_preparer.quote
        self.qtable = dialect.identifier_preparer.format_table(self.table)
        cols = ", ".join(q(c) for c in self.columns)
        updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in self.columns if c not in ("tenant_id", "id"))
        mark = "%s" if self.postgres else "?"  # the driver's own parameters: run on its cursor, or by exec_driver_sql
        self.scope_has_rows_sql = f"SELECT EXISTS (SELECT 1 FROM {self.qtable} WHERE tenant_id = {mark} AND _scope = {mark})"
        """Whether a scope (tenant, scope key) has rows in the table: its writer's pages are new rows while not."""
        if self.postgres:
            # The temporary table outlives a `db upgrade --rebuild` on a pooled connection: named after the columns'
            # types too, a changed type gets a staging table of its own instead of the old one's.
            layout = hashlib.sha1(repr([(c.name, c.type) for c in spec.columns]).encode()).hexdigest()[:8]
            self.stage = q(f"_syncer_stage_{layout}_{spec.table}"[:63])
            self.stage_sql = (
                f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} "
                f"(LIKE {self.qtable} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            self.copy_sql = f"COPY {self.stage} ({cols}) FROM STDIN"
            self.copy_direct_sql = f"COPY {self.qtable} ({cols}) FROM STDIN"
            self.upsert_sql = (
                f"INSERT INTO {self.qtable} ({cols}) SELECT {cols} FROM {self.stage} "
                f"ON CONFLICT (tenant_id, id) DO UPDATE SET {updates}"
            )
        else:
            marks = ", ".join("?" for _ in self.columns)
            self.upsert_sql = (
                f"INSERT INTO {self.qtable} ({cols}) VALUES ({marks}) ON CONFLICT (tenant_id, id) DO UPDATE SET {updates}"
            )
        self.history: SqliteHistory | None = None
        """SQLite with history: what versions the rows an upsert adds (the mirror's triggers version the others)."""
        if spec.history is not None and not self.postgres:
            known, compare = history_sqlite.known_rows_sql(spec)
            self.history = SqliteHistory(
                f"PRAGMA cache_size = -{HISTORY_CACHE_KIB}", f"SELECT coalesce(max(rowid), 0) FROM {self.qtable}", known,
                tuple(compare),
                history_sqlite.first_versions_sql(spec, known=True), history_sqlite.first_versions_sql(spec, known=False),
                f"INSERT INTO {self.qtable} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                f"SELECT tenant_id, id FROM {self.qtable} WHERE rowid > ?",
            )
        self.row = self._compile_row(spec.table)
        """``row(item, tenant, scope, synced, run, owners)``: the table row of one Graph item, ready for the driver."""

    def sqlite_upsert(self, connection: sa.Connection, rows: list[tuple[Any, ...]], *, new: bool = False) -> bool:
        """SQLite: insert or replace *rows* (built by :attr:`row`), with their versions where the table has history.

        *new*: the rows are expected to be new (a scope's first enumeration; only read with history): they are
        inserted as such, and those already there then upserted. Returns whether they all were new (False
        without *new*: not looked at)."""
        if self.history is None:
            connection.exec_driver_sql(self.upsert_sql, rows)
            return False
        # History: the rows this upsert adds (above the largest rowid before it) are versioned by the statements
        # after it, in this transaction (history and mirror commit together); the triggers version the others.
        h = self.history
        connection.exec_driver_sql(h.cache)
        before = connection.exec_driver_sql(h.last_rowid).scalar_one()
        all_new = False
        if new:
            # An upsert (ON CONFLICT DO UPDATE) into a table with UPDATE triggers costs SQLite half as much again
            # per row as into one without, even where no row conflicts and even with a trigger doing nothing:
            # measured at 100,000 users, 22 against 14 µs, a third of an initial mirror's cost of history.
            # DO NOTHING runs no UPDATE trigger, and costs what the upsert costs without triggers. Ids are unique
            # in a page (RowWriter.upsert), so a row it did not add was in the table before.
            all_new = connection.exec_driver_sql(h.insert_new, rows).rowcount == len(rows)
            if not all_new:
                inserted = {(tenant, key) for tenant, key in connection.exec_driver_sql(h.added_keys, (before,))}
                rest = [r for r in rows if (r[0], r[1]) not in inserted]
                if rest:
                    connection.exec_driver_sql(self.upsert_sql, rest)
        else:
            connection.exec_driver_sql(self.upsert_sql, rows)
        known = connection.exec_driver_sql(h.known, (before,)).all()
        for (rowid,) in known:
            for statement in h.compare:
                connection.exec_driver_sql(statement, (rowid,))
        connection.exec_driver_sql(h.first_versions if known else h.first_versions_all, (before,))
        return all_new

    def synced_at(self, now: Any) -> Any:
        """*now* as the driver wants it for the ``_synced_at`` column."""
        return self._dt(now) if self._dt else now

    def _db_value(self, value: Any, type_name: str) -> Any:
        if value is None:
            return None
        if type_name == "json":
            return orjson.dumps(value).decode()
        if type_name == "datetime":
            return self._dt(value) if self._dt else value
        return value

    def _datetime_value(self, value: Any) -> Any:
        if value.__class__ is str:
            match = _ISO_UTC.match(value)
            if match is not None:
                # Graph's usual "2026-01-02T03:04:05(.fffffff)Z": reformatted without a datetime object.
                day, clock, fraction = match.groups()
                # Graph sends up to 7 fractional digits; like mirror.convert, keep 6 (truncated, not rounded).
                text = f"{day} {clock}.{(fraction or '')[:6].ljust(6, '0')}"
                return f"{text}+00" if self.postgres else text
        return self._db_value(mirror.convert(value, "datetime"), "datetime")

    def _compile_row(self, table: str) -> Callable[..., tuple[Any, ...]]:
        # The hot loop of an initial mirror (one call per item, ~20 columns): generated once per
        # table so that common column types convert inline, without a dispatch per value.
        env: dict[str, Any] = {
            "_dumps": orjson.dumps, "_extract": mirror.extract, "_text": _text_value, "_storable": storable,
            "_has_nul": has_nul,
        }
        parts = []
        for i, (_name, field_path, type_name) in enumerate(self.declared):
            get = f"g({field_path!r})" if "." not in field_path else f"_extract(item, {field_path!r})"
            if type_name == "text":
                parts.append(f"(v if (v := {get}).__class__ is str else _text(v))")
            elif type_name == "boolean":
                parts.append(f"(v if (v := {get}).__class__ is bool else None)")
            elif type_name == "json":
                parts.append(f"(None if (v := {get}) is None else _dumps(v).decode())")
            elif type_name == "datetime":
                env[f"_c{i}"] = self._datetime_value
                parts.append(f"_c{i}({get})")
            else:
                env[f"_c{i}"] = lambda v, t=type_name: self._db_value(mirror.convert(v, t), t)
                parts.append(f"_c{i}({get})")
        # _raw is serialised first: its bytes tell at no extra cost whether the item holds a U+0000,
        # which then becomes U+FFFD in every column (syncer.storable: PostgreSQL cannot store it).
        source = (
            "def row(item, tenant, scope, synced, run, owners):\n"
            "    raw = _dumps(item)\n"
            "    if _has_nul(raw):\n"
            "        item = _storable(item)\n"
            "        raw = _dumps(item)\n"
            "    g = item.get\n"
            "    return (tenant, str(item['id']), "
            + "".join(f"{p}, " for p in parts)
            + "".join(f"owners[{i}], " for i in range(self.owner_count))
            + "raw.decode(), scope, None, None, synced, run)\n"
        )
        exec(compile(source, f"<row builder for {table}>", "exec"), env)
        row: Callable[..., tuple[Any, ...]] = env["row"]
        return row


def _text_value(value: Any) -> str | None:
    return None if value is None else mirror.convert(value, "text")
