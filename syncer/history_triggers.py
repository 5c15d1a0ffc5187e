"""The SQL that writes ``<table>_versions`` in the same transaction as the mirror row (:mod:`syncer.history`):
what both databases share; each database's triggers in :mod:`syncer.history_postgres` and
:mod:`syncer.history_sqlite`.

A version is written once and never updated when the next one starts: the next one's start is its end, and
the next one carries the ``_raw`` it ended (``_raw_before``, the mirror row's ``_raw`` before the change), both
joined back by the view ``<table>_history``. Ending the old version in place cost more than writing the new
one (it grew by its ``_raw``: SQLite split its page, PostgreSQL wrote a new copy and its index entries).

Why triggers: every write of a mirror table (a delta page's upsert or ``COPY``, a removal, a sweep, a
row from a rich notification, a retired scope) then versions itself in the very statement that changed
the row, so history and mirror cannot disagree whatever crashes, and no writer can forget it.
PostgreSQL: rows entering or leaving the mirror are versioned by statement-level triggers over transition
tables, one set-based ``INSERT … SELECT`` per statement (a page of 1,000 rows is one statement, not 1,000);
a changed row by a row trigger whose ``WHEN`` condition (a declared column or the removal changed) the
server tests without calling it, so that a full resync re-sending identical items costs nothing more.
SQLite has only row-level triggers, each called as a sub-program per row: they version the rows updated and
deleted, while the rows the writer's upsert adds (all of an initial mirror's) are versioned by its statements
right after it, in its transaction (the only writer adding rows to a mirror table).

A version is written only when a declared column changed, or the row was removed or came back. A
column whose property the previous ``_raw`` did not hold at all (a column just added by ``syncer db
upgrade``, filled by the resync that follows) is news, not a change: it fills the current version in place.
"""

from __future__ import annotations

from syncer.spec.model import Mirror

NOT_LIVE = ("deleted", "swept")
"""``_change`` of a version in which the item was not in Graph (removed, or not seen by a full pass)."""


VERSIONS = "_versions"
"""Suffix of the table holding the versions (``<table>_versions``); ``<table>_history`` is the view over it that
adds each version's end, ``_valid_to``, and its ``_raw`` (:mod:`syncer.history`)."""


def versions_of(table: str) -> str:
    """The quoted name of mirror *table*'s versions table."""
    return q(f"{table}{VERSIONS}")


def current(h: str, alias: str) -> str:
    """SQL: the ``_version`` of the current version of *alias*'s row in versions table *h*: its latest (a version
    is never updated when the next one starts; the next one's start is its end)."""
    return f"(SELECT max(_version) FROM {h} WHERE tenant_id = {alias}.tenant_id AND id = {alias}.id)"


def q(name: str) -> str:
    """*name* as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def copied(mirror: Mirror) -> list[str]:
    return [c.name for c in mirror.columns] + list(mirror.owners)


def change_test(mirror: Mirror, new: str, old: str, *, postgres: bool, had_unknown: bool = False) -> tuple[str, str]:
    """SQL (over aliases *new*, *old*) true when a declared column changed; and when one only got news.

    *had_unknown*: *old* is a version whose ``_raw`` may be NULL (a row that left the mirror before it was kept):
    then every property counts as held."""
    changed, news = [], []
    for c in mirror.columns:
        top = c.field.split(".")[0]
        had = f"({old}._raw -> '{top}') IS NOT NULL" if postgres else f"json_type({old}._raw, '$.{top}') IS NOT NULL"
        if had_unknown:
            had = f"({old}._raw IS NULL OR {had})"
        cast = "::jsonb" if postgres and c.type == "json" else ""  # json has no equality operator
        a, b = f"{new}.{q(c.name)}{cast}", f"{old}.{q(c.name)}{cast}"
        # An old value that is not NULL came from a property the old item held: only a NULL one needs the look
        # into _raw (parsing the whole item, for every changed column of every row, was most of the test's cost).
        held = f"({b} IS NOT NULL OR {had})"
        changed.append(f"({a} IS DISTINCT FROM {b} AND {held})" if postgres else f"({a} IS NOT {b} AND {held})")
        news.append(f"({b} IS NULL AND {a} IS NOT NULL AND NOT {had})")
    return " OR ".join(changed) or "FALSE", " OR ".join(news) or "FALSE"


def graph_time(mirror: Mirror, alias: str, *, postgres: bool) -> str:
    field = mirror.history.time_field if mirror.history else None
    if not field:
        return "NULL::timestamptz" if postgres else "NULL"
    if postgres:
        text = f"({alias}._raw ->> '{field}')"
        return (
            f"(CASE WHEN {text} ~ '^\\d{{4}}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(\\.\\d+)?(Z|[+-]\\d\\d:\\d\\d)$' "
            f"THEN {text}::timestamptz END)"
        )
    # The text SQLAlchemy stores for a DateTime on SQLite ("YYYY-MM-DD HH:MM:SS.ffffff"), so times compare as text.
    return f"(strftime('%Y-%m-%d %H:%M:%f', json_extract({alias}._raw, '$.{field}')) || '000')"


def change_kind(new: str) -> str:
    return f"(CASE WHEN {new}._removed_reason = 'swept' THEN 'swept' ELSE 'deleted' END)"


def seed_sql(mirror: Mirror, *, postgres: bool, where: str = "", unknown: bool = True) -> str:
    """One version for each mirror row that has none (history turned on for a table with rows);
    *where*: a further condition on the mirror rows ``m``; not *unknown*: the caller knows none of them has one."""
    h, t, cols = versions_of(mirror.table), q(mirror.table), copied(mirror)
    g = graph_time(mirror, "m", postgres=postgres)
    return (
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {', '.join(map(q, cols))}{', ' if cols else ''}_raw, _scope, "
        "_change, _run_id, _graph_time, _learned_at) "
        f"SELECT m.tenant_id, m.id, CASE WHEN m._deleted_at IS NULL THEN coalesce({g}, m._synced_at) ELSE m._deleted_at END, "
        + "".join(f"m.{q(c)}, " for c in cols)
        + f"NULL, m._scope, CASE WHEN m._deleted_at IS NULL THEN 'created' ELSE {change_kind('m')} END, "
        f"m._sync_run_id, {g}, m._synced_at FROM {t} m WHERE "
        + " AND ".join(
            ([where] if where else [])
            + ([f"NOT EXISTS (SELECT 1 FROM {h} h WHERE h.tenant_id = m.tenant_id AND h.id = m.id)"]
               if unknown else [])
        )
    )


def open_interval(mh: str, alias: str) -> str:
    """A member's interval still open (a members table rebuilt and filled again by the resync opens none twice)."""
    return (
        f"SELECT 1 AS is_open FROM {mh} h WHERE h.tenant_id = {alias}.tenant_id AND h.group_id = {alias}.group_id "
        f"AND h.member_id = {alias}.member_id AND h._valid_to IS NULL"
    )


def seed_members_sql(mirror: Mirror) -> str:
    """An open interval for each current member without one."""
    m, mh = q(f"{mirror.table}_members"), q(f"{mirror.table}_members_history")
    return (
        f"INSERT INTO {mh} (tenant_id, group_id, member_id, member_type, _valid_from) "
        f"SELECT m.tenant_id, m.group_id, m.member_id, m.member_type, m._synced_at FROM {m} m WHERE NOT EXISTS "
        f"(SELECT 1 FROM {mh} h WHERE h.tenant_id = m.tenant_id AND h.group_id = m.group_id "
        "AND h.member_id = m.member_id AND h._valid_to IS NULL)"
    )


def drop_ddl(table: str, *, postgres: bool, members: bool) -> list[str]:
    """Statements removing the history triggers of *table* (the history tables stay, with their data)."""
    kinds = ("ins", "insn", "upd", "fill", "del", "gone")
    if postgres:
        out = [f"DROP TRIGGER IF EXISTS syncer_history_{k} ON {q(table)}" for k in ("ins", "upd", "fill", "del")]
        if members:
            out += [f"DROP TRIGGER IF EXISTS syncer_history_{k} ON {q(f'{table}_members')}" for k in ("mins", "mdel")]
        return out
    return [f"DROP TRIGGER IF EXISTS {q(f'{table}_history_{k}')}" for k in (*kinds, "mins", "mdel")]
