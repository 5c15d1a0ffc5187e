"""The owner columns of mirror tables that exist already: added by ``syncer db upgrade``, filled per scope.

Owner columns (:mod:`syncer.owners`: a mailbox's ``user_id``, a folder's ``folder_id``) take the same
value on every row of a scope, so a table made before they existed is filled from ``_scope`` alone, one
``UPDATE`` per scope, with no resync: what the scope's key holds (a user's GUID, a folder id) and the ids
earlier passes looked up (``syncer_sync_state.owner_ids``). An owner the key only names (a UPN, ``inbox``)
needs Graph, which an upgrade does not call, and an owner the declaration names but the key does not (the
group of a library synced as ``drives/{id}/root``) needs the spec's resolved declaration: those rows stay
empty until the scope's next pass fills them (:mod:`syncer.worker.lookups`), and the upgrade says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from syncer import owners, schema

if TYPE_CHECKING:
    from syncer.spec import Subscription

OWNER_TYPE = sa.String(512)
"""The type of an owner column taken from the scope: an id, like the ``id`` column."""


def fill_owners(
    connection: sa.Connection, table: sa.Table, tenant_id: str, scope_key: str, values: dict[str, str | None]
) -> int:
    """Set the owner columns *values* (None: left as they are) on the rows of one scope; how many rows changed."""
    known = {name: value for name, value in values.items() if value is not None and name in table.c}
    if not known:
        return 0
    stale = sa.or_(*(sa.or_(table.c[name].is_(None), table.c[name] != value) for name, value in known.items()))
    stmt = sa.update(table).where(table.c.tenant_id == tenant_id, table.c._scope == scope_key, stale).values(known)
    return max(connection.execute(stmt).rowcount, 0)


def _looked_up(connection: sa.Connection, subscription: Subscription) -> dict[str, str]:
    s = schema.sync_state
    found: dict[str, str] = {}
    rows = connection.execute(
        sa.select(s.c.owner_ids).where(s.c.name == subscription.name, s.c.owner_ids.is_not(None))
    )
    for (state,) in rows:
        ids = state.get("ids") if isinstance(state, dict) else None
        if isinstance(ids, dict):
            found.update({str(k): v for k, v in ids.items() if isinstance(v, str) and v})
    return found


def add_owner_columns(connection: sa.Connection, subscription: Subscription, table: sa.Table) -> list[str]:
    """Add the owner columns *table* lacks and fill them for its rows; one line per column set added."""
    present = {c["name"] for c in sa.inspect(connection).get_columns(table.name)}
    added = [name for name in subscription.mirror.owners if name not in present]
    if not added:
        return []
    preparer = connection.dialect.identifier_preparer
    type_sql = OWNER_TYPE.compile(dialect=connection.dialect)
    for name in added:
        connection.execute(
            sa.text(f"ALTER TABLE {preparer.quote(table.name)} ADD COLUMN {preparer.quote(name)} {type_sql}")
        )
    rt = subscription.resource_type
    looked_up = _looked_up(connection, subscription)
    filled = waiting = unknown = 0
    pending: set[str] = set()
    per_scope: Sequence[Any] = connection.execute(
        sa.select(table.c.tenant_id, table.c._scope, sa.func.count()).group_by(table.c.tenant_id, table.c._scope)
    ).all()
    for tenant_id, key, count in per_scope:
        values, lookups = owners.plan(rt, added, key)
        for column, path in lookups.items():
            values[column] = looked_up.get(path)
        fill_owners(connection, table, tenant_id, key, values)
        if all(values[c] is not None for c in added):
            filled += count
        elif any(column in lookups and values[column] is None for column in added):
            waiting += count
            pending |= {path for column, path in lookups.items() if values[column] is None}
        else:
            unknown += count
    line = f"added owner columns {table.name}.{', '.join(added)} (from each row's scope): {filled} rows filled"
    if waiting:
        named = sorted(pending)
        shown = ", ".join(named[:3]) + (f" and {len(named) - 3} more" if len(named) > 3 else "")
        line += (
            f"; {waiting} rows wait for their scope's next pass, which looks up in Graph the ids the spec names "
            f"by UPN or well-known name ({shown})"
        )
    if unknown:
        line += (
            f"; {unknown} rows take the owners their declaration names (a library's group or site) at their "
            "scope's next pass"
        )
    return [line]
