"""Whether a running worker still follows the spec the database was brought in line with.

Checked before each job (one primary-key read) and by each pass (its table's columns, see
:func:`layout_outdated`). The first time it is not, the worker stops starting work, lets the passes
in flight end at their next commit and shuts its scheduler down; ``syncer worker`` then starts again
on the file as it is now (or exits for its supervisor, ``--on-spec-change exit``). See
:mod:`syncer.applied` for why.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from syncer import applied, schema
from syncer.mirror import layout_of
from syncer.spec import Mirror

log = logging.getLogger("syncer.worker")


class SpecWatch:
    """Tells whether the worker's spec (by its fingerprint) is still the applied one."""

    def __init__(self, engine: Engine, fingerprint: str) -> None:
        self.engine = engine
        self.fingerprint = fingerprint
        self.reason: str | None = None
        """Why the worker stopped following its spec; None while it follows it."""
        self._lock = threading.Lock()
        self._on_outdated: list[Callable[[], None]] = []

    def on_outdated(self, callback: Callable[[], None]) -> None:
        """Call *callback* (once) when the spec turns out outdated."""
        self._on_outdated.append(callback)

    def current(self) -> bool:
        """True while the database follows this worker's spec (or records none)."""
        if self.reason is not None:
            return False
        if not self.fingerprint:
            return True
        with self.engine.connect() as connection:
            found = applied.outdated(connection, self.fingerprint)
        if found is None:
            return True
        self.report(f"subscriptions.yaml was applied anew ({found.describe()})")
        return False

    def report(self, reason: str) -> None:
        """Stop following the spec, for *reason* (the first reason wins)."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            callbacks, self._on_outdated = self._on_outdated, []
        log.warning("%s: this worker stops rather than act on its older copy of the spec", reason)
        for callback in callbacks:
            callback()


def layout_outdated(connection: Connection, mirror: Mirror | None) -> str | None:
    """Why a pass must not write *mirror*'s table with *mirror*'s columns (None: it may).

    ``db upgrade`` records each mirror table's columns as it applied them; a pass whose declaration
    says otherwise runs on another spec than the one applied (a worker left running across an edit,
    or a new file not yet upgraded), and would write rows without the new columns, or spend a resync
    requested for them."""
    if mirror is None:
        return None
    t = schema.mirror_tables
    recorded = connection.execute(sa.select(t.c.columns).where(t.c.table_name == mirror.table)).scalar_one_or_none()
    return layout_differs(mirror, recorded)


def layout_differs(mirror: Mirror | None, recorded: Any) -> str | None:
    """:func:`layout_outdated` on the columns *recorded* for *mirror*'s table (None: not recorded)."""
    if mirror is None or recorded is None:
        return None  # not recorded (a table from before syncer recorded layouts): nothing to compare
    if recorded == _layout(mirror):
        return None
    return (
        f"the columns of table {mirror.table} in the database are not those this process declares: "
        "run `syncer db upgrade` with the spec this process follows, or restart it on the spec applied"
    )


@lru_cache(maxsize=1024)
def _layout(mirror: Mirror) -> list[dict[str, str]]:
    return [c.as_dict() for c in layout_of(mirror)]
