"""sync engine: scope parents and the state of a round in progress

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("syncer_sync_state", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "parent_key",
                sa.String(length=500),
                nullable=True,
                comment="the subscription-level scope this one was expanded from (a mailbox for its folders)",
            )
        )
        batch_op.add_column(
            sa.Column("page_link", sa.Text(), nullable=True, comment="nextLink of an unfinished round: resume here")
        )
        batch_op.add_column(
            sa.Column(
                "round_id", sa.BigInteger(), nullable=True, comment="sync run that started the round in progress"
            )
        )
        batch_op.add_column(
            sa.Column(
                "round_full",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
                comment="the round in progress enumerates everything: sweep unseen rows at its end",
            )
        )
        batch_op.add_column(
            sa.Column(
                "failures", sa.Integer(), server_default="0", nullable=False, comment="consecutive failed passes"
            )
        )
        batch_op.create_index(
            batch_op.f("ix_syncer_sync_state_tenant_id_parent_key"), ["tenant_id", "parent_key"], unique=False
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("syncer_sync_state", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_syncer_sync_state_tenant_id_parent_key"))
        batch_op.drop_column("failures")
        batch_op.drop_column("round_full")
        batch_op.drop_column("round_id")
        batch_op.drop_column("page_link")
        batch_op.drop_column("parent_key")
