"""syncer_sync_runs.full renamed full_round

FULL is a reserved word in PostgreSQL (FULL JOIN): every hand-written query on the pass records had
to quote the column. The values are kept.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    # batch_alter_table: SQLite renames in place (3.25+); PostgreSQL gets a plain ALTER TABLE ... RENAME COLUMN.
    with op.batch_alter_table("syncer_sync_runs") as batch:
        batch.alter_column("full", new_column_name="full_round")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("syncer_sync_runs") as batch:
        batch.alter_column("full_round", new_column_name="full")
