"""Async submission as the API's entry points see it: the scheduler's refusals become HTTP errors."""

from __future__ import annotations

from typing import Any

from hearth.api.errors import ApiError, field_error, not_found
from hearth.api.state import HearthState
from hearth.scheduler.errors import FunctionNotFound, InvalidJob
from hearth.scheduler.submit import submit


async def submit_job(
    state: HearthState,
    name: str,
    event: Any,
    *,
    source: str,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
) -> tuple[str, bool]:
    """(invocation id, created), once the job is stored."""
    if state.registry.get(name) is None:
        raise not_found(name)
    if state.scheduler is None:
        raise ApiError(503, "Unavailable", "the async queue is not running")
    try:
        return await submit(
            state.scheduler, name, event, source=source, idempotency_key=idempotency_key, callback_url=callback_url
        )
    except FunctionNotFound:
        raise not_found(name) from None
    except InvalidJob as exc:
        raise field_error(exc.field, exc.problem) from None
