"""Failed Sends and suppressions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create failed_sends and suppressions."""
    op.create_table(
        "failed_sends",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), nullable=False, index=True),
        sa.Column("owner", sa.String(200), nullable=False, index=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reply_code", sa.Integer(), nullable=True),
        sa.Column("enhanced_status", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("hard", sa.Boolean(), nullable=False),
        sa.Column("diagnostic", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(998), nullable=False),
        sa.Column("identity", sa.String(400), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("resend_job_id", sa.String(36), nullable=True),
        sa.Column("job_metadata", sa.JSON(), nullable=False),
        sa.Column("job", sa.JSON(), nullable=True),
        sa.UniqueConstraint("job_id", "recipient", "kind", name="uq_failed_job_rcpt_kind"),
    )
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(200), nullable=False, index=True),
        sa.Column("address", sa.String(320), nullable=False, index=True),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("source_job_id", sa.String(36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner", "address", name="uq_suppression_owner_address"),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("suppressions")
    op.drop_table("failed_sends")
