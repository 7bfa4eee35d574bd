"""Message history: every job's outcome, and its recipients to search by.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create message_history and message_history_recipients."""
    op.create_table(
        "message_history",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), nullable=False, unique=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_metadata", sa.JSON(), nullable=False),
        sa.Column("status", sa.JSON(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_message_history_owner_id", "message_history", ["owner", "id"])
    op.create_index("ix_message_history_finished_at", "message_history", ["finished_at"])
    op.create_table(
        "message_history_recipients",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
    )
    op.create_index(
        "ix_message_history_recipients_owner_address",
        "message_history_recipients",
        ["owner", sa.text("lower(address)")],
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("message_history_recipients")
    op.drop_table("message_history")
