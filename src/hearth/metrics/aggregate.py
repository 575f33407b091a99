"""Per-minute aggregates of invocation records, kept in step with the raw records at write time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from hearth.metrics import histogram
from hearth.store.models import InvocationMinute

ERROR_STATUSES = frozenset({"error", "timeout", "oom", "crashed"})
COLD_PATHS = frozenset({"cold", "stem"})

Key = tuple[str, int]


def empty_minute(function_name: str, minute: int) -> dict[str, Any]:
    return {
        "function_name": function_name,
        "minute": minute,
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


def fold(minute: dict[str, Any], row: dict[str, Any]) -> None:
    """Add one invocation record to its minute. Throttled calls never ran: counted apart."""
    if row["status"] == "throttled":
        minute["throttles"] += 1
        return
    duration = float(row["duration_ms"])
    minute["count"] += 1
    minute["errors"] += row["status"] in ERROR_STATUSES
    minute["timeouts"] += row["status"] == "timeout"
    minute["cold_starts"] += row.get("path") in COLD_PATHS
    minute["duration_sum_ms"] += duration
    minute["duration_max_ms"] = max(minute["duration_max_ms"], duration)
    minute["init_sum_ms"] += row.get("init_ms") or 0.0
    minute["cpu_sum_ms"] += row.get("cpu_ms") or 0.0
    minute["memory_peak_bytes"] = max(minute["memory_peak_bytes"], row.get("memory_peak_bytes") or 0)
    histogram.add(minute["histogram"], (duration,))


def minutes_of(rows: Iterable[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    groups: dict[Key, dict[str, Any]] = {}
    for row in rows:
        key = (row["function_name"], int(row["started_at"] // 60))
        minute = groups.get(key)
        if minute is None:
            minute = groups[key] = empty_minute(*key)
        fold(minute, row)
    return groups


def combine(into: InvocationMinute, add: dict[str, Any]) -> None:
    for name in ("count", "errors", "timeouts", "throttles", "cold_starts"):
        setattr(into, name, getattr(into, name) + add[name])
    for name in ("duration_sum_ms", "init_sum_ms", "cpu_sum_ms"):
        setattr(into, name, getattr(into, name) + add[name])
    into.duration_max_ms = max(into.duration_max_ms, add["duration_max_ms"])
    into.memory_peak_bytes = max(into.memory_peak_bytes, add["memory_peak_bytes"])
    merged = dict(into.histogram or {})
    histogram.merge(merged, add["histogram"])
    into.histogram = merged  # a new dict, so SQLAlchemy sees the JSON change


def upsert_minutes(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    """Fold `rows` into their minutes (same transaction as the rows' insert: both or neither)."""
    groups = minutes_of(rows)
    if not groups:
        return
    existing = {
        (m.function_name, m.minute): m
        for m in session.scalars(
            select(InvocationMinute).where(
                tuple_(InvocationMinute.function_name, InvocationMinute.minute).in_(list(groups))
            )
        )
    }
    for key, add in groups.items():
        current = existing.get(key)
        if current is None:
            session.add(InvocationMinute(**add))
        else:
            combine(current, add)
