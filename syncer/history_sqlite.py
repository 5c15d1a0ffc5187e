"""History on SQLite: the row triggers versioning the rows updated and deleted, and the writer's statements
versioning the rows its upsert adds (:mod:`syncer.history_triggers` says why, and what a version is)."""

from __future__ import annotations

import re

from syncer.history_triggers import (
    change_kind,
    change_test,
    copied,
    current,
    graph_time,
    open_interval,
    q,
    seed_sql,
    versions_of,
)
from syncer.spec.model import Mirror

_SQLITE_NOW = "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"


def first_versions_sql(mirror: Mirror, *, known: bool) -> str:
    """SQLite: the first version of each row a statement just added to the mirror (its rowid above ``?``, the
    largest before it) that history does not know; run by the writer after each upsert (:mod:`syncer.worker.writer`).

    Why not a row trigger, as for updates: SQLite runs a trigger as a sub-program per row, whose call (its frame,
    its cursors) cost more than the insert it makes; an initial mirror is all inserts, and this one statement per
    page writes them for about half as much. A row history already knows (back after a rebuild or a removal) is
    compared with its current version first (:func:`known_rows_sql`), which leaves it a current version: *known*,
    some were (each row is looked up again, and left out if it has one); else none was (no lookup)."""
    return seed_sql(mirror, postgres=False, where="m.rowid > ?", unknown=known)


def _sqlite_version(
    mirror: Mirror, row: str, t: str, change: str, graph: str, learned: str, run: str, raw: tuple[str, str] = ("NULL", "NULL"),
    *, only_if: str | None = None,
) -> str:
    """SQL opening a version of *row*: its own ``_raw`` raw[0] (NULL while the mirror row holds it), the ``_raw``
    of the version it ends raw[1]; *only_if*: a condition on which the version is opened (else nothing is written)."""
    h, cols = versions_of(mirror.table), copied(mirror)
    # The versions of a row start in order, so the latest start is the current version's: read off the key index
    # alone, with no look at the rows. The new version never starts before it (clocks disagree).
    latest = f"(SELECT max(_valid_from) FROM {h} WHERE tenant_id = {row}.tenant_id AND id = {row}.id)"
    values = [
        f"{row}.tenant_id", f"{row}.id", f"max({t}, coalesce({latest}, {t}))", *(f"{row}.{q(c)}" for c in cols),
        raw[0], raw[1], f"{row}._scope", change, run, graph, learned,
    ]
    columns = (
        f"tenant_id, id, _valid_from, {''.join(f'{q(c)}, ' for c in cols)}_raw, _raw_before, _scope, _change, _run_id, "
        "_graph_time, _learned_at"
    )
    # VALUES, not INSERT … SELECT, where it can: a SELECT reading the table it inserts into has SQLite buffer its
    # rows in a temporary b-tree first, made and dropped again for every row a trigger runs for.
    if only_if:
        return f"INSERT INTO {h} ({columns}) SELECT {', '.join(values)} WHERE {only_if};"
    return f"INSERT INTO {h} ({columns}) VALUES ({', '.join(values)});"


def known_rows_sql(mirror: Mirror) -> tuple[str, list[str]]:
    """SQLite: the rows an upsert just added to the mirror (rowid above ``?``) that history already knows (back
    after ``db upgrade --rebuild``, a ``delete: hard`` removal, a move from another scope); and the statements
    comparing one of them (its rowid: ``?1``) with its current version, run in order for each: unchanged, that
    version stays (filled in place, its _raw the mirror row's again); else a new version after it.

    Rare rows, so plain statements per row (the row read from the mirror by its rowid) rather than a trigger,
    whose call every row of an initial mirror would pay: see :func:`first_versions_sql`, run after these."""
    t = mirror.table
    g = graph_time(mirror, "NEW", postgres=False)
    live_t = f"CASE WHEN NEW._deleted_at IS NULL THEN coalesce({g}, NEW._synced_at) ELSE NEW._deleted_at END"
    h, cols = versions_of(t), copied(mirror)
    latest = current(h, "NEW")
    # A row back in the mirror (after a rebuild, a hard removal, a move from another scope) is compared with its
    # current version: unchanged, that version stays (filled in place, its _raw the mirror row's again).
    diff, _news = change_test(mirror, "NEW", "p", postgres=False, had_unknown=True)
    same = (
        f"(NEW._deleted_at IS NULL AND p._change NOT IN ('deleted', 'swept') AND NOT ({diff})) "
        "OR (NEW._deleted_at IS NOT NULL AND p._change IN ('deleted', 'swept'))"
    )
    refill = ", ".join([*(f"{q(c)} = NEW.{q(c)}" for c in cols), "_raw = NULL"])
    diff_here, _news = change_test(mirror, "NEW", h, postgres=False, had_unknown=True)  # no alias in a trigger's UPDATE
    statements = (
        f"UPDATE {h} SET {refill} WHERE _version = {latest} "
        f"AND NEW._deleted_at IS NULL AND _change NOT IN ('deleted', 'swept') AND NOT ({diff_here});\n"
        + _sqlite_version(
            mirror, "NEW", live_t,
            f"CASE WHEN NEW._deleted_at IS NOT NULL THEN {change_kind('NEW')} WHEN EXISTS (SELECT 1 FROM {h} "
            f"WHERE _version = {latest} AND _change NOT IN ('deleted', 'swept')) THEN 'updated' ELSE 'created' END",
            g, "NEW._synced_at", "NEW._sync_run_id",
            only_if=f"NOT EXISTS (SELECT 1 FROM {h} p WHERE p._version = {latest} AND ({same}))",
        )
    )
    known = f"SELECT m.rowid FROM {q(t)} m WHERE m.rowid > ? AND EXISTS (SELECT 1 FROM {h} x WHERE x.tenant_id = m.tenant_id AND x.id = m.id)"
    row = f"(SELECT {{}} FROM {q(t)} WHERE rowid = ?1)"
    return known, [
        re.sub(r'NEW\.("(?:[^"]|"")*"|\w+)', lambda found: row.format(found.group(1)), statement.strip()).rstrip(";")
        for statement in statements.split(";\n")
    ]


def ddl(mirror: Mirror, *, members: bool) -> list[str]:
    """Row triggers (replacing any older ones) for *mirror*'s history on SQLite."""
    t = mirror.table
    g = graph_time(mirror, "NEW", postgres=False)
    live_t = f"CASE WHEN NEW._deleted_at IS NULL THEN coalesce({g}, NEW._synced_at) ELSE NEW._deleted_at END"
    changed, news = change_test(mirror, "NEW", "OLD", postgres=False)
    h = versions_of(t)
    updated = _sqlite_version(
        mirror, "NEW", live_t,
        f"CASE WHEN NEW._deleted_at IS NOT NULL THEN {change_kind('NEW')} WHEN OLD._deleted_at IS NOT NULL "
        "THEN 'created' ELSE 'updated' END",
        g, "NEW._synced_at", "NEW._sync_run_id", ("NULL", "OLD._raw"),
    )
    deleted = _sqlite_version(mirror, "OLD", _SQLITE_NOW, "'deleted'", "NULL", _SQLITE_NOW, "NULL", ("OLD._raw", "OLD._raw"))
    when_updated = f"(NEW._deleted_at IS NULL) <> (OLD._deleted_at IS NULL) OR (NEW._deleted_at IS NULL AND ({changed}))"
    fill = (
        f"UPDATE {h} SET {', '.join(f'{q(c.name)} = NEW.{q(c.name)}' for c in mirror.columns)} "
        f"WHERE _version = {current(h, 'NEW')};"
    )
    triggers = {
        "upd": ("UPDATE", f"WHEN {when_updated}", updated),
        "fill": (
            "UPDATE", f"WHEN NEW._deleted_at IS NULL AND OLD._deleted_at IS NULL AND NOT ({changed}) AND ({news})", fill,
        ),
        "del": ("DELETE", "WHEN OLD._deleted_at IS NULL", deleted),
        "gone": (
            "DELETE", "WHEN OLD._deleted_at IS NOT NULL",
            f"UPDATE {h} SET _raw = OLD._raw WHERE _version = {current(h, 'OLD')} AND _raw IS NULL;",
        ),
    }
    # Rows entering the mirror are versioned by the writer's statements after its upsert (first_versions_sql,
    # known_rows_sql): the INSERT triggers of earlier versions go.
    statements = [f"DROP TRIGGER IF EXISTS {q(f'{t}_history_{kind}')}" for kind in ("ins", "insn")]
    if not mirror.columns:
        del triggers["fill"]
    for kind, (event, when, body) in triggers.items():
        name = q(f"{t}_history_{kind}")
        statements += [
            f"DROP TRIGGER IF EXISTS {name}",
            f"CREATE TRIGGER {name} AFTER {event} ON {q(t)} {when} BEGIN {body} END",
        ]
    if members:  # an interval opens here; the writer closes it at its pass's time (syncer.history.close_members)
        m, mh = f"{t}_members", q(f"{t}_members_history")
        member_triggers = {
            "mins": ("INSERT", f"INSERT INTO {mh} (tenant_id, group_id, member_id, member_type, _valid_from) "
                     "SELECT NEW.tenant_id, NEW.group_id, NEW.member_id, NEW.member_type, NEW._synced_at "
                     f"WHERE NOT EXISTS ({open_interval(mh, 'NEW')});"),
        }
        for kind, (event, body) in member_triggers.items():
            name = q(f"{t}_history_{kind}")
            statements += [
                f"DROP TRIGGER IF EXISTS {name}",
                f"CREATE TRIGGER {name} AFTER {event} ON {q(m)} BEGIN {body} END",
            ]
    return statements
