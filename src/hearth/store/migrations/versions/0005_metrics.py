"""metrics: per-invocation CPU/memory/init time, per-minute and per-hour aggregates, resource samples

Revision ID: 0005_metrics
Revises: 0004_builds
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_metrics"
down_revision: str | None = "0004_builds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invocations") as batch:
        batch.add_column(sa.Column("init_ms", sa.Float(), nullable=True))
        batch.add_column(sa.Column("cpu_ms", sa.Float(), nullable=True))
        batch.add_column(sa.Column("memory_peak_bytes", sa.BigInteger(), nullable=True))
    op.create_table(
        "invocation_rollups",
        sa.Column("function_name", sa.String(length=63), nullable=False),
        sa.Column("width_s", sa.Integer(), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("timeouts", sa.Integer(), nullable=False),
        sa.Column("throttles", sa.Integer(), nullable=False),
        sa.Column("cold_starts", sa.Integer(), nullable=False),
        sa.Column("duration_sum_ms", sa.Float(), nullable=False),
        sa.Column("duration_max_ms", sa.Float(), nullable=False),
        sa.Column("init_sum_ms", sa.Float(), nullable=False),
        sa.Column("cpu_sum_ms", sa.Float(), nullable=False),
        sa.Column("memory_peak_bytes", sa.BigInteger(), nullable=False),
        sa.Column("histogram", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("function_name", "width_s", "start"),
    )
    op.create_index("ix_invocation_rollups_width_start", "invocation_rollups", ["width_s", "start"])
    op.create_table(
        "resource_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("step_s", sa.Float(), nullable=False),
        sa.Column("function_name", sa.String(length=63), nullable=False),
        sa.Column("sandboxes", sa.Integer(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("memory_peak_bytes", sa.BigInteger(), nullable=False),
        sa.Column("memory_total_bytes", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_resource_samples_function_ts", "resource_samples", ["function_name", "ts"])
    op.create_index("ix_resource_samples_ts", "resource_samples", ["ts"])
    # /api/invocations?status=… pages newest first within one status
    op.create_index("ix_invocations_status_started", "invocations", ["status", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_invocations_status_started", table_name="invocations")
    op.drop_table("resource_samples")
    op.drop_table("invocation_rollups")
    with op.batch_alter_table("invocations") as batch:
        batch.drop_column("memory_peak_bytes")
        batch.drop_column("cpu_ms")
        batch.drop_column("init_ms")
