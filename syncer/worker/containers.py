"""Container scopes: a scope whose delta lists child scopes (folders) rather than mirror rows.

Graph's delta for messages, contacts and to-do tasks works per folder (or list), not across a whole
mailbox (https://learn.microsoft.com/en-us/graph/api/message-delta). So a declaration over a mailbox
becomes a *container* scope (:mod:`syncer.worker.scopes`) whose pass runs the folders' delta
(``mailFolders/delta``) and, for each folder it reports, registers a child scope (dirty at once: its
first pass enumerates it) or forgets a deleted one with its rows. A full round of the container
sweeps the children it did not see.

The pass (:mod:`syncer.worker.sync`) treats the container like any other scope: its pages go to a
:class:`ContainerWriter` instead of a :class:`~syncer.worker.writer.RowWriter`, through the same
``PageWriter`` interface. The children's state rows are :mod:`syncer.worker.scopestate`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from syncer.worker.scopes import Scope, child_scope, folder_of
from syncer.worker.scopestate import drop_scope, ensure_scope_rows, keys_under
from syncer.worker.writer import PageOutcome, removal_of

__all__ = ["ContainerWriter", "children_of"]


class ContainerWriter:
    """The pages of a container scope, written as child scopes into scope state (a ``PageWriter``)."""

    def __init__(self, container: Scope) -> None:
        self.container = container
        self.seen: set[str] | None = None
        """Child keys seen by a full round that started in this pass (None: nothing to sweep by, the
        round is incremental or resumed after a crash, when the children seen before it are unknown)."""

    def begin_round(self, *, full: bool, resumed: bool) -> None:
        """A round starts (or restarts): a full round from its first page can sweep at its end."""
        self.seen = set() if full and not resumed else None

    def apply(
        self, connection: Connection, items: Sequence[Mapping[str, Any]], *, now: datetime, round_id: int
    ) -> PageOutcome:
        """Register the folders of one page as child scopes (dirty), forget the removed ones with their rows."""
        added: list[Scope] = []
        removed: list[Scope] = []
        for item in items:
            folder = item.get("id")
            if folder is None:
                continue
            child = child_scope(self.container, str(folder))
            if removal_of(item, deleted_facet=False) is not None:
                removed.append(child)
                if self.seen is not None:
                    self.seen.discard(child.key)
            else:
                added.append(child)
                if self.seen is not None:
                    self.seen.add(child.key)
        # New folders are dirty at once: their first pass enumerates them.
        ensure_scope_rows(connection, added, dirty=True, now=now)
        deleted = sum(_drop_child(connection, child, now=now) for child in removed)
        return PageOutcome(upserted=len(added), deleted=deleted)

    def sweep(self, connection: Connection, *, round_id: int, now: datetime, round_started: datetime | None) -> int:
        """At the end of a full round: forget the children it did not see; how many mirror rows went."""
        if self.seen is None:
            return 0
        container = self.container
        total = 0
        for child in _children(connection, container):
            if child.key not in self.seen:
                total += _drop_child(connection, child, now=now)
        return total


def _drop_child(connection: Connection, child: Scope, *, now: datetime) -> int:
    dropped = drop_scope(
        connection, child.tenant_id, child.key, mirror_spec=child.mirror, delete=child.delete, reason="deleted", now=now,
    )
    return dropped or 0


def _children(connection: Connection, container: Scope) -> list[Scope]:
    found = []
    for key in keys_under(connection, container.tenant_id, container.parent_key):
        folder = folder_of(key, container)
        if folder is not None and key != container.key:
            found.append(child_scope(container, folder))
    return found


def children_of(engine: Engine, container: Scope) -> list[Scope]:
    """The folder scopes a container scope has found so far."""
    with engine.connect() as connection:
        return _children(connection, container)
