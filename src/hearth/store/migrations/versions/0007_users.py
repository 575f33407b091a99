"""users and API keys; functions get an owner

Revision ID: 0007_users
Revises: 0005_metrics
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_users"
down_revision: str | None = "0005_metrics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("max_functions", sa.Integer(), nullable=True),
        sa.Column("max_sandboxes", sa.Integer(), nullable=True),
        sa.Column("max_memory_mb", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=24), nullable=False),
        sa.Column("user_name", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_api_keys_user_name", "api_keys", ["user_name"])
    with op.batch_alter_table("functions") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=63), nullable=False, server_default="admin"))
    op.create_index("ix_functions_owner", "functions", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_functions_owner", table_name="functions")
    with op.batch_alter_table("functions") as batch:
        batch.drop_column("owner")
    op.drop_table("api_keys")
    op.drop_table("users")
