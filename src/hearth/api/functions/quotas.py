"""Per-user quotas, checked when a function is created or updated (403 QuotaExceeded).

Checking at deploy time bounds the running total exactly: a function never runs more than
`max_instances` sandboxes of `memory_mb` each.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hearth.api.auth import ADMIN
from hearth.api.errors import ApiError
from hearth.store.models import Function, FunctionVersion, User


def check_quota(session: Session, owner: str, name: str, values: dict[str, Any]) -> None:
    """Raise if `owner` having function `name` with `values` would exceed one of their quotas."""
    if owner == ADMIN:
        return
    user = session.get(User, owner)
    if user is None:
        raise ApiError(403, "Forbidden", f"user {owner!r} no longer exists")
    others = session.execute(
        select(FunctionVersion.memory_mb, FunctionVersion.max_instances)
        .join(Function, FunctionVersion.function_id == Function.id)
        .where(Function.owner == owner, Function.name != name, FunctionVersion.version == Function.current_version)
    ).all()
    usage = {
        "max_functions": len(others) + 1,
        "max_sandboxes": sum(instances for _, instances in others) + values["max_instances"],
        "max_memory_mb": sum(memory * instances for memory, instances in others)
        + values["memory_mb"] * values["max_instances"],
    }
    for quota, used in usage.items():
        limit = getattr(user, quota)
        if limit is not None and used > limit:
            raise ApiError(
                403,
                "QuotaExceeded",
                f"{quota} of user {owner!r} is {limit}; this deploy would make it {used}",
                quota=quota,
                limit=limit,
                requested=used,
            )
