"""/api/metrics (summary, series), /api/functions/{name}/metrics, and Prometheus' /metrics."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hearth.api.auth import ADMIN, principal_of, require_api_key
from hearth.api.dependencies import State
from hearth.api.errors import ApiError, not_found
from hearth.api.metrics.service import now, platform_of, run_query, window_of
from hearth.metrics.queries import MAX_BUCKETS

router = APIRouter(tags=["metrics"])
api = APIRouter(prefix="/api", tags=["metrics"], dependencies=[Depends(require_api_key)])

WINDOW = Query("1h", description="how far back: 5m, 1h, 24h, 7d, or seconds")
STEP = Query("1m", description="bucket width: 10s, 1m, 5m, 1h, or seconds (at most 1440 buckets)")


@api.get("/metrics/summary", summary="Per-function and platform totals over a window")
async def summary(state: State, request: Request, window: str = WINDOW) -> dict[str, object]:
    window_s, at = window_of(window), now()
    principal = principal_of(request)
    names = [spec.name for spec in state.registry.all() if principal.sees(state.registry.owner_of(spec.name) or ADMIN)]
    only = None if principal.is_admin else set(names)
    body = await run_query(state, lambda q: q.summary(window_s, at, names, only))
    instances = {name: state.engine.instances_of(name) for name in names}
    for row in body["functions"]:
        counts = instances.get(row["function"], {})
        row["warm_instances"] = counts.get("warm", 0) + counts.get("busy", 0)
    body["platform"] = platform_of(state)
    return body


def steps_of(window: str, step: str) -> tuple[float, float]:
    window_s = window_of(window)
    step_s = window_of(step, "step", low=1.0, high=window_s)
    if math.ceil(window_s / step_s) > MAX_BUCKETS:
        raise ApiError(
            422,
            "ValidationError",
            f"step: window/step gives more than {MAX_BUCKETS} buckets",
            fields=[{"field": "step", "message": f"at most {MAX_BUCKETS} buckets"}],
        )
    return window_s, step_s


@api.get("/functions/{name}/metrics", summary="Time series of one function, for charts")
async def function_metrics(
    state: State, request: Request, name: str, window: str = WINDOW, step: str = STEP
) -> dict[str, object]:
    if state.registry.get(name) is None:
        raise not_found(name)
    window_s, step_s = steps_of(window, step)
    at = now()
    return await run_query(state, lambda q: q.series(name, window_s, step_s, at))


@api.get("/metrics/series", summary="Time series of all functions together, with host CPU and memory")
async def platform_series(state: State, request: Request, window: str = WINDOW, step: str = STEP) -> dict[str, object]:
    if not principal_of(request).allows("metrics"):
        raise ApiError(
            403,
            "Forbidden",
            "platform-wide series need the 'metrics' scope (or an admin key); use /api/functions/{name}/metrics",
        )
    window_s, step_s = steps_of(window, step)
    at = now()
    return await run_query(state, lambda q: q.series(None, window_s, step_s, at))


@router.get("/metrics", summary="Prometheus exposition", response_class=Response)
async def prometheus(state: State, request: Request) -> Response:
    return Response(generate_latest(state.prometheus), media_type=CONTENT_TYPE_LATEST)
