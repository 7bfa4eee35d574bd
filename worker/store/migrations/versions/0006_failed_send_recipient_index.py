"""Failed Sends are searched by recipient (per owner, whatever the address's case).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index failed_sends on (owner, lower(recipient))."""
    op.create_index(
        "ix_failed_sends_owner_recipient", "failed_sends", ["owner", sa.text("lower(recipient)")]
    )


def downgrade() -> None:
    """Drop the index."""
    op.drop_index("ix_failed_sends_owner_recipient", table_name="failed_sends")
