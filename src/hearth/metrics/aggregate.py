"""Per-minute and per-hour aggregates of invocation records, kept in step with the raw records at write time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, bindparam, insert, select, tuple_, update
from sqlalchemy.orm import Session

from hearth.metrics import histogram
from hearth.store.models import InvocationRollup

ERROR_STATUSES = frozenset({"error", "timeout", "oom", "crashed"})
COLD_PATHS = frozenset({"cold", "stem"})

WIDTHS = (60, 3600)  # minutes for recent charts, hours for long windows (each a multiple of the first)
Key = tuple[str, int, int]  # function, width_s, start
ROLLUPS = InvocationRollup.__table__
KEY = (ROLLUPS.c.function_name, ROLLUPS.c.width_s, ROLLUPS.c.start)
SUMMED = ("count", "errors", "timeouts", "throttles", "cold_starts", "duration_sum_ms", "init_sum_ms", "cpu_sum_ms")
MAXIMA = ("duration_max_ms", "memory_peak_bytes")
# Executed with one parameter set per rollup; SET takes the other keys of each set (combined()).
UPDATE_ROLLUP = update(ROLLUPS).where(*(column == bindparam(f"key_{column.name}") for column in KEY))


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
    status = row["status"]
    if status == "throttled":
        rollup["throttles"] += 1
        return
    duration = float(row["duration_ms"])
    rollup["count"] += 1
    if status in ERROR_STATUSES:
        rollup["errors"] += 1
        rollup["timeouts"] += status == "timeout"
    if row.get("path") in COLD_PATHS:
        rollup["cold_starts"] += 1
    rollup["duration_sum_ms"] += duration
    if duration > rollup["duration_max_ms"]:
        rollup["duration_max_ms"] = duration
    rollup["init_sum_ms"] += row.get("init_ms") or 0.0
    rollup["cpu_sum_ms"] += row.get("cpu_ms") or 0.0
    memory = row.get("memory_peak_bytes") or 0
    if memory > rollup["memory_peak_bytes"]:
        rollup["memory_peak_bytes"] = memory
    counts = rollup["histogram"]
    bucket = histogram.bucket_of(duration)
    counts[bucket] = counts.get(bucket, 0) + 1


def merge(into: dict[str, Any], add: dict[str, Any]) -> None:
    """Add one rollup (histogram still sparse) to another."""
    for name in SUMMED:
        into[name] += add[name]
    for name in MAXIMA:
        into[name] = max(into[name], add[name])
    counts = into["histogram"]
    for bucket, count in add["histogram"].items():
        counts[bucket] = counts.get(bucket, 0) + count


def rollups_of(rows: Iterable[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The rollups of every width that `rows` fall in: each row is folded into its minute once, and the
    minutes are merged into their hours."""
    finest, *coarser = WIDTHS
    groups: dict[Key, dict[str, Any]] = {}
    for row in rows:
        key = (row["function_name"], finest, int(row["started_at"] // finest) * finest)
        rollup = groups.get(key)
        if rollup is None:
            rollup = groups[key] = empty_rollup(*key)
        fold(rollup, row)
    for (name, _, start), minute in list(groups.items()):
        for width in coarser:
            key = (name, width, start // width * width)
            rollup = groups.get(key)
            if rollup is None:
                rollup = groups[key] = empty_rollup(*key)
            merge(rollup, minute)
    return groups


def upsert_rollups(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    """Fold `rows` into their minutes and hours (same transaction as the rows' insert: both or neither).

    In SQLAlchemy Core, not the ORM: this runs with every flush of the recorder (in the invocation
    writer's process), and the ORM's unit of work cost several times more per flush."""
    groups = rollups_of(rows)
    if not groups:
        return
    connection = session.connection()
    existing = {
        (r.function_name, r.width_s, r.start): r
        # FOR UPDATE (PostgreSQL): nodes writing the same minute wait for each other instead of losing counts
        for r in connection.execute(select(ROLLUPS).where(tuple_(*KEY).in_(list(groups))).with_for_update())
    }
    inserts, updates = [], []
    for key, add in groups.items():
        current = existing.get(key)
        if current is None:
            inserts.append({**add, "histogram": histogram.to_dense(add["histogram"])})
        else:
            updates.append(combined(current, add))
    if inserts:
        connection.execute(insert(ROLLUPS), inserts)
    if updates:
        connection.execute(UPDATE_ROLLUP, updates)


def combined(current: Row[Any], add: dict[str, Any]) -> dict[str, Any]:
    """The UPDATE parameters of a stored rollup with `add` folded in."""
    values: dict[str, Any] = {f"key_{column.name}": add[column.name] for column in KEY}
    for name in SUMMED:
        values[name] = getattr(current, name) + add[name]
    for name in MAXIMA:
        values[name] = max(getattr(current, name), add[name])
    values["histogram"] = histogram.to_dense(add["histogram"], current.histogram or [])
    return values
