"""sync_runs: index started_at

The status page (`syncer ui`) charts the last 24 hours of passes (rows written, throttled passes);
without this index each load of the page read every pass of the retention period (30 days by
default: millions of rows on a large tenant). One index entry per pass costs little: passes are
orders of magnitude rarer than notifications.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("syncer_sync_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_syncer_sync_runs_started_at"), ["started_at"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("syncer_sync_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_syncer_sync_runs_started_at"))
