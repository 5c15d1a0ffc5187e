"""Which subscriptions.yaml the database was last brought in line with: the owner of
``syncer_applied_spec``.

``syncer db upgrade`` and ``syncer reconcile`` apply a spec: they shape the mirror tables and the
live subscriptions after it, and record its fingerprint here. A worker compares that fingerprint
with its own copy's, at start and before each job, and never acts on a spec older than the one
applied (the fingerprint is :attr:`syncer.spec.Spec.fingerprint`): it stops and starts again (reloading the file), or leaves that to its supervisor. Without
this a worker left running across an edit kept its old declarations: it acknowledged the new
subscriptions' notifications without a pass and spent the resync that ``db upgrade`` asked for with
the old columns (the new column stayed NULL in every row, even after a restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncer import schema
from syncer.errors import SyncerError

KEY = "spec"


@dataclass(frozen=True)
class Applied:
    fingerprint: str
    applied_by: str
    applied_at: datetime
    path: str

    def describe(self) -> str:
        return f"{self.path} as applied by `syncer {self.applied_by}` at {self.applied_at:%Y-%m-%d %H:%M:%SZ}"


class SpecOutdated(SyncerError):
    """This process's subscriptions.yaml is not the one the database was last brought in line with."""

    def __init__(self, applied: Applied, mine: str) -> None:
        super().__init__(
            f"the database follows another subscriptions.yaml ({applied.describe()}, fingerprint "
            f"{applied.fingerprint[:12]}) than this process (fingerprint {mine[:12]}): run `syncer db upgrade` "
            "and `syncer reconcile` with the file this process should follow, or start it with the file they used"
        )
        self.applied = applied


def record(connection: Connection, spec_fingerprint: str, *, by: str, path: str) -> None:
    """Record that the spec with *spec_fingerprint* was applied (in the caller's transaction)."""
    t = schema.applied_spec
    values = {"fingerprint": spec_fingerprint, "applied_by": by, "applied_at": datetime.now(UTC), "path": path[-1000:]}
    if connection.execute(sa.update(t).where(t.c.key == KEY).values(**values)).rowcount == 0:
        connection.execute(sa.insert(t).values(key=KEY, **values))


def current(connection: Connection) -> Applied | None:
    """The spec last applied; None before the first ``db upgrade`` that recorded one."""
    t = schema.applied_spec
    row = connection.execute(sa.select(t).where(t.c.key == KEY)).first()
    if row is None:
        return None
    return Applied(row.fingerprint, row.applied_by, row.applied_at, row.path)


def outdated(connection: Connection, spec_fingerprint: str) -> Applied | None:
    """The applied spec when it is not *spec_fingerprint* (this process must not act); else None.

    A spec with no fingerprint (built in code, not read from a file) is never outdated."""
    if not spec_fingerprint:
        return None
    applied = current(connection)
    return applied if applied is not None and applied.fingerprint != spec_fingerprint else None
