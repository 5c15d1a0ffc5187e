"""The triggers that write ``<table>_history`` in the same statement as the mirror row (:mod:`syncer.history`).

Why triggers: every write of a mirror table (a delta page's upsert or ``COPY``, a removal, a sweep, a
row from a rich notification, a retired scope) then versions itself in the very statement that changed
the row, so history and mirror cannot disagree whatever crashes, and no writer can forget it.
PostgreSQL: statement-level triggers over transition tables, one set-based ``INSERT … SELECT`` per
statement (a page of 1,000 rows is one join, not 1,000 queries). SQLite has only row-level triggers;
they run inside the engine, in C, with the version lookups on an index.

A version is written only when a declared column changed, or the row was removed or came back. A
column whose property the previous ``_raw`` did not hold at all (a column just added by ``syncer db
upgrade``, filled by the resync that follows) is news, not a change: it fills the current version in place.
"""

from __future__ import annotations

import hashlib

from syncer.spec.model import Mirror

NOT_LIVE = ("deleted", "swept")
"""``_change`` of a version in which the item was not in Graph (removed, or not seen by a full pass)."""


def function_name(table: str, kind: str) -> str:
    """A PostgreSQL trigger function's name: functions are schema-wide, and a table name may take 55 characters."""
    return f"syncer_h_{hashlib.sha1(table.encode()).hexdigest()[:12]}_{kind}"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _copied(mirror: Mirror) -> list[str]:
    return [c.name for c in mirror.columns] + list(mirror.owners)


def _change_test(mirror: Mirror, new: str, old: str, *, postgres: bool) -> tuple[str, str]:
    """SQL (over aliases *new*, *old*) true when a declared column changed; and when one only got news."""
    changed, news = [], []
    for c in mirror.columns:
        top = c.field.split(".")[0]
        had = f"({old}._raw -> '{top}') IS NOT NULL" if postgres else f"json_type({old}._raw, '$.{top}') IS NOT NULL"
        cast = "::jsonb" if postgres and c.type == "json" else ""  # json has no equality operator
        a, b = f"{new}.{_q(c.name)}{cast}", f"{old}.{_q(c.name)}{cast}"
        changed.append(f"({a} IS DISTINCT FROM {b} AND {had})" if postgres else f"({a} IS NOT {b} AND {had})")
        news.append(f"({b} IS NULL AND {a} IS NOT NULL AND NOT {had})")
    return " OR ".join(changed) or "FALSE", " OR ".join(news) or "FALSE"


def _graph_time(mirror: Mirror, alias: str, *, postgres: bool) -> str:
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


_SQLITE_NOW = "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"


def _change_kind(new: str) -> str:
    return f"(CASE WHEN {new}._removed_reason = 'swept' THEN 'swept' ELSE 'deleted' END)"


def seed_sql(mirror: Mirror, *, postgres: bool) -> str:
    """One version for each mirror row that has no current one (history turned on for a table with rows)."""
    h, t, cols = _q(f"{mirror.table}_history"), _q(mirror.table), _copied(mirror)
    g = _graph_time(mirror, "m", postgres=postgres)
    return (
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {', '.join(map(_q, cols))}{', ' if cols else ''}_raw, _scope, "
        "_change, _run_id, _graph_time, _learned_at) "
        f"SELECT m.tenant_id, m.id, CASE WHEN m._deleted_at IS NULL THEN coalesce({g}, m._synced_at) ELSE m._deleted_at END, "
        + "".join(f"m.{_q(c)}, " for c in cols)
        + f"NULL, m._scope, CASE WHEN m._deleted_at IS NULL THEN 'created' ELSE {_change_kind('m')} END, "
        f"m._sync_run_id, {g}, m._synced_at FROM {t} m WHERE NOT EXISTS (SELECT 1 FROM {h} h "
        "WHERE h.tenant_id = m.tenant_id AND h.id = m.id AND h._valid_to IS NULL)"
    )


def seed_members_sql(mirror: Mirror) -> str:
    """An open interval for each current member without one."""
    m, mh = _q(f"{mirror.table}_members"), _q(f"{mirror.table}_members_history")
    return (
        f"INSERT INTO {mh} (tenant_id, group_id, member_id, member_type, _valid_from) "
        f"SELECT m.tenant_id, m.group_id, m.member_id, m.member_type, m._synced_at FROM {m} m WHERE NOT EXISTS "
        f"(SELECT 1 FROM {mh} h WHERE h.tenant_id = m.tenant_id AND h.group_id = m.group_id "
        "AND h.member_id = m.member_id AND h._valid_to IS NULL)"
    )


# --- PostgreSQL ------------------------------------------------------------------------------------


def _pg_versions(mirror: Mirror, changed: str) -> str:
    """Close the current version of each row of *changed* and open its next one, in one statement."""
    h, cols = _q(f"{mirror.table}_history"), _copied(mirror)
    return (
        f"WITH changed AS ({changed}), "
        # The next version never starts before the one it closes (Graph's time may lag a removal's).
        f"cur AS (SELECT h._version, c.tenant_id, c.id, greatest(c._t, h._valid_from) AS _vf, c._ro FROM changed c "
        f"JOIN {h} h ON h.tenant_id = c.tenant_id AND h.id = c.id AND h._valid_to IS NULL), "
        f"closed AS (UPDATE {h} h SET _valid_to = cur._vf, _raw = coalesce(h._raw, cur._ro) FROM cur "
        "WHERE h._version = cur._version) "
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {''.join(f'{_q(c)}, ' for c in cols)}_raw, _scope, _change, "
        "_run_id, _graph_time, _learned_at) "
        "SELECT c.tenant_id, c.id, coalesce(cur._vf, c._t), "
        + "".join(f"c.{_q(c)}, " for c in cols)
        + "c._rn, c._scope, c._c, c._r, c._g, c._l FROM changed c "
        "LEFT JOIN cur ON cur.tenant_id = c.tenant_id AND cur.id = c.id"
    )


def postgres_ddl(mirror: Mirror, *, members: bool) -> list[str]:
    """Functions and triggers (replacing any older ones) for *mirror*'s history on PostgreSQL."""
    t, h = mirror.table, f"{mirror.table}_history"
    g = _graph_time(mirror, "n", postgres=True)
    live_t = f"coalesce({g}, n._synced_at)"
    changed, news = _change_test(mirror, "n", "o", postgres=True)
    inserted = (
        f"SELECT n.*, {g} AS _g, CASE WHEN n._deleted_at IS NULL THEN {live_t} ELSE n._deleted_at END AS _t, "
        f"CASE WHEN n._deleted_at IS NULL THEN 'created' ELSE {_change_kind('n')} END AS _c, "
        "n._synced_at AS _l, n._sync_run_id AS _r, NULL::jsonb AS _rn, NULL::jsonb AS _ro FROM syncer_new n"
    )
    updated = (
        f"SELECT n.*, {g} AS _g, CASE WHEN n._deleted_at IS NULL THEN {live_t} ELSE n._deleted_at END AS _t, "
        f"CASE WHEN n._deleted_at IS NOT NULL THEN {_change_kind('n')} WHEN o._deleted_at IS NOT NULL THEN 'created' "
        "ELSE 'updated' END AS _c, n._synced_at AS _l, n._sync_run_id AS _r, NULL::jsonb AS _rn, o._raw AS _ro "
        "FROM syncer_new n JOIN syncer_old o ON o.tenant_id = n.tenant_id AND o.id = n.id "
        f"WHERE (n._deleted_at IS NULL) <> (o._deleted_at IS NULL) OR (n._deleted_at IS NULL AND ({changed}))"
    )
    deleted = (
        "SELECT o.*, NULL::timestamptz AS _g, now() AS _t, 'deleted' AS _c, now() AS _l, NULL::bigint AS _r, "
        "o._raw AS _rn, o._raw AS _ro "
        "FROM syncer_old o WHERE o._deleted_at IS NULL"
    )
    fill = (
        f"UPDATE {_q(h)} h SET {', '.join(f'{_q(c.name)} = n.{_q(c.name)}' for c in mirror.columns)} "
        "FROM syncer_new n JOIN syncer_old o ON o.tenant_id = n.tenant_id AND o.id = n.id "
        "WHERE h.tenant_id = n.tenant_id AND h.id = n.id AND h._valid_to IS NULL AND n._deleted_at IS NULL "
        f"AND o._deleted_at IS NULL AND NOT ({changed}) AND ({news})"
    )
    # A removed row leaving the mirror takes its _raw with it: its current version keeps it from now on.
    keep_raw = (
        f"UPDATE {_q(h)} h SET _raw = o._raw FROM syncer_old o WHERE h.tenant_id = o.tenant_id AND h.id = o.id "
        "AND h._valid_to IS NULL AND h._raw IS NULL AND o._deleted_at IS NOT NULL"
    )
    bodies = {
        "ins": (_pg_versions(mirror, inserted), "INSERT", "NEW TABLE AS syncer_new"),
        "upd": (
            f"{_pg_versions(mirror, updated)}" + (f"; {fill}" if mirror.columns else ""),
            "UPDATE", "OLD TABLE AS syncer_old NEW TABLE AS syncer_new",
        ),
        "del": (f"{_pg_versions(mirror, deleted)}; {keep_raw}", "DELETE", "OLD TABLE AS syncer_old"),
    }
    statements = []
    for kind, (body, event, referencing) in bodies.items():
        statements += _pg_trigger(t, kind, body, event, referencing)
    if members:  # an interval opens here; the writer closes it at its pass's time (syncer.history.close_members)
        m, mh = f"{t}_members", _q(f"{t}_members_history")
        bodies_m = {
            "mins": (
                f"INSERT INTO {mh} (tenant_id, group_id, member_id, member_type, _valid_from) "
                "SELECT n.tenant_id, n.group_id, n.member_id, n.member_type, n._synced_at FROM syncer_new n",
                "INSERT", "NEW TABLE AS syncer_new",
            ),
        }
        for kind, (body, event, referencing) in bodies_m.items():
            statements += _pg_trigger(m, kind, body, event, referencing)
    if members:
        mh_name = f"{t}_members_history"
        statements.append(
            f"CREATE OR REPLACE FUNCTION {_q(f'{t}_members_asof')}(ts timestamptz) RETURNS SETOF {_q(mh_name)} "
            f"LANGUAGE sql STABLE AS $$ SELECT * FROM {_q(mh_name)} WHERE _valid_from <= ts "
            "AND (_valid_to IS NULL OR _valid_to > ts) $$"
        )
    return statements


def asof_function(mirror: Mirror, columns: list[str]) -> str:
    """``<table>_asof(ts)``: the rows as they were at *ts*, with ``_raw`` (a current version's is the mirror row's).

    *columns*: the history table's columns in their order in the database (added ones come last)."""
    t, h = mirror.table, f"{mirror.table}_history"
    select = ", ".join("coalesce(h._raw, m._raw)" if c == "_raw" else f"h.{_q(c)}" for c in columns)
    return (
        f"CREATE OR REPLACE FUNCTION {_q(f'{t}_asof')}(ts timestamptz) RETURNS SETOF {_q(h)} LANGUAGE sql STABLE AS $$ "
        f"SELECT {select} FROM {_q(h)} h LEFT JOIN {_q(t)} m ON h._valid_to IS NULL AND h._raw IS NULL "
        "AND m.tenant_id = h.tenant_id AND m.id = h.id WHERE h._valid_from <= ts AND (h._valid_to IS NULL OR h._valid_to > ts) "
        "AND h._change NOT IN ('deleted', 'swept') $$"
    )


def _pg_trigger(table: str, kind: str, body: str, event: str, referencing: str) -> list[str]:
    fn = function_name(table, kind)
    return [
        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body}; RETURN NULL; END $$",
        f"DROP TRIGGER IF EXISTS syncer_history_{kind} ON {_q(table)}",
        f"CREATE TRIGGER syncer_history_{kind} AFTER {event} ON {_q(table)} REFERENCING {referencing} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
    ]


# --- SQLite -----------------------------------------------------------------------------------------


def _sqlite_version(
    mirror: Mirror, row: str, t: str, change: str, graph: str, learned: str, run: str, raw: tuple[str, str] = ("NULL", "NULL"),
) -> str:
    """SQL opening a version of *row* (its _raw: raw[0]) and closing the one before (given raw[1] if it has none)."""
    h, cols = _q(f"{mirror.table}_history"), _copied(mirror)
    current = f"(SELECT max(_valid_from) FROM {h} WHERE tenant_id = {row}.tenant_id AND id = {row}.id AND _valid_to IS NULL)"
    return (
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {''.join(f'{_q(c)}, ' for c in cols)}_raw, _scope, _change, "
        f"_run_id, _graph_time, _learned_at) SELECT {row}.tenant_id, {row}.id, max({t}, coalesce({current}, {t})), "
        + "".join(f"{row}.{_q(c)}, " for c in cols)
        + f"{raw[0]}, {row}._scope, {change}, {run}, {graph}, {learned}; "
        # The version just opened closes the one before it (last_insert_rowid() is the trigger's own insert).
        f"UPDATE {h} SET _valid_to = (SELECT _valid_from FROM {h} WHERE _version = last_insert_rowid()), "
        f"_raw = coalesce(_raw, {raw[1]}) "
        f"WHERE tenant_id = {row}.tenant_id AND id = {row}.id AND _valid_to IS NULL AND _version <> last_insert_rowid();"
    )


def sqlite_ddl(mirror: Mirror, *, members: bool) -> list[str]:
    """Row triggers (replacing any older ones) for *mirror*'s history on SQLite."""
    t = mirror.table
    g = _graph_time(mirror, "NEW", postgres=False)
    live_t = f"CASE WHEN NEW._deleted_at IS NULL THEN coalesce({g}, NEW._synced_at) ELSE NEW._deleted_at END"
    changed, news = _change_test(mirror, "NEW", "OLD", postgres=False)
    inserted = _sqlite_version(
        mirror, "NEW", live_t, f"CASE WHEN NEW._deleted_at IS NULL THEN 'created' ELSE {_change_kind('NEW')} END",
        g, "NEW._synced_at", "NEW._sync_run_id",
    )
    updated = _sqlite_version(
        mirror, "NEW", live_t,
        f"CASE WHEN NEW._deleted_at IS NOT NULL THEN {_change_kind('NEW')} WHEN OLD._deleted_at IS NOT NULL "
        "THEN 'created' ELSE 'updated' END",
        g, "NEW._synced_at", "NEW._sync_run_id", ("NULL", "OLD._raw"),
    )
    deleted = _sqlite_version(mirror, "OLD", _SQLITE_NOW, "'deleted'", "NULL", _SQLITE_NOW, "NULL", ("OLD._raw", "OLD._raw"))
    when_updated = f"(NEW._deleted_at IS NULL) <> (OLD._deleted_at IS NULL) OR (NEW._deleted_at IS NULL AND ({changed}))"
    h = _q(f"{t}_history")
    fill = (
        f"UPDATE {h} SET {', '.join(f'{_q(c.name)} = NEW.{_q(c.name)}' for c in mirror.columns)} "
        "WHERE tenant_id = NEW.tenant_id AND id = NEW.id AND _valid_to IS NULL;"
    )
    triggers = {
        "ins": ("INSERT", "", inserted),
        "upd": ("UPDATE", f"WHEN {when_updated}", updated),
        "fill": (
            "UPDATE", f"WHEN NEW._deleted_at IS NULL AND OLD._deleted_at IS NULL AND NOT ({changed}) AND ({news})", fill,
        ),
        "del": ("DELETE", "WHEN OLD._deleted_at IS NULL", deleted),
        "gone": (
            "DELETE", "WHEN OLD._deleted_at IS NOT NULL",
            f"UPDATE {h} SET _raw = OLD._raw WHERE tenant_id = OLD.tenant_id AND id = OLD.id AND _valid_to IS NULL "
            "AND _raw IS NULL;",
        ),
    }
    statements = []
    if not mirror.columns:
        del triggers["fill"]
    for kind, (event, when, body) in triggers.items():
        name = _q(f"{t}_history_{kind}")
        statements += [
            f"DROP TRIGGER IF EXISTS {name}",
            f"CREATE TRIGGER {name} AFTER {event} ON {_q(t)} {when} BEGIN {body} END",
        ]
    if members:  # an interval opens here; the writer closes it at its pass's time (syncer.history.close_members)
        m, mh = f"{t}_members", _q(f"{t}_members_history")
        member_triggers = {
            "mins": ("INSERT", f"INSERT INTO {mh} (tenant_id, group_id, member_id, member_type, _valid_from) "
                     "VALUES (NEW.tenant_id, NEW.group_id, NEW.member_id, NEW.member_type, NEW._synced_at);"),
        }
        for kind, (event, body) in member_triggers.items():
            name = _q(f"{t}_history_{kind}")
            statements += [
                f"DROP TRIGGER IF EXISTS {name}",
                f"CREATE TRIGGER {name} AFTER {event} ON {_q(m)} BEGIN {body} END",
            ]
    return statements


def drop_ddl(table: str, *, postgres: bool, members: bool) -> list[str]:
    """Statements removing the history triggers of *table* (the history tables stay, with their data)."""
    kinds = ("ins", "upd", "fill", "del", "gone")
    if postgres:
        out = [f"DROP TRIGGER IF EXISTS syncer_history_{k} ON {_q(table)}" for k in ("ins", "upd", "del")]
        if members:
            out += [f"DROP TRIGGER IF EXISTS syncer_history_{k} ON {_q(f'{table}_members')}" for k in ("mins", "mdel")]
        return out
    return [f"DROP TRIGGER IF EXISTS {_q(f'{table}_history_{k}')}" for k in (*kinds, "mins", "mdel")]
