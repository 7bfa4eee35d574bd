"""Verified sending domains: an owner's domain, its DKIM keys and DNS checks.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create sending_domains."""
    op.create_table(
        "sending_domains",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("domain", sa.String(253), nullable=False, unique=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("selector", sa.String(63), nullable=False),
        sa.Column("ed25519_public", sa.Text(), nullable=False),
        sa.Column("rsa_public", sa.Text(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("checks", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_sending_domains_owner", "sending_domains", ["owner"])


def downgrade() -> None:
    """Drop sending_domains."""
    op.drop_index("ix_sending_domains_owner", "sending_domains")
    op.drop_table("sending_domains")
