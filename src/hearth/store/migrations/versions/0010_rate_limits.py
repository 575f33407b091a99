"""users get a request rate limit; resource samples say which node took them

Revision ID: 0010_rate_limits
Revises: 0009_shared_files
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_rate_limits"
down_revision: str | None = "0009_shared_files"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("max_requests_per_s", sa.Float(), nullable=True))
    with op.batch_alter_table("resource_samples") as batch:
        batch.add_column(sa.Column("node", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("resource_samples") as batch:
        batch.drop_column("node")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("max_requests_per_s")
