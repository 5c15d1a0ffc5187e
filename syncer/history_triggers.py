"""The triggers that write ``<table>_history`` in the same statement as the mirror row (:mod:`syncer.history`).

Why triggers: every write of a mirror table (a delta page's upsert or ``COPY``, a removal, a sweep, a
row from a rich notification, a retired scope) then versions itself in the very statement that changed
the row, so history and mirror cannot disagree whatever crashes, and no writer can forget it.
PostgreSQL: rows entering or leaving the mirror are versioned by statement-level triggers over transition
tables, one set-based ``INSERT … SELECT`` per statement (a page of 1,000 rows is one statement, not 1,000);
a changed row by a row trigger whose ``WHEN`` condition (a declared column or the removal changed) the
server tests without calling it, so that a full resync re-sending identical items costs nothing more.
SQLite has only row-level triggers, each called as a sub-program per row: they version the rows updated and
deleted, while the rows the writer's upsert adds (all of an initial mirror's) are versioned by its statements
right after it, in its transaction (:func:`sqlite_first_versions_sql`, :func:`sqlite_known_rows_sql`).

A version is written only when a declared column changed, or the row was removed or came back. A
column whose property the previous ``_raw`` did not hold at all (a column just added by ``syncer db
upgrade``, filled by the resync that follows) is news, not a change: it fills the current version in place.
"""

from __future__ import annotations

import hashlib
import re

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


def _change_test(mirror: Mirror, new: str, old: str, *, postgres: bool, had_unknown: bool = False) -> tuple[str, str]:
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
        a, b = f"{new}.{_q(c.name)}{cast}", f"{old}.{_q(c.name)}{cast}"
        # An old value that is not NULL came from a property the old item held: only a NULL one needs the look
        # into _raw (parsing the whole item, for every changed column of every row, was most of the test's cost).
        held = f"({b} IS NOT NULL OR {had})"
        changed.append(f"({a} IS DISTINCT FROM {b} AND {held})" if postgres else f"({a} IS NOT {b} AND {held})")
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


def seed_sql(mirror: Mirror, *, postgres: bool, where: str = "") -> str:
    """One version for each mirror row that has no current one (history turned on for a table with rows);
    *where*: a further condition on the mirror rows ``m``."""
    h, t, cols = _q(f"{mirror.table}_history"), _q(mirror.table), _copied(mirror)
    g = _graph_time(mirror, "m", postgres=postgres)
    return (
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {', '.join(map(_q, cols))}{', ' if cols else ''}_raw, _scope, "
        "_change, _run_id, _graph_time, _learned_at) "
        f"SELECT m.tenant_id, m.id, CASE WHEN m._deleted_at IS NULL THEN coalesce({g}, m._synced_at) ELSE m._deleted_at END, "
        + "".join(f"m.{_q(c)}, " for c in cols)
        + f"NULL, m._scope, CASE WHEN m._deleted_at IS NULL THEN 'created' ELSE {_change_kind('m')} END, "
        f"m._sync_run_id, {g}, m._synced_at FROM {t} m WHERE {f'{where} AND ' if where else ''}NOT EXISTS (SELECT 1 FROM {h} h "
        "WHERE h.tenant_id = m.tenant_id AND h.id = m.id AND h._valid_to IS NULL)"
    )


def sqlite_first_versions_sql(mirror: Mirror) -> str:
    """SQLite: the first version of each row a statement just added to the mirror (its rowid above ``?``, the
    largest before it) that history does not know; run by the writer after each upsert (:mod:`syncer.worker.writer`).

    Why not a row trigger, as for updates: SQLite runs a trigger as a sub-program per row, whose call (its frame,
    its cursors) cost more than the insert it makes; an initial mirror is all inserts, and this one statement per
    page writes them for about half as much. A row history already knows (back after a rebuild or a removal) is
    compared with its current version first (:func:`sqlite_known_rows_sql`), which leaves it a current version."""
    return seed_sql(mirror, postgres=False, where="m.rowid > ?")


def _open_interval(mh: str, alias: str) -> str:
    """A member's interval still open (a members table rebuilt and filled again by the resync opens none twice)."""
    return (
        f"SELECT 1 AS is_open FROM {mh} h WHERE h.tenant_id = {alias}.tenant_id AND h.group_id = {alias}.group_id "
        f"AND h.member_id = {alias}.member_id AND h._valid_to IS NULL"
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

_LIVE = "('deleted', 'swept')"

# The statement triggers below only join the transition table with the history table on its indexes (the current
# version by key, a version by _version): their plan is made once per session, on the first page, when the table
# is still empty, and a hash join or a scan chosen then would read the whole history table for every later page.
_PG_PLAN = "SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off "


def _pg_current(alias: str, h: str) -> str:
    # LATERAL with a LIMIT: a lookup by key for each row, whatever the plan thought of the table's size.
    return (
        f"LEFT JOIN LATERAL (SELECT * FROM {h} x WHERE x.tenant_id = {alias}.tenant_id AND x.id = {alias}.id "
        "AND x._valid_to IS NULL LIMIT 1) p ON true"
    )


def _pg_inserted(mirror: Mirror) -> str:
    """Rows entering the mirror: a first version, or (a row back in the mirror: after a rebuild, a hard removal, a
    move from another scope) compared with its current version: a new one only where something declared changed."""
    h, cols = _q(f"{mirror.table}_history"), _copied(mirror)
    g = _graph_time(mirror, "n", postgres=True)
    diff, _news = _change_test(mirror, "n", "p", postgres=True, had_unknown=True)
    rows = (
        f"SELECT n.*, {g} AS _g, CASE WHEN n._deleted_at IS NULL THEN coalesce({g}, n._synced_at) ELSE n._deleted_at END AS _t, "
        f"CASE WHEN n._deleted_at IS NOT NULL THEN {_change_kind('n')} "
        f"WHEN p._version IS NULL OR p._change IN {_LIVE} THEN 'created' ELSE 'updated' END AS _c, "
        "p._version AS _pv, p._valid_from AS _pf, "
        f"CASE WHEN p._version IS NULL OR (n._deleted_at IS NULL) <> (p._change NOT IN {_LIVE}) THEN 'new' "
        f"WHEN n._deleted_at IS NOT NULL THEN 'none' WHEN {diff} THEN 'new' ELSE 'fill' END AS _do "
        f"FROM syncer_new n {_pg_current('n', h)}"
    )
    fill = ", ".join([*(f"{_q(c)} = c.{_q(c)}" for c in cols), "_raw = NULL"])
    # A page none of whose rows history knows (an initial mirror): its first versions in one plain insert.
    first = (
        f"IF NOT EXISTS (SELECT 1 FROM syncer_new n, LATERAL (SELECT 1 FROM {h} x WHERE x.tenant_id = n.tenant_id "
        "AND x.id = n.id AND x._valid_to IS NULL LIMIT 1) p) THEN "
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {''.join(f'{_q(c)}, ' for c in cols)}_raw, _scope, _change, "
        "_run_id, _graph_time, _learned_at) "
        f"SELECT n.tenant_id, n.id, CASE WHEN n._deleted_at IS NULL THEN coalesce({g}, n._synced_at) ELSE n._deleted_at END, "
        + "".join(f"n.{_q(c)}, " for c in cols)
        + f"NULL, n._scope, CASE WHEN n._deleted_at IS NULL THEN 'created' ELSE {_change_kind('n')} END, n._sync_run_id, "
        f"{g}, n._synced_at FROM syncer_new n; RETURN NULL; END IF; "
    )
    return first + (
        f"WITH c AS ({rows}), "
        # Unchanged: the current version stays; the mirror row's _raw is its again (as for a re-sent item).
        f"filled AS (UPDATE {h} h SET {fill} FROM c WHERE h._version = c._pv AND c._do = 'fill'), "
        f"closed AS (UPDATE {h} h SET _valid_to = greatest(c._t, h._valid_from) FROM c "
        "WHERE h._version = c._pv AND c._do = 'new') "
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {''.join(f'{_q(c)}, ' for c in cols)}_raw, _scope, _change, "
        "_run_id, _graph_time, _learned_at) "
        "SELECT c.tenant_id, c.id, greatest(c._t, coalesce(c._pf, c._t)), "
        + "".join(f"c.{_q(c)}, " for c in cols)
        + "NULL, c._scope, c._c, c._sync_run_id, c._g, c._synced_at FROM c WHERE c._do = 'new'"
    )


def _pg_deleted(mirror: Mirror) -> str:
    """Rows leaving the mirror (``delete: hard``): a live one gets a ``deleted`` version holding its last state; a
    removed one's current version keeps its ``_raw`` from now on."""
    h, cols = _q(f"{mirror.table}_history"), _copied(mirror)
    return (
        "WITH c AS (SELECT o.*, now() AS _t, p._version AS _pv, p._valid_from AS _pf, (o._deleted_at IS NULL) AS _live "
        f"FROM syncer_old o {_pg_current('o', h)}), "
        f"closed AS (UPDATE {h} h SET _valid_to = CASE WHEN c._live THEN greatest(c._t, h._valid_from) END, "
        "_raw = coalesce(h._raw, c._raw) FROM c WHERE h._version = c._pv) "
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {''.join(f'{_q(c)}, ' for c in cols)}_raw, _scope, _change, "
        "_run_id, _graph_time, _learned_at) "
        "SELECT c.tenant_id, c.id, greatest(c._t, coalesce(c._pf, c._t)), "
        + "".join(f"c.{_q(c)}, " for c in cols)
        + "c._raw, c._scope, 'deleted', NULL, NULL, now() FROM c WHERE c._live"
    )


def _pg_updated(mirror: Mirror) -> tuple[str, str]:
    """A row trigger's body and condition: only rows whose declared columns or liveness changed call it (a full
    resync re-sending identical items costs the condition, evaluated by the server, and nothing more)."""
    h, cols = _q(f"{mirror.table}_history"), _copied(mirror)
    g = _graph_time(mirror, "NEW", postgres=True)
    changed, _news = _change_test(mirror, "NEW", "OLD", postgres=True)
    body = (
        "DECLARE t timestamptz; vf timestamptz; "
        f"BEGIN t := CASE WHEN NEW._deleted_at IS NULL THEN coalesce({g}, NEW._synced_at) ELSE NEW._deleted_at END; "
        # The next version never starts before the one it closes (Graph's time may lag a removal's).
        f"WITH closed AS (UPDATE {h} SET _valid_to = greatest(t, _valid_from), _raw = coalesce(_raw, OLD._raw) "
        "WHERE tenant_id = NEW.tenant_id AND id = NEW.id AND _valid_to IS NULL RETURNING _valid_to) "
        "SELECT max(_valid_to) INTO vf FROM closed; "
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {''.join(f'{_q(c)}, ' for c in cols)}_raw, _scope, _change, "
        "_run_id, _graph_time, _learned_at) VALUES (NEW.tenant_id, NEW.id, coalesce(vf, t), "
        + "".join(f"NEW.{_q(c)}, " for c in cols)
        + f"NULL, NEW._scope, CASE WHEN NEW._deleted_at IS NOT NULL THEN {_change_kind('NEW')} "
        f"WHEN OLD._deleted_at IS NOT NULL THEN 'created' ELSE 'updated' END, NEW._sync_run_id, {g}, NEW._synced_at); "
        "RETURN NULL; END"
    )
    when = f"(NEW._deleted_at IS NULL) <> (OLD._deleted_at IS NULL) OR (NEW._deleted_at IS NULL AND ({changed}))"
    return body, when


def postgres_ddl(mirror: Mirror, *, members: bool) -> list[str]:
    """Functions and triggers (replacing any older ones) for *mirror*'s history on PostgreSQL."""
    t, h = mirror.table, f"{mirror.table}_history"
    changed, news = _change_test(mirror, "NEW", "OLD", postgres=True)
    statements = []
    statements += _pg_trigger(t, "ins", _pg_inserted(mirror), "INSERT", "NEW TABLE AS syncer_new")
    statements += _pg_trigger(t, "del", _pg_deleted(mirror), "DELETE", "OLD TABLE AS syncer_old")
    upd_body, upd_when = _pg_updated(mirror)
    statements += _pg_row_trigger(t, "upd", upd_body, upd_when)
    if mirror.columns:
        fill = (
            f"BEGIN UPDATE {_q(h)} SET {', '.join(f'{_q(c.name)} = NEW.{_q(c.name)}' for c in mirror.columns)} "
            "WHERE tenant_id = NEW.tenant_id AND id = NEW.id AND _valid_to IS NULL; RETURN NULL; END"
        )
        fill_when = f"NEW._deleted_at IS NULL AND OLD._deleted_at IS NULL AND NOT ({changed}) AND ({news})"
        statements += _pg_row_trigger(t, "fill", fill, fill_when)
    else:
        statements.append(f"DROP TRIGGER IF EXISTS syncer_history_fill ON {_q(t)}")
    if members:  # an interval opens here; the writer closes it at its pass's time (syncer.history.close_members)
        m, mh = f"{t}_members", _q(f"{t}_members_history")
        statements += _pg_trigger(
            m, "mins",
            f"INSERT INTO {mh} (tenant_id, group_id, member_id, member_type, _valid_from) "
            "SELECT n.tenant_id, n.group_id, n.member_id, n.member_type, n._synced_at FROM syncer_new n "
            f"LEFT JOIN LATERAL ({_open_interval(mh, 'n')} LIMIT 1) p ON true WHERE p.is_open IS NULL",
            "INSERT", "NEW TABLE AS syncer_new",
        )
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
        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql {_PG_PLAN}"
        f"AS $$ BEGIN {body}; RETURN NULL; END $$",
        f"DROP TRIGGER IF EXISTS syncer_history_{kind} ON {_q(table)}",
        f"CREATE TRIGGER syncer_history_{kind} AFTER {event} ON {_q(table)} REFERENCING {referencing} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
    ]


def _pg_row_trigger(table: str, kind: str, body: str, when: str) -> list[str]:
    fn = function_name(table, kind)
    return [
        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ {body} $$",
        f"DROP TRIGGER IF EXISTS syncer_history_{kind} ON {_q(table)}",
        f"CREATE TRIGGER syncer_history_{kind} AFTER UPDATE ON {_q(table)} FOR EACH ROW WHEN ({when}) "
        f"EXECUTE FUNCTION {fn}()",
    ]


# --- SQLite -----------------------------------------------------------------------------------------


def _sqlite_version(
    mirror: Mirror, row: str, t: str, change: str, graph: str, learned: str, run: str, raw: tuple[str, str] = ("NULL", "NULL"),
    *, only_if: str | None = None,
) -> str:
    """SQL opening a version of *row* (its _raw: raw[0]) and closing the one before (given raw[1] if it has none);
    *only_if*: a condition on which the version is opened (else nothing is written)."""
    h, cols = _q(f"{mirror.table}_history"), _copied(mirror)
    current = f"(SELECT max(_valid_from) FROM {h} WHERE tenant_id = {row}.tenant_id AND id = {row}.id AND _valid_to IS NULL)"
    # The version just opened closes the one before it (last_insert_rowid() is the trigger's own insert). When the
    # insert may not have happened, last_insert_rowid() is someone else's row: the version must be this row's, current.
    opened = (
        f" AND EXISTS (SELECT 1 FROM {h} x WHERE x._version = last_insert_rowid() AND x.tenant_id = {row}.tenant_id "
        f"AND x.id = {row}.id AND x._valid_to IS NULL)" if only_if else ""
    )
    return (
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {''.join(f'{_q(c)}, ' for c in cols)}_raw, _scope, _change, "
        f"_run_id, _graph_time, _learned_at) SELECT {row}.tenant_id, {row}.id, max({t}, coalesce({current}, {t})), "
        + "".join(f"{row}.{_q(c)}, " for c in cols)
        + f"{raw[0]}, {row}._scope, {change}, {run}, {graph}, {learned}{f' WHERE {only_if}' if only_if else ''};\n"
        f"UPDATE {h} SET _valid_to = (SELECT _valid_from FROM {h} WHERE _version = last_insert_rowid()), "
        f"_raw = coalesce(_raw, {raw[1]}) "
        f"WHERE tenant_id = {row}.tenant_id AND id = {row}.id AND _valid_to IS NULL AND _version <> last_insert_rowid()"
        f"{opened};"
    )


def sqlite_known_rows_sql(mirror: Mirror) -> tuple[str, list[str]]:
    """SQLite: the rows an upsert just added to the mirror (rowid above ``?``) that history already knows (back
    after ``db upgrade --rebuild``, a ``delete: hard`` removal, a move from another scope); and the statements
    comparing one of them (its rowid: ``?1``) with its current version, run in order for each: unchanged, that
    version stays (filled in place, its _raw the mirror row's again); else a new version closing it.

    Rare rows, so plain statements per row (the row read from the mirror by its rowid) rather than a trigger,
    whose call every row of an initial mirror would pay: see :func:`sqlite_first_versions_sql`, run after these."""
    t = mirror.table
    g = _graph_time(mirror, "NEW", postgres=False)
    live_t = f"CASE WHEN NEW._deleted_at IS NULL THEN coalesce({g}, NEW._synced_at) ELSE NEW._deleted_at END"
    h, cols = _q(f"{t}_history"), _copied(mirror)
    current = f"SELECT 1 FROM {h} WHERE tenant_id = NEW.tenant_id AND id = NEW.id AND _valid_to IS NULL"
    # A row back in the mirror (after a rebuild, a hard removal, a move from another scope) is compared with its
    # current version: unchanged, that version stays (filled in place, its _raw the mirror row's again).
    diff, _news = _change_test(mirror, "NEW", "p", postgres=False, had_unknown=True)
    same = (
        f"(NEW._deleted_at IS NULL AND p._change NOT IN ('deleted', 'swept') AND NOT ({diff})) "
        "OR (NEW._deleted_at IS NOT NULL AND p._change IN ('deleted', 'swept'))"
    )
    refill = ", ".join([*(f"{_q(c)} = NEW.{_q(c)}" for c in cols), "_raw = NULL"])
    diff_here, _news = _change_test(mirror, "NEW", h, postgres=False, had_unknown=True)  # no alias in a trigger's UPDATE
    statements = (
        f"UPDATE {h} SET {refill} WHERE tenant_id = NEW.tenant_id AND id = NEW.id AND _valid_to IS NULL "
        f"AND NEW._deleted_at IS NULL AND _change NOT IN ('deleted', 'swept') AND NOT ({diff_here});\n"
        + _sqlite_version(
            mirror, "NEW", live_t,
            f"CASE WHEN NEW._deleted_at IS NOT NULL THEN {_change_kind('NEW')} WHEN EXISTS ({current} "
            "AND _change NOT IN ('deleted', 'swept')) THEN 'updated' ELSE 'created' END",
            g, "NEW._synced_at", "NEW._sync_run_id",
            only_if=f"NOT EXISTS (SELECT 1 FROM {h} p WHERE p.tenant_id = NEW.tenant_id AND p.id = NEW.id "
            f"AND p._valid_to IS NULL AND ({same}))",
        )
    )
    known = (
        f"SELECT m.rowid FROM {_q(t)} m WHERE m.rowid > ? AND EXISTS (SELECT 1 FROM {h} x WHERE x.tenant_id = m.tenant_id "
        "AND x.id = m.id AND x._valid_to IS NULL)"
    )
    row = f"(SELECT {{}} FROM {_q(t)} WHERE rowid = ?1)"
    return known, [
        re.sub(r'NEW\.("(?:[^"]|"")*"|\w+)', lambda found: row.format(found.group(1)), statement.strip()).rstrip(";")
        for statement in statements.split(";\n")
    ]


def sqlite_ddl(mirror: Mirror, *, members: bool) -> list[str]:
    """Row triggers (replacing any older ones) for *mirror*'s history on SQLite."""
    t = mirror.table
    g = _graph_time(mirror, "NEW", postgres=False)
    live_t = f"CASE WHEN NEW._deleted_at IS NULL THEN coalesce({g}, NEW._synced_at) ELSE NEW._deleted_at END"
    changed, news = _change_test(mirror, "NEW", "OLD", postgres=False)
    h = _q(f"{t}_history")
    updated = _sqlite_version(
        mirror, "NEW", live_t,
        f"CASE WHEN NEW._deleted_at IS NOT NULL THEN {_change_kind('NEW')} WHEN OLD._deleted_at IS NOT NULL "
        "THEN 'created' ELSE 'updated' END",
        g, "NEW._synced_at", "NEW._sync_run_id", ("NULL", "OLD._raw"),
    )
    deleted = _sqlite_version(mirror, "OLD", _SQLITE_NOW, "'deleted'", "NULL", _SQLITE_NOW, "NULL", ("OLD._raw", "OLD._raw"))
    when_updated = f"(NEW._deleted_at IS NULL) <> (OLD._deleted_at IS NULL) OR (NEW._deleted_at IS NULL AND ({changed}))"
    fill = (
        f"UPDATE {h} SET {', '.join(f'{_q(c.name)} = NEW.{_q(c.name)}' for c in mirror.columns)} "
        "WHERE tenant_id = NEW.tenant_id AND id = NEW.id AND _valid_to IS NULL;"
    )
    triggers = {
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
    # Rows entering the mirror are versioned by the writer's statements after its upsert (sqlite_first_versions_sql,
    # sqlite_known_rows_sql): the INSERT triggers of earlier versions go.
    statements = [f"DROP TRIGGER IF EXISTS {_q(f'{t}_history_{kind}')}" for kind in ("ins", "insn")]
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
                     "SELECT NEW.tenant_id, NEW.group_id, NEW.member_id, NEW.member_type, NEW._synced_at "
                     f"WHERE NOT EXISTS ({_open_interval(mh, 'NEW')});"),
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
    kinds = ("ins", "insn", "upd", "fill", "del", "gone")
    if postgres:
        out = [f"DROP TRIGGER IF EXISTS syncer_history_{k} ON {_q(table)}" for k in ("ins", "upd", "fill", "del")]
        if members:
            out += [f"DROP TRIGGER IF EXISTS syncer_history_{k} ON {_q(f'{table}_members')}" for k in ("mins", "mdel")]
        return out
    return [f"DROP TRIGGER IF EXISTS {_q(f'{table}_history_{k}')}" for k in (*kinds, "mins", "mdel")]
