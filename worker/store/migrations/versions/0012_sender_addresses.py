"""Single addresses an owner sends as on MSC, confirmed by a mailed link.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create sender_addresses."""
    op.create_table(
        "sender_addresses",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("owner", "address", name="uq_sender_owner_address"),
    )
    op.create_index("ix_sender_addresses_owner", "sender_addresses", ["owner"])


def downgrade() -> None:
    """Drop sender_addresses."""
    op.drop_index("ix_sender_addresses_owner", "sender_addresses")
    op.drop_table("sender_addresses")
