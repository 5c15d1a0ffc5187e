"""sync_state: listed_at, and the indexes that keep the safety net and the due query off full scans

At 30,000 scopes the worker's bookkeeping read every scope on every safety-net tick (the clean scopes, then
every full round ever recorded in ``syncer_sync_runs`` for the calendarView re-anchor and the channel relist),
and every scope on every drain (the due query had no index it could use). ``listed_at`` keeps, on the scope's
row, when it was last read from its first page (a full round started, or a relist); it is filled here from the
pass records (or now, for a scope without any: counted from the migration, as the worker counted from its start).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DUE = "dirty_since IS NOT NULL OR resync_requested IS {true} OR page_link IS NOT NULL"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("syncer_sync_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True,
                                      comment="when the scope was last read from its first page: a full round "
                                      "started, or a relist"))
        batch_op.create_index(batch_op.f("ix_syncer_sync_state_name_listed_at"), ["name", "listed_at"], unique=False)
    sqlite = op.get_bind().dialect.name == "sqlite"
    # The predicate as syncer.schema.sync_due() renders it on each backend (SQLite matches it term by term).
    where = sa.text(DUE.format(true="1" if sqlite else "true"))
    op.create_index("ix_syncer_sync_state_due", "syncer_sync_state", ["dirty_since"], unique=False,
                    sqlite_where=where, postgresql_where=where)
    clean = sa.text("dirty_since IS NULL")
    op.create_index("ix_syncer_sync_state_name_last_success_at", "syncer_sync_state", ["name", "last_success_at"],
                    unique=False, sqlite_where=clean, postgresql_where=clean)
    state = sa.table("syncer_sync_state", sa.column("tenant_id"), sa.column("scope_key"),
                     sa.column("listed_at", sa.DateTime(timezone=True)))
    runs = sa.table("syncer_sync_runs", sa.column("tenant_id"), sa.column("scope_key"), sa.column("started_at"),
                    sa.column("full_round", sa.Boolean), sa.column("outcome"))
    last_full = (
        sa.select(sa.func.max(runs.c.started_at))
        .where(runs.c.tenant_id == state.c.tenant_id, runs.c.scope_key == state.c.scope_key,
               runs.c.full_round.is_(True), runs.c.outcome == "ok")
        .scalar_subquery()
    )
    now = datetime.now(UTC).replace(tzinfo=None) if sqlite else datetime.now(UTC)
    op.execute(sa.update(state).values(listed_at=sa.func.coalesce(last_full, now)))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_syncer_sync_state_due", table_name="syncer_sync_state")
    op.drop_index("ix_syncer_sync_state_name_last_success_at", table_name="syncer_sync_state")
    with op.batch_alter_table("syncer_sync_state", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_syncer_sync_state_name_listed_at"))
        batch_op.drop_column("listed_at")
