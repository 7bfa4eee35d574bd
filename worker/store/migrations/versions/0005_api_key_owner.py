"""An API key may be bound to one owner.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add api_keys.owner (NULL: every owner, what every existing key could do)."""
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("owner", sa.String(200), nullable=True))


def downgrade() -> None:
    """Drop api_keys.owner."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("owner")
