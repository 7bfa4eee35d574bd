"""A failed job's content is kept once, in job_contents, not in each of its Failed Send rows.

Each row used to hold the whole job, attachments included, once per recipient: a 10 MiB job to
100 suppressed addresses wrote ~1 GB. The rows' identity becomes TEXT: a 200-character name and a
254-character address pass validation and did not fit in 400 characters.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create job_contents, move each job's content there once, drop failed_sends.job."""
    op.create_table(
        "job_contents",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("job", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    # a row without a job (a bounce) holds JSON null, not SQL NULL: only objects are contents
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "INSERT INTO job_contents (job_id, owner, job, created_at) "
            "SELECT DISTINCT ON (job_id) job_id, owner, job, created_at FROM failed_sends "
            "WHERE json_typeof(job) = 'object' ORDER BY job_id, id"
        )
        op.alter_column("failed_sends", "identity", type_=sa.Text(), existing_nullable=False)
        op.drop_column("failed_sends", "job")
        return
    # SQLite: the first row of a job wins. Its ALTER TABLE cannot change a type: the table is
    # copied (batch mode), without the expression index, which reflection does not carry
    op.execute(
        "INSERT OR IGNORE INTO job_contents (job_id, owner, job, created_at) "
        "SELECT job_id, owner, job, created_at FROM failed_sends "
        "WHERE json_type(job) = 'object' ORDER BY id"
    )
    op.drop_index("ix_failed_sends_owner_recipient", table_name="failed_sends")
    with op.batch_alter_table("failed_sends", recreate="always") as batch:
        batch.alter_column("identity", type_=sa.Text(), existing_nullable=False)
        batch.drop_column("job")
    op.create_index(
        "ix_failed_sends_owner_recipient", "failed_sends", ["owner", sa.text("lower(recipient)")]
    )


def downgrade() -> None:
    """Put each job's content back into its rows and drop job_contents."""
    op.add_column("failed_sends", sa.Column("job", sa.JSON(), nullable=True))
    op.execute(
        "UPDATE failed_sends SET job = (SELECT c.job FROM job_contents c "
        "WHERE c.job_id = failed_sends.job_id)"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column(
            "failed_sends",
            "identity",
            type_=sa.String(400),
            existing_nullable=False,
            postgresql_using="left(identity, 400)",
        )
    op.drop_table("job_contents")
