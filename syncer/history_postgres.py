"""History on PostgreSQL: the trigger functions and triggers writing ``<table>_history``, and ``<table>_asof``
(:mod:`syncer.history_triggers` says why triggers and what a version is)."""

from __future__ import annotations

import hashlib

from syncer.history_triggers import (
    change_kind,
    change_test,
    copied,
    current,
    graph_time,
    open_interval,
    q,
    versions_of,
)
from syncer.spec.model import Mirror


def function_name(table: str, kind: str) -> str:
    """A PostgreSQL trigger function's name: functions are schema-wide, and a table name may take 55 characters."""
    return f"syncer_h_{hashlib.sha1(table.encode()).hexdigest()[:12]}_{kind}"

_LIVE = "('deleted', 'swept')"

# The statement triggers below only join the transition table with the history table on its indexes (the current
# version by key, a version by _version): their plan is made once per session, on the first page, when the table
# is still empty, and a hash join or a scan chosen then would read the whole history table for every later page.
_PG_PLAN = "SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off "


def _pg_current(alias: str, h: str) -> str:
    # LATERAL with a LIMIT: a lookup by key for each row, whatever the plan thought of the table's size. The
    # current version is the latest (versions start in order).
    return (
        f"LEFT JOIN LATERAL (SELECT * FROM {h} x WHERE x.tenant_id = {alias}.tenant_id AND x.id = {alias}.id "
        "ORDER BY x._valid_from DESC, x._version DESC LIMIT 1) p ON true"
    )


def _pg_inserted(mirror: Mirror) -> str:
    """Rows entering the mirror: a first version, or (a row back in the mirror: after a rebuild, a hard removal, a
    move from another scope) compared with its current version: a new one only where something declared changed."""
    h, cols = versions_of(mirror.table), copied(mirror)
    g = graph_time(mirror, "n", postgres=True)
    diff, _news = change_test(mirror, "n", "p", postgres=True, had_unknown=True)
    rows = (
        f"SELECT n.*, {g} AS _g, CASE WHEN n._deleted_at IS NULL THEN coalesce({g}, n._synced_at) ELSE n._deleted_at END AS _t, "
        f"CASE WHEN n._deleted_at IS NOT NULL THEN {change_kind('n')} "
        f"WHEN p._version IS NULL OR p._change IN {_LIVE} THEN 'created' ELSE 'updated' END AS _c, "
        "p._version AS _pv, p._valid_from AS _pf, "
        f"CASE WHEN p._version IS NULL OR (n._deleted_at IS NULL) <> (p._change NOT IN {_LIVE}) THEN 'new' "
        f"WHEN n._deleted_at IS NOT NULL THEN 'none' WHEN {diff} THEN 'new' ELSE 'fill' END AS _do "
        f"FROM syncer_new n {_pg_current('n', h)}"
    )
    fill = ", ".join([*(f"{q(c)} = c.{q(c)}" for c in cols), "_raw = NULL"])
    # A page none of whose rows history knows (an initial mirror): its first versions in one plain insert.
    first = (
        f"IF NOT EXISTS (SELECT 1 FROM syncer_new n, LATERAL (SELECT 1 FROM {h} x WHERE x.tenant_id = n.tenant_id "
        "AND x.id = n.id LIMIT 1) p) THEN "
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {''.join(f'{q(c)}, ' for c in cols)}_raw, _scope, _change, "
        "_run_id, _graph_time, _learned_at) "
        f"SELECT n.tenant_id, n.id, CASE WHEN n._deleted_at IS NULL THEN coalesce({g}, n._synced_at) ELSE n._deleted_at END, "
        + "".join(f"n.{q(c)}, " for c in cols)
        + f"NULL, n._scope, CASE WHEN n._deleted_at IS NULL THEN 'created' ELSE {change_kind('n')} END, n._sync_run_id, "
        f"{g}, n._synced_at FROM syncer_new n; RETURN NULL; END IF; "
    )
    return first + (
        f"WITH c AS ({rows}), "
        # Unchanged: the current version stays; the mirror row's _raw is its again (as for a re-sent item).
        f"filled AS (UPDATE {h} h SET {fill} FROM c WHERE h._version = c._pv AND c._do = 'fill') "
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {''.join(f'{q(c)}, ' for c in cols)}_raw, _scope, _change, "
        "_run_id, _graph_time, _learned_at) "
        "SELECT c.tenant_id, c.id, greatest(c._t, coalesce(c._pf, c._t)), "
        + "".join(f"c.{q(c)}, " for c in cols)
        + "NULL, c._scope, c._c, c._sync_run_id, c._g, c._synced_at FROM c WHERE c._do = 'new'"
    )


def _pg_deleted(mirror: Mirror) -> str:
    """Rows leaving the mirror (``delete: hard``): a live one gets a ``deleted`` version holding its last state; a
    removed one's current version keeps its ``_raw`` from now on."""
    h, cols = versions_of(mirror.table), copied(mirror)
    return (
        "WITH c AS (SELECT o.*, now() AS _t, p._version AS _pv, p._valid_from AS _pf, (o._deleted_at IS NULL) AS _live "
        f"FROM syncer_old o {_pg_current('o', h)}), "
        f"kept AS (UPDATE {h} h SET _raw = coalesce(h._raw, c._raw) FROM c WHERE h._version = c._pv AND NOT c._live) "
        f"INSERT INTO {h} (tenant_id, id, _valid_from, {''.join(f'{q(c)}, ' for c in cols)}_raw, _raw_before, _scope, "
        "_change, _run_id, _graph_time, _learned_at) "
        "SELECT c.tenant_id, c.id, greatest(c._t, coalesce(c._pf, c._t)), "
        + "".join(f"c.{q(c)}, " for c in cols)
        + "c._raw, c._raw, c._scope, 'deleted', NULL, NULL, now() FROM c WHERE c._live"
    )


def _pg_updated(mirror: Mirror) -> tuple[str, str]:
    """A row trigger's body and condition: only rows whose declared columns or liveness changed call it (a full
    resync re-sending identical items costs the condition, evaluated by the server, and nothing more)."""
    h, cols = versions_of(mirror.table), copied(mirror)
    g = graph_time(mirror, "NEW", postgres=True)
    changed, _news = change_test(mirror, "NEW", "OLD", postgres=True)
    t = f"CASE WHEN NEW._deleted_at IS NULL THEN coalesce({g}, NEW._synced_at) ELSE NEW._deleted_at END"
    # The new version never starts before the current one (Graph's time may lag a removal's); it carries the
    # _raw the current one ends with, OLD's.
    latest = f"(SELECT max(_valid_from) FROM {h} WHERE tenant_id = NEW.tenant_id AND id = NEW.id)"
    body = (
        f"BEGIN INSERT INTO {h} (tenant_id, id, _valid_from, {''.join(f'{q(c)}, ' for c in cols)}_raw, _raw_before, "
        f"_scope, _change, _run_id, _graph_time, _learned_at) VALUES (NEW.tenant_id, NEW.id, greatest({t}, {latest}), "
        + "".join(f"NEW.{q(c)}, " for c in cols)
        + f"NULL, OLD._raw, NEW._scope, CASE WHEN NEW._deleted_at IS NOT NULL THEN {change_kind('NEW')} "
        f"WHEN OLD._deleted_at IS NOT NULL THEN 'created' ELSE 'updated' END, NEW._sync_run_id, {g}, NEW._synced_at); "
        "RETURN NULL; END"
    )
    when = f"(NEW._deleted_at IS NULL) <> (OLD._deleted_at IS NULL) OR (NEW._deleted_at IS NULL AND ({changed}))"
    return body, when


def ddl(mirror: Mirror, *, members: bool) -> list[str]:
    """Functions and triggers (replacing any older ones) for *mirror*'s history on PostgreSQL."""
    t, h = mirror.table, versions_of(mirror.table)
    changed, news = change_test(mirror, "NEW", "OLD", postgres=True)
    statements = []
    statements += _pg_trigger(t, "ins", _pg_inserted(mirror), "INSERT", "NEW TABLE AS syncer_new")
    statements += _pg_trigger(t, "del", _pg_deleted(mirror), "DELETE", "OLD TABLE AS syncer_old")
    upd_body, upd_when = _pg_updated(mirror)
    statements += _pg_row_trigger(t, "upd", upd_body, upd_when)
    if mirror.columns:
        fill = (
            f"BEGIN UPDATE {h} SET {', '.join(f'{q(c.name)} = NEW.{q(c.name)}' for c in mirror.columns)} "
            f"WHERE _version = {current(h, 'NEW')}; RETURN NULL; END"
        )
        fill_when = f"NEW._deleted_at IS NULL AND OLD._deleted_at IS NULL AND NOT ({changed}) AND ({news})"
        statements += _pg_row_trigger(t, "fill", fill, fill_when)
    else:
        statements.append(f"DROP TRIGGER IF EXISTS syncer_history_fill ON {q(t)}")
    if members:  # an interval opens here; the writer closes it at its pass's time (syncer.history.close_members)
        m, mh = f"{t}_members", q(f"{t}_members_history")
        statements += _pg_trigger(
            m, "mins",
            f"INSERT INTO {mh} (tenant_id, group_id, member_id, member_type, _valid_from) "
            "SELECT n.tenant_id, n.group_id, n.member_id, n.member_type, n._synced_at FROM syncer_new n "
            f"LEFT JOIN LATERAL ({open_interval(mh, 'n')} LIMIT 1) p ON true WHERE p.is_open IS NULL",
            "INSERT", "NEW TABLE AS syncer_new",
        )
        mh_name = f"{t}_members_history"
        statements.append(
            f"CREATE OR REPLACE FUNCTION {q(f'{t}_members_asof')}(ts timestamptz) RETURNS SETOF {q(mh_name)} "
            f"LANGUAGE sql STABLE AS $$ SELECT * FROM {q(mh_name)} WHERE _valid_from <= ts "
            "AND (_valid_to IS NULL OR _valid_to > ts) $$"
        )
    return statements


def asof_function(mirror: Mirror, columns: list[str]) -> str:
    """``<table>_asof(ts)``: the rows as they were at *ts*, with ``_raw`` (a current version's is the mirror row's).

    *columns*: the history table's columns in their order in the database (added ones come last)."""
    t, h = mirror.table, f"{mirror.table}_history"
    select = ", ".join("coalesce(h._raw, m._raw)" if c == "_raw" else f"h.{q(c)}" for c in columns)
    return (
        f"CREATE OR REPLACE FUNCTION {q(f'{t}_asof')}(ts timestamptz) RETURNS SETOF {q(h)} LANGUAGE sql STABLE AS $$ "
        f"SELECT {select} FROM {q(h)} h LEFT JOIN {q(t)} m ON h._valid_to IS NULL AND h._raw IS NULL "
        "AND m.tenant_id = h.tenant_id AND m.id = h.id WHERE h._valid_from <= ts AND (h._valid_to IS NULL OR h._valid_to > ts) "
        "AND h._change NOT IN ('deleted', 'swept') $$"
    )


def _pg_trigger(table: str, kind: str, body: str, event: str, referencing: str) -> list[str]:
    fn = function_name(table, kind)
    return [
        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql {_PG_PLAN}"
        f"AS $$ BEGIN {body}; RETURN NULL; END $$",
        f"DROP TRIGGER IF EXISTS syncer_history_{kind} ON {q(table)}",
        f"CREATE TRIGGER syncer_history_{kind} AFTER {event} ON {q(table)} REFERENCING {referencing} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
    ]


def _pg_row_trigger(table: str, kind: str, body: str, when: str) -> list[str]:
    fn = function_name(table, kind)
    return [
        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ {body} $$",
        f"DROP TRIGGER IF EXISTS syncer_history_{kind} ON {q(table)}",
        f"CREATE TRIGGER syncer_history_{kind} AFTER UPDATE ON {q(table)} FOR EACH ROW WHEN ({when}) "
        f"EXECUTE FUNCTION {fn}()",
    ]
