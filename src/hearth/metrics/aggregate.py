"""Per-minute and per-hour aggregates of invocation records, kept in step with the raw records at write time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from hearth.metrics import histogram
from hearth.store.models import InvocationRollup

ERROR_STATUSES = frozenset({"error", "timeout", "oom", "crashed"})
COLD_PATHS = frozenset({"cold", "stem"})

WIDTHS = (60, 3600)  # minutes for recent charts, hours for long windows
Key = tuple[str, int, int]  # function, width_s, start


def empty_rollup(function_name: str, width_s: int, start: int) -> dict[str, Any]:
    return {
        "function_name": function_name,
        "width_s": width_s,
        "start": start,
        "count": 0,
        "errors": 0,
        "timeouts": 0,
        "throttles": 0,
        "cold_starts": 0,
        "duration_sum_ms": 0.0,
        "duration_max_ms": 0.0,
        "init_sum_ms": 0.0,
        "cpu_sum_ms": 0.0,
        "memory_peak_bytes": 0,
        "histogram": {},
    }


def fold(rollup: dict[str, Any], row: dict[str, Any]) -> None:
    """Add one invocation record to its rollup. Throttled calls never ran: counted apart."""
    fold_all((rollup,), row)


def fold_all(rollups: tuple[dict[str, Any], ...], row: dict[str, Any]) -> None:
    """Add one invocation record to each of `rollups` (its minute and its hour), reading the row once."""
    status = row["status"]
    if status == "throttled":
        for rollup in rollups:
            rollup["throttles"] += 1
        return
    duration = float(row["duration_ms"])
    error = status in ERROR_STATUSES
    timeout = status == "timeout"
    cold = row.get("path") in COLD_PATHS
    init_ms = row.get("init_ms") or 0.0
    cpu_ms = row.get("cpu_ms") or 0.0
    memory = row.get("memory_peak_bytes") or 0
    bucket = histogram.bucket_of(duration)
    for rollup in rollups:
        rollup["count"] += 1
        rollup["errors"] += error
        rollup["timeouts"] += timeout
        rollup["cold_starts"] += cold
        rollup["duration_sum_ms"] += duration
        if duration > rollup["duration_max_ms"]:
            rollup["duration_max_ms"] = duration
        rollup["init_sum_ms"] += init_ms
        rollup["cpu_sum_ms"] += cpu_ms
        if memory > rollup["memory_peak_bytes"]:
            rollup["memory_peak_bytes"] = memory
        counts = rollup["histogram"]
        counts[bucket] = counts.get(bucket, 0) + 1


def rollups_of(rows: Iterable[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    groups: dict[Key, dict[str, Any]] = {}
    for row in rows:
        name, started = row["function_name"], row["started_at"]
        targets = []
        for width in WIDTHS:
            key = (name, width, int(started // width) * width)
            rollup = groups.get(key)
            if rollup is None:
                rollup = groups[key] = empty_rollup(*key)
            targets.append(rollup)
        fold_all(tuple(targets), row)
    return groups


def combine(into: InvocationRollup, add: dict[str, Any]) -> None:
    for name in ("count", "errors", "timeouts", "throttles", "cold_starts"):
        setattr(into, name, getattr(into, name) + add[name])
    for name in ("duration_sum_ms", "init_sum_ms", "cpu_sum_ms"):
        setattr(into, name, getattr(into, name) + add[name])
    into.duration_max_ms = max(into.duration_max_ms, add["duration_max_ms"])
    into.memory_peak_bytes = max(into.memory_peak_bytes, add["memory_peak_bytes"])
    into.histogram = histogram.to_dense(add["histogram"], into.histogram or [])  # a new list: SQLAlchemy sees it


def upsert_rollups(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    """Fold `rows` into their minutes and hours (same transaction as the rows' insert: both or neither)."""
    groups = rollups_of(rows)
    if not groups:
        return
    columns = tuple_(InvocationRollup.function_name, InvocationRollup.width_s, InvocationRollup.start)
    existing = {
        (r.function_name, r.width_s, r.start): r
        # FOR UPDATE (PostgreSQL): nodes writing the same minute wait for each other instead of losing counts
        for r in session.scalars(select(InvocationRollup).where(columns.in_(list(groups))).with_for_update())
    }
    for key, add in groups.items():
        current = existing.get(key)
        if current is None:
            session.add(InvocationRollup(**{**add, "histogram": histogram.to_dense(add["histogram"])}))
        else:
            combine(current, add)
