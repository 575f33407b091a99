"""/api/invocations (records, paged newest first) and /api/functions/{name}/logs (+ SSE stream)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from hearth.api.auth import principal_of, require_api_key
from hearth.api.dependencies import State, hearth_state
from hearth.api.errors import ApiError, not_found
from hearth.api.metrics.service import run_query, since_of
from hearth.api.namespaces import resolve
from hearth.api.server import SHUTTING_DOWN
from hearth.metrics.queries import format_cursor, parse_cursor
from hearth.store.models import Invocation

router = APIRouter(prefix="/api", tags=["invocations"], dependencies=[Depends(require_api_key)])
STATUSES = ("ok", "error", "timeout", "oom", "crashed", "throttled")
HEARTBEAT_S = 15.0


def visible_functions(request: Request) -> set[str] | None:
    """None for an admin; else the caller's functions (records of deleted ones are admin-only)."""
    principal = principal_of(request)
    if principal.is_admin:
        return None
    registry = hearth_state(request).registry
    return {spec.name for spec in registry.all() if registry.owner_of(spec.name) == principal.user}


def record_out(record: Invocation, *, logs: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": record.id,
        "function": record.function_name,
        "version": record.version,
        "mode": record.mode,
        "status": record.status,
        "path": record.path,
        "backend": record.backend,
        "sandbox_id": record.sandbox_id,
        "started_at": record.started_at,
        "duration_ms": record.duration_ms,
        "queue_ms": record.queue_ms,
        "init_ms": record.init_ms,
        "cpu_ms": record.cpu_ms,
        "memory_peak_bytes": record.memory_peak_bytes,
        "request_bytes": record.request_bytes,
        "response_bytes": record.response_bytes,
        "error": {"type": record.error_type, "message": record.error_message} if record.error_type else None,
        "logs_truncated": record.logs_truncated,
    }
    if logs:
        out["stdout"], out["stderr"] = record.stdout, record.stderr
    return out


@router.get("/invocations", summary="Invocation records, newest first, paged with next_cursor")
async def list_invocations(
    state: State,
    request: Request,
    function: str | None = None,
    status: str | None = Query(None, description="ok, error, timeout, oom, crashed or throttled"),
    since: str | None = Query(None, description="15m, an ISO time or unix seconds"),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = None,
) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise ApiError(
            422,
            "ValidationError",
            f"status: must be one of {', '.join(STATUSES)}",
            fields=[{"field": "status", "message": "unknown status"}],
        )
    try:
        position = parse_cursor(cursor)
    except ValueError:
        raise ApiError(
            422,
            "ValidationError",
            "cursor: not a cursor this API gave",
            fields=[{"field": "cursor", "message": "invalid"}],
        ) from None
    start = since_of(since)
    only = visible_functions(request)
    if function is not None:
        function = resolve(principal_of(request).user, function)
    rows, following = await run_query(
        state,
        lambda q: q.invocations(function=function, status=status, since=start, limit=limit, cursor=position, only=only),
    )
    return {"invocations": [record_out(r, logs=False) for r in rows], "next_cursor": format_cursor(following)}


@router.get("/invocations/{invocation_id}", summary="One invocation record with its logs")
async def get_invocation(state: State, request: Request, invocation_id: str) -> dict[str, Any]:
    record = await run_query(state, lambda q: q.invocation(invocation_id))
    if record is None:
        await state.recorder.flush()  # it may still sit in the write-behind buffer
        record = await run_query(state, lambda q: q.invocation(invocation_id))
    only = visible_functions(request)
    if record is None or (only is not None and record.function_name not in only):
        raise ApiError(404, "NotFound", f"invocation {invocation_id!r} does not exist")
    return record_out(record, logs=True)


@router.get("/functions/{name}/logs", summary="The function's recent log lines, oldest first")
async def function_logs(
    state: State,
    request: Request,
    name: str,
    since: str | None = Query(None, description="15m, an ISO time or unix seconds"),
    limit: int = Query(100, ge=1, le=10000),
) -> dict[str, Any]:
    if state.registry.get(name) is None:
        raise not_found(name)
    start = since_of(since)
    await state.recorder.flush()
    return {"lines": await run_query(state, lambda q: q.log_lines(name, start, limit))}


@router.get("/functions/{name}/logs/stream", summary="New log lines as Server-Sent Events (event: log)")
async def stream_logs(state: State, request: Request, name: str) -> StreamingResponse:
    if state.registry.get(name) is None:
        raise not_found(name)
    hub = state.log_hub
    queue = hub.subscribe(name)

    async def events() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            idle_s = 0.0
            while not (hub.closed.is_set() or SHUTTING_DOWN.is_set()):
                if state.registry.get(name) is None:  # deleted: its key may later name another user's function
                    return
                try:
                    line = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    idle_s += 1.0
                    if idle_s >= HEARTBEAT_S:  # keeps proxies from closing a quiet stream
                        idle_s = 0.0
                        yield ": ping\n\n"
                    continue
                idle_s = 0.0
                yield f"event: log\ndata: {json.dumps(line)}\n\n"
        finally:
            hub.unsubscribe(name, queue)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
