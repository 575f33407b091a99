"""Metrics reads run in a worker thread, each with its own session: SQLite queries never block the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hearth.api.errors import ApiError
from hearth.api.state import HearthState
from hearth.metrics.queries import MetricsQueries
from hearth.metrics.timeparse import parse_duration, parse_since

T = TypeVar("T")
MAX_WINDOW_S = 90 * 86400


async def run_query(state: HearthState, work: Callable[[MetricsQueries], T]) -> T:
    def call() -> T:
        with state.sessions() as session:
            queries = MetricsQueries(
                session,
                raw_retention_s=state.settings.metrics_raw_retention_s,
                exact_rows=state.settings.metrics_exact_percentile_rows,
            )
            return work(queries)

    return await asyncio.to_thread(call)


def window_of(value: str, field: str = "window", low: float = 1.0, high: float = MAX_WINDOW_S) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ApiError(
            422, "ValidationError", f"{field}: {exc}", fields=[{"field": field, "message": str(exc)}]
        ) from None
    if not low <= seconds <= high:
        message = f"must be between {low:g} and {high:g} seconds"
        raise ApiError(422, "ValidationError", f"{field}: {message}", fields=[{"field": field, "message": message}])
    return seconds


def since_of(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return parse_since(value)
    except ValueError as exc:
        raise ApiError(
            422, "ValidationError", f"since: {exc}", fields=[{"field": "since", "message": str(exc)}]
        ) from None


def platform_of(state: HearthState) -> dict[str, Any]:
    engine = state.engine.snapshot()
    host = state.sampler.latest.get("", {}) if state.sampler is not None else {}
    sandbox_memory = sum(
        row["memory_bytes"] for name, row in (state.sampler.latest if state.sampler else {}).items() if name
    )
    return {
        "functions": len(state.registry.all()),
        "warm_sandboxes": engine.total.warm,
        "busy_sandboxes": engine.total.busy,
        "starting_sandboxes": engine.total.starting,
        "stem_cells": engine.stem_cells_ready,
        "waiting_calls": engine.waiting_calls,
        "queue_depth": state.queue_depth() if state.queue_depth is not None else 0,
        "host_cpu_percent": host.get("cpu_percent", 0.0),
        "host_memory_bytes": host.get("memory_bytes", 0),
        "host_memory_total_bytes": host.get("memory_total_bytes") or 0,
        "sandbox_memory_bytes": sandbox_memory,
        "sampled_at": host.get("ts"),
        "recorder_buffered": state.recorder.buffered,
        "recorder_dropped": state.recorder.dropped,
    }


def now() -> float:
    return time.time()
