"""namespaces: a user's function is keyed `<user>.<name>`; function-name columns widen to 127

Revision ID: 0008_namespaces
Revises: 0006_jobs, 0007_users
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_namespaces"
down_revision: str | Sequence[str] | None = ("0006_jobs", "0007_users")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME_COLUMNS = (
    ("functions", "name"),
    ("invocations", "function_name"),
    ("invocation_rollups", "function_name"),
    ("resource_samples", "function_name"),
    ("builds", "function_name"),
    ("jobs", "function_name"),
    ("schedule_ticks", "function_name"),
)


def _rename(renames: list[tuple[str, str]]) -> None:
    bind = op.get_bind()
    for old, new in renames:
        for table, column in NAME_COLUMNS:
            bind.execute(sa.text(f"UPDATE {table} SET {column} = :new WHERE {column} = :old"), {"old": old, "new": new})


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":  # SQLite does not enforce VARCHAR lengths
        for table, column in NAME_COLUMNS:
            op.alter_column(table, column, type_=sa.String(127), existing_type=sa.String(63))
    owned = op.get_bind().execute(sa.text("SELECT name, owner FROM functions WHERE owner != 'admin'")).all()
    _rename([(name, f"{owner}.{name}") for name, owner in owned])


def downgrade() -> None:
    owned = op.get_bind().execute(sa.text("SELECT name, owner FROM functions WHERE owner != 'admin'")).all()
    _rename([(name, name.split(".", 1)[1]) for name, _ in owned if "." in name])
    if op.get_bind().dialect.name != "sqlite":
        for table, column in NAME_COLUMNS:
            op.alter_column(table, column, type_=sa.String(63), existing_type=sa.String(127))
