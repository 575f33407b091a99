"""jobs: the durable queue of async invocations, and cron schedule ticks

Revision ID: 0006_jobs
Revises: 0004_builds (a branch of its own; migrate() upgrades every head)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_jobs"
down_revision: str | None = "0004_builds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("function_name", sa.String(length=63), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("interruptions", sa.Integer(), nullable=False),
        sa.Column("run_at", sa.Float(), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("last_record_id", sa.String(length=48), nullable=True),
        sa.Column("dead_letter", sa.Boolean(), nullable=False),
        sa.Column("callback_url", sa.String(length=2048), nullable=True),
        sa.Column("callback_status", sa.String(length=64), nullable=True),
        sa.Column("callback_attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("function_name", "idempotency_key", name="uq_jobs_idempotency"),
    )
    op.create_index("ix_jobs_claim", "jobs", ["status", "function_name", "run_at"])
    op.create_index("ix_jobs_function_created", "jobs", ["function_name", "created_at"])
    op.create_index("ix_jobs_callback", "jobs", ["callback_status"])
    op.create_table(
        "schedule_ticks",
        sa.Column("function_name", sa.String(length=63), nullable=False),
        sa.Column("expression", sa.String(length=128), nullable=False),
        sa.Column("last_tick", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("function_name", "expression"),
    )


def downgrade() -> None:
    op.drop_table("schedule_ticks")
    op.drop_index("ix_jobs_callback", table_name="jobs")
    op.drop_index("ix_jobs_function_created", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.drop_table("jobs")
