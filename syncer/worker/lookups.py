"""The owner ids a scope's rows carry that Graph has to be asked for, asked once per scope.

Most owner columns (:mod:`syncer.owners`) are read off the scope's key: a user's GUID, a folder id a
mailbox's folder delta found, a drive id. Some are not ids but names: a user declared by UPN
(``users/alice@contoso.com/...``), a well-known folder (``mailFolders/inbox``), a user's OneDrive
(``users/{user}/drive``). Their ids are looked up with one GET each
(https://learn.microsoft.com/en-us/graph/api/user-get, .../mailfolder-get, .../drive-get) before the
scope's first pass and kept in the scope's state (``syncer_sync_state.owner_ids``, by Graph path), where
the other scopes of the same mailbox find them too: a mailbox's twenty folders ask for its user once. The
rows the scope already holds (from before the owner columns existed, or written while a lookup failed)
are filled then, once.

A lookup Graph refuses (403: the app may read mail but not users; 404) does not stop the pass: the
column stays empty, a warning says why, and the next pass asks again. Throttling and outages fail the
pass as any other request would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Engine

from syncer import owners, resources
from syncer.errors import ForbiddenError, NotFoundError
from syncer.storable import storable
from syncer.worker.scopes import Scope
from syncer.worker.tablesql import fill_statement

if TYPE_CHECKING:
    from syncer.worker.scopestate import ScopeStore
    from syncer.worker.sync import PageSource

__all__ = ["Owners", "known_owners", "resolve_owners", "stored_ids"]

log = logging.getLogger("syncer.worker.lookups")


def _owner_columns(scope: Scope) -> tuple[resources.ResourceType, tuple[str, ...]] | None:
    if scope.container or scope.mirror is None or not scope.mirror.owners:
        return None
    rt = resources.BY_KEY.get(scope.strategy.key)
    return (rt, scope.mirror.owners) if rt is not None else None


def stored_ids(owner_ids: Any) -> dict[str, str]:
    """The ids a scope's state holds, ``{Graph path: id}`` (``syncer_sync_state.owner_ids["ids"]``)."""
    ids = owner_ids.get("ids") if isinstance(owner_ids, Mapping) else None
    if not isinstance(ids, Mapping):
        return {}
    return {str(k): v for k, v in ids.items() if isinstance(v, str) and v}


def known_owners(scope: Scope, owner_ids: Any) -> dict[str, str | None]:
    """The owner columns of *scope* from its key and the ids already looked up (*owner_ids*, the state's)."""
    found = _owner_columns(scope)
    if found is None:
        return {}
    rt, columns = found
    return owners.values_for(rt, columns, scope.key, stored_ids(owner_ids), dict(scope.owners))


@dataclass(frozen=True)
class Owners:
    """The owner columns of a scope's rows (:func:`resolve_owners`), and what is left to record about them."""

    values: dict[str, str | None]
    record: Callable[[Connection], None] | None = None
    """Stores the values in the scope's state and fills the rows the scope already has, in the caller's
    transaction (the pass's first page: under its lease, with its rows); None: nothing to record."""


def resolve_owners(engine: Engine, source: PageSource, store: ScopeStore, owner_ids: Any) -> Owners:
    """The owner columns of the scope's rows, looking up in Graph the ids not known yet (under the scope's
    lease). The state keeps the ids found and the values the scope's rows were last filled with
    (``{"ids": {path: id}, "rows": {column: value}}``): when those change (an id found, a column added by
    ``syncer db upgrade``), the rows the scope already has are filled again. Ids looked up in Graph are
    stored at once (a pass that fails later does not ask Graph again); the rest is left to the pass's
    first page transaction (:attr:`Owners.record`), rather than a transaction of its own per pass."""
    scope = store.scope
    found = _owner_columns(scope)
    if found is None:
        return Owners({})
    rt, columns = found
    declared = dict(scope.owners)
    known = stored_ids(owner_ids)
    lookups = owners.lookups_for(rt, columns, scope.key, declared)
    missing = {path for path in lookups.values() if path not in known}
    new: dict[str, str] = {}
    if missing:
        with engine.connect() as connection:
            for state in store.owner_ids_under(connection):
                new.update({p: i for p, i in stored_ids(state).items() if p in missing})
    looked_up_any = False
    for path in sorted(missing - set(new)):
        try:
            item = source.get_json(f"{path}?$select=id")
        except (ForbiddenError, NotFoundError) as error:
            log.warning("scope %s: the owner id of %s stays empty for now: %s", scope.key, path, error)
            continue
        looked_up = item.get("id") if isinstance(item, Mapping) else None
        if isinstance(looked_up, str) and looked_up:
            new[path] = storable(looked_up)
            looked_up_any = True
    values = owners.values_for(rt, columns, scope.key, {**known, **new}, declared)
    filled = owner_ids.get("rows") if isinstance(owner_ids, Mapping) else None
    if not (new or filled != values) or scope.mirror is None:
        return Owners(values)
    state = {"ids": {**known, **new}, "rows": values}
    spec = scope.mirror
    known_values = {name: value for name, value in values.items() if value is not None}

    def record(connection: Connection) -> None:
        store.update_state(connection, owner_ids=state)
        if known_values:  # syncer.mirror_owners.fill_owners, with a statement built once per table
            params = {"k_tenant": scope.tenant_id, "k_scope": scope.key, **known_values}
            params.update({f"k_{name}": value for name, value in known_values.items()})
            connection.execute(fill_statement(spec, tuple(known_values)), params)

    if not looked_up_any:
        return Owners(values, record)
    with engine.begin() as connection:
        store.renew_lease(connection)
        record(connection)
    return Owners(values)
