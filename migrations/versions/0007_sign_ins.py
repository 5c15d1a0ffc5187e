"""sign_ins: which delegated accounts must sign in again

A worker pauses the scopes of a delegated account whose refresh token was refused (``invalid_grant``)
and records it here, so that ``syncer status`` and the receiver's ``/metrics`` can say which account
must run ``syncer login``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "syncer_sign_ins",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False, comment="tenant entry name in subscriptions.yaml"),
        sa.Column("account", sa.String(length=320), nullable=False, comment="the user principal name declared"),
        sa.Column(
            "required_since",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="refresh refused: `syncer login NAME` needed; null = signed in",
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_syncer_sign_ins")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("syncer_sign_ins")
