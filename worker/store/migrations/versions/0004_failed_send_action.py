"""A Failed Send keeps the DSN action of a bounce (``failed``, ``delayed`` ...).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add failed_sends.action."""
    with op.batch_alter_table("failed_sends") as batch:
        batch.add_column(sa.Column("action", sa.String(16), nullable=True))


def downgrade() -> None:
    """Drop failed_sends.action."""
    with op.batch_alter_table("failed_sends") as batch:
        batch.drop_column("action")
