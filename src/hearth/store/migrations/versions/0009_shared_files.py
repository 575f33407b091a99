"""blobs: function code and dependency layers kept in the store, for several nodes; builds know their node

Revision ID: 0009_shared_files
Revises: 0008_namespaces
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_shared_files"
down_revision: str | None = "0008_namespaces"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("id", sa.String(length=96), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("node", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("node")
    op.drop_table("blobs")
