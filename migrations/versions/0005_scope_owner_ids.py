"""sync state: the owner ids looked up for each scope

Mirror rows carry their owners as columns (a mailbox's user_id, its folder_id); where the declaration
names an owner rather than giving its id (a UPN, ``inbox``), the worker looks the id up once per
scope and keeps it here, so that no pass asks again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("syncer_sync_state", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "owner_ids",
                sa.JSON(),
                nullable=True,
                comment="owner column -> id looked up once (a user named by UPN, a folder by a well-known name)",
            )
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("syncer_sync_state", schema=None) as batch_op:
        batch_op.drop_column("owner_ids")
