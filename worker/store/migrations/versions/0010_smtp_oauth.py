"""A custom SMTP server may log in with an OAuth grant (XOAUTH2) instead of a password.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add accounts.auth and accounts.provider."""
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("auth", sa.String(16), nullable=True))
        batch.add_column(sa.Column("provider", sa.String(16), nullable=True))


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("provider")
        batch.drop_column("auth")
