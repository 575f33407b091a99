"""Read side of the metrics store: summaries, time series, invocation pages and log lines.

Percentiles are exact (numpy's default interpolation) when the window's raw records are all still
kept and there are at most `exact_rows` of them; otherwise they come from the rollups' histograms
(within ~1.1 %, hearth.metrics.histogram) and the window is widened to whole minutes (windows of
6 h or more: whole hours).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hearth.metrics import histogram
from hearth.metrics.aggregate import COLD_PATHS, ERROR_STATUSES
from hearth.store.models import Invocation, InvocationRollup, ResourceSample

QUANTILES = (0.5, 0.95, 0.99)
MAX_BUCKETS = 1440
HOURLY_FROM_S = 6 * 3600  # summaries over windows this long read hour rollups
ROLLUPS = InvocationRollup.__table__


@dataclass
class Tally:
    """Counts and durations of a set of invocations, from raw records or from rollups."""

    invocations: int = 0
    errors: int = 0
    timeouts: int = 0
    throttles: int = 0
    cold_starts: int = 0
    duration_sum_ms: float = 0.0
    cpu_ms: float = 0.0
    memory_peak_bytes: int = 0
    durations: list[float] | None = None  # exact mode
    hist: list[int] | None = None  # histogram mode: counts per bucket

    def add_raw(
        self, status: str, path: str | None, duration_ms: float, cpu_ms: float | None, memory_peak: int | None
    ) -> None:
        if status == "throttled":
            self.throttles += 1
            return
        self.invocations += 1
        self.errors += status in ERROR_STATUSES
        self.timeouts += status == "timeout"
        self.cold_starts += path in COLD_PATHS
        self.duration_sum_ms += duration_ms
        self.cpu_ms += cpu_ms or 0.0
        self.memory_peak_bytes = max(self.memory_peak_bytes, memory_peak or 0)
        if self.durations is None:
            self.durations = []
        self.durations.append(duration_ms)

    def add_rollup(self, m: Any) -> None:
        self.invocations += m.count
        self.errors += m.errors
        self.timeouts += m.timeouts
        self.throttles += m.throttles
        self.cold_starts += m.cold_starts
        self.duration_sum_ms += m.duration_sum_ms
        self.cpu_ms += m.cpu_sum_ms
        self.memory_peak_bytes = max(self.memory_peak_bytes, m.memory_peak_bytes)
        if self.hist is None:
            self.hist = histogram.new_counts()
        histogram.add_dense(self.hist, m.histogram or ())

    def quantiles(self) -> list[float | None]:
        if self.durations is not None:
            values = histogram.exact_quantiles(self.durations, QUANTILES)
        else:
            values = histogram.quantiles_from_counts(self.hist or (), QUANTILES)
        return [None if v is None else round(v, 3) for v in values]

    def as_dict(self) -> dict[str, Any]:
        p50, p95, p99 = self.quantiles()
        return {
            "invocations": self.invocations,
            "errors": self.errors,
            "error_rate": round(self.errors / self.invocations, 4) if self.invocations else 0.0,
            "timeouts": self.timeouts,
            "throttles": self.throttles,
            "cold_starts": self.cold_starts,
            "cold_start_share": round(self.cold_starts / self.invocations, 4) if self.invocations else 0.0,
            "mean_ms": round(self.duration_sum_ms / self.invocations, 3) if self.invocations else None,
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "cpu_seconds": round(self.cpu_ms / 1000, 4),
        }


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def combine_cpu(function: str, per_node: list[float]) -> float:
    """Sandbox CPU (percent of one core) adds up over nodes; the host's (a share of each host) averages."""
    if not per_node:
        return 0.0
    return sum(per_node) / len(per_node) if function == "" else sum(per_node)


class MetricsQueries:
    def __init__(self, session: Session, *, raw_retention_s: float, exact_rows: int) -> None:
        self.session, self.raw_retention_s, self.exact_rows = session, raw_retention_s, exact_rows

    # ----- which source answers
    def _exact(self, start: float, now: float, function: str | None = None) -> bool:
        if start < now - self.raw_retention_s:
            return False
        # Count at most exact_rows + 1: a busy window must not cost a full count.
        rows = select(Invocation.started_at).where(Invocation.started_at >= start).limit(self.exact_rows + 1)
        if function is not None:
            rows = rows.where(Invocation.function_name == function)
        return int(self.session.scalar(select(func.count()).select_from(rows.subquery())) or 0) <= self.exact_rows

    def _tallies(self, start: float, now: float, function: str | None = None) -> tuple[dict[str, Tally], bool]:
        tallies: dict[str, Tally] = {}
        exact = self._exact(start, now, function)
        if exact:
            query = select(
                Invocation.function_name,
                Invocation.status,
                Invocation.path,
                Invocation.duration_ms,
                Invocation.cpu_ms,
                Invocation.memory_peak_bytes,
            ).where(Invocation.started_at >= start)
            if function is not None:
                query = query.where(Invocation.function_name == function)
            for name, status, path, duration, cpu, peak in self.session.execute(query):
                tallies.setdefault(name, Tally(durations=[])).add_raw(status, path, duration, cpu, peak)
        else:
            width = 3600 if now - start >= HOURLY_FROM_S else 60
            for rollup in self._rollups(width, start, function):
                tallies.setdefault(rollup.function_name, Tally()).add_rollup(rollup)
        return tallies, exact

    def _rollups(self, width: int, start: float, function: str | None) -> Any:
        query = select(ROLLUPS).where(ROLLUPS.c.width_s == width, ROLLUPS.c.start >= int(start // width) * width)
        if function is not None:
            query = query.where(ROLLUPS.c.function_name == function)
        return self.session.execute(query)

    def resources(self, start: float, function: str | None = None) -> dict[str, dict[str, float]]:
        """Per function ('' = host): time-weighted mean memory and CPU, and peak memory, since `start`.

        Each node's figures are averaged over time, then the nodes' are added up (memory, sandbox CPU)
        or, for the host's CPU (a share of each node's host), averaged.
        """
        weight = func.sum(ResourceSample.step_s)
        query = (
            select(
                ResourceSample.function_name,
                func.sum(ResourceSample.memory_bytes * ResourceSample.step_s) / weight,
                func.max(ResourceSample.memory_peak_bytes),
                func.sum(ResourceSample.cpu_percent * ResourceSample.step_s) / weight,
            )
            .where(ResourceSample.ts >= start)
            .group_by(ResourceSample.function_name, ResourceSample.node)
        )
        if function is not None:
            query = query.where(ResourceSample.function_name == function)
        per_node: dict[str, list[tuple[float, float, float]]] = {}
        for name, mean, peak, cpu in self.session.execute(query):
            per_node.setdefault(name, []).append((float(mean or 0), float(peak or 0), float(cpu or 0)))
        return {
            name: {
                "mean_memory_bytes": int(sum(mean for mean, _, _ in nodes)),
                "peak_memory_bytes": int(sum(peak for _, peak, _ in nodes)),
                "mean_cpu_percent": round(combine_cpu(name, [cpu for _, _, cpu in nodes]), 2),
            }
            for name, nodes in per_node.items()
        }

    # ----- GET /api/metrics/summary
    def summary(
        self, window_s: float, now: float, functions: Iterable[str] = (), only: set[str] | None = None
    ) -> dict[str, Any]:
        """`functions` get a row even when idle; `only`, if given, limits the rows and totals to those."""
        start = now - window_s
        tallies, exact = self._tallies(start, now)
        if only is not None:
            tallies = {name: tally for name, tally in tallies.items() if name in only}
        resources = self.resources(start)
        total = Tally(durations=[] if exact else None)
        rows = []
        for name in sorted(set(tallies) | set(functions)):
            tally = tallies.get(name, Tally(durations=[] if exact else None))
            rows.append(
                {
                    "function": name,
                    **tally.as_dict(),
                    **resources.get(name, {"mean_memory_bytes": 0, "peak_memory_bytes": 0, "mean_cpu_percent": 0.0}),
                }
            )
            _merge_into(total, tally)
        totals = total.as_dict()
        totals["rps"] = round(total.invocations / window_s, 4)
        return {
            "window_s": window_s,
            "generated_at": iso(now),
            "exact_percentiles": exact,
            "functions": rows,
            "totals": totals,
            "host": resources.get("", {}),
        }

    # ----- GET /api/functions/{name}/metrics and /api/metrics/series
    def series(self, function: str | None, window_s: float, step_s: float, now: float) -> dict[str, Any]:
        count = math.ceil(window_s / step_s)
        first = (now // step_s - (count - 1)) * step_s
        by_minutes = step_s % 60 == 0 and not self._exact(first, now, function)
        tallies = [Tally(durations=None if by_minutes else []) for _ in range(count)]
        if by_minutes:
            width = 3600 if step_s % 3600 == 0 else 60
            for rollup in self._rollups(width, first, function):
                index = int((rollup.start - first) // step_s)
                if 0 <= index < count:
                    tallies[index].add_rollup(rollup)
        else:
            query = select(
                Invocation.started_at,
                Invocation.status,
                Invocation.path,
                Invocation.duration_ms,
                Invocation.cpu_ms,
                Invocation.memory_peak_bytes,
            ).where(Invocation.started_at >= first)
            if function is not None:
                query = query.where(Invocation.function_name == function)
            for started, status, path, duration, cpu, peak in self.session.execute(query):
                index = int((started - first) // step_s)
                if 0 <= index < count:
                    tallies[index].add_raw(status, path, duration, cpu, peak)
        memory, cpu_percent = self._resource_buckets(function if function is not None else "", first, step_s, count)
        buckets = []
        for k, tally in enumerate(tallies):
            ts = first + k * step_s
            data = tally.as_dict()
            data.pop("cold_start_share")
            buckets.append(
                {
                    "start": iso(ts),
                    "ts": ts,
                    "count": data.pop("invocations"),
                    **data,
                    "memory_bytes": memory[k],
                    "cpu_percent": cpu_percent[k],
                }
            )
        return {
            "function": function,
            "window_s": window_s,
            "step_s": step_s,
            "exact_percentiles": not by_minutes,
            "buckets": buckets,
        }

    def _resource_buckets(
        self, function: str, first: float, step_s: float, count: int
    ) -> tuple[list[int | None], list[float | None]]:
        """Per bucket: each node's time-weighted means, combined over nodes as in `resources`."""
        sums: list[dict[str | None, list[float]]] = [{} for _ in range(count)]  # node -> memory*w, cpu*w, w
        query = select(
            ResourceSample.ts,
            ResourceSample.step_s,
            ResourceSample.memory_bytes,
            ResourceSample.cpu_percent,
            ResourceSample.node,
        ).where(ResourceSample.function_name == function, ResourceSample.ts >= first)
        for ts, step, memory, cpu, node in self.session.execute(query):
            index = int((ts - first) // step_s)
            if 0 <= index < count:
                acc = sums[index].setdefault(node, [0.0, 0.0, 0.0])
                acc[0] += memory * step
                acc[1] += cpu * step
                acc[2] += step
        memory_out: list[int | None] = []
        cpu_out: list[float | None] = []
        for nodes in sums:
            live = [acc for acc in nodes.values() if acc[2]]
            memory_out.append(int(sum(m / w for m, _, w in live)) if live else None)
            cpu_out.append(round(combine_cpu(function, [c / w for _, c, w in live]), 2) if live else None)
        return memory_out, cpu_out

    # ----- GET /api/invocations
    def invocations(
        self,
        *,
        function: str | None,
        status: str | None,
        since: float | None,
        limit: int,
        cursor: tuple[float, str] | None,
        only: set[str] | None = None,
    ) -> tuple[list[Invocation], tuple[float, str] | None]:
        query = select(Invocation).order_by(Invocation.started_at.desc(), Invocation.id.desc()).limit(limit + 1)
        if function is not None:
            query = query.where(Invocation.function_name == function)
        if status is not None:
            query = query.where(Invocation.status == status)
        if only is not None:
            query = query.where(Invocation.function_name.in_(sorted(only)))
        if since is not None:
            query = query.where(Invocation.started_at >= since)
        if cursor is not None:
            ts, last_id = cursor
            query = query.where(
                (Invocation.started_at < ts) | ((Invocation.started_at == ts) & (Invocation.id < last_id))
            )
        rows = list(self.session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, ((rows[-1].started_at, rows[-1].id) if more and rows else None)

    def invocation(self, invocation_id: str) -> Invocation | None:
        return self.session.get(Invocation, invocation_id)

    # ----- GET /api/functions/{name}/logs
    def log_lines(self, function: str, since: float | None, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` lines, oldest first."""
        query = (
            select(Invocation)
            .where(Invocation.function_name == function, (Invocation.stdout != "") | (Invocation.stderr != ""))
            .order_by(Invocation.started_at.desc())
            .limit(limit)
        )
        if since is not None:
            query = query.where(Invocation.started_at >= since)
        lines: list[dict[str, Any]] = []
        for record in self.session.scalars(query):  # newest record first
            lines[:0] = lines_of(record.id, record.started_at, record.stdout, record.stderr, record.logs_truncated)
            if len(lines) >= limit:
                break
        return lines[-limit:]


def lines_of(invocation_id: str, ts: float, stdout: str, stderr: str, truncated: bool = False) -> list[dict[str, Any]]:
    lines = [
        {"ts": ts, "invocation_id": invocation_id, "stream": stream, "line": line}
        for stream, text_ in (("stdout", stdout), ("stderr", stderr))
        for line in (text_ or "").splitlines()
    ]
    if truncated:
        lines.append(
            {
                "ts": ts,
                "invocation_id": invocation_id,
                "stream": "stderr",
                "line": "[hearth] output truncated at the per-invocation limit",
            }
        )
    return lines


def _merge_into(total: Tally, part: Tally) -> None:
    total.invocations += part.invocations
    total.errors += part.errors
    total.timeouts += part.timeouts
    total.throttles += part.throttles
    total.cold_starts += part.cold_starts
    total.duration_sum_ms += part.duration_sum_ms
    total.cpu_ms += part.cpu_ms
    total.memory_peak_bytes = max(total.memory_peak_bytes, part.memory_peak_bytes)
    if total.durations is not None and part.durations is not None:
        total.durations.extend(part.durations)
    if part.hist is not None:
        total.hist = list(part.hist) if total.hist is None else list(map(operator.add, total.hist, part.hist))


def parse_cursor(value: str | None) -> tuple[float, str] | None:
    if not value:
        return None
    ts, _, last_id = value.partition("|")
    return float(ts), last_id


def format_cursor(cursor: tuple[float, str] | None) -> str | None:
    return None if cursor is None else f"{cursor[0]!r}|{cursor[1]}"
