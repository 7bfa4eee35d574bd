"""Connected accounts (Gmail, custom SMTP) with encrypted secrets, and preferred channels.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create accounts and channel_preferences."""
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(200), nullable=False, index=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("address", sa.String(320), nullable=True),
        sa.Column("client_id", sa.String(300), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("security", sa.String(16), nullable=True),
        sa.Column("username", sa.String(320), nullable=True),
        sa.Column("ca_pem", sa.Text(), nullable=True),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner", "channel", name="uq_account_owner_channel"),
    )
    op.create_table(
        "channel_preferences",
        sa.Column("owner", sa.String(200), primary_key=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("channel_preferences")
    op.drop_table("accounts")
