"""inbox: drop the subscription_id index

Every notification the receiver stores paid for this index (one of four per row, on the hot path of
issue 6's benchmark), and only ``Inbox.replay(subscription_id=...)``, a rare operator action,
used it: that now scans the processed rows instead.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("syncer_inbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_syncer_inbox_subscription_id"))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("syncer_inbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_syncer_inbox_subscription_id"), ["subscription_id"], unique=False)
