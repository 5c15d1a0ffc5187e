"""applied_spec: the subscriptions.yaml the database was last brought in line with

A worker left running while its spec was edited, upgraded and reconciled kept acting on its old
copy: it acknowledged the new subscriptions' notifications without a pass and spent the resync that
`db upgrade` asked for with the old columns. `db upgrade` and `reconcile` now record the spec's
fingerprint here, and workers compare it with their own (syncer.applied).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "syncer_applied_spec",
        sa.Column("key", sa.String(length=32), nullable=False, comment="always 'spec'"),
        sa.Column("fingerprint", sa.String(length=64), nullable=False, comment="sha256 of the spec's declarations"),
        sa.Column("applied_by", sa.String(length=64), nullable=False, comment="db upgrade | reconcile"),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_syncer_applied_spec")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("syncer_applied_spec")
