"""Retention: keeps the metrics store bounded.

Raw invocation records (with their logs) live `metrics_raw_retention_s`; their counts, durations and
percentile histograms already sit in `invocation_rollups` (written in the same transaction), so
deleting them loses no counts. Resource samples older than `metrics_sample_rollup_s` are rolled
into one row per function per minute. Aggregates go after `metrics_aggregate_retention_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from sqlalchemy import delete, text
from sqlalchemy.orm import Session, sessionmaker

from hearth.periodic import Periodic
from hearth.store.models import Invocation, InvocationRollup, ResourceSample

log = logging.getLogger(__name__)

ROLL_SAMPLES = text(
    """
    INSERT INTO resource_samples
        (ts, step_s, function_name, node, sandboxes, cpu_percent, memory_bytes, memory_peak_bytes, memory_total_bytes)
    SELECT CAST(ts / 60 AS INTEGER) * 60.0, 60.0, function_name, node, MAX(sandboxes),
           SUM(cpu_percent * step_s) / SUM(step_s), CAST(ROUND(SUM(memory_bytes * step_s) / SUM(step_s)) AS INTEGER),
           MAX(memory_peak_bytes), MAX(memory_total_bytes)
    FROM resource_samples
    WHERE step_s < 60 AND ts < :cutoff
    GROUP BY function_name, node, CAST(ts / 60 AS INTEGER)
    """
)


RETENTION_LOCK = 0x48454152_5448  # any constant the cluster agrees on: "HEARTH"


@dataclass(frozen=True)
class RetentionPolicy:
    raw_s: float
    aggregate_s: float
    sample_rollup_s: float


@dataclass
class RetentionResult:
    invocations_deleted: int = 0
    rollups_deleted: int = 0
    samples_rolled: int = 0
    samples_deleted: int = 0


def apply_retention(session: Session, policy: RetentionPolicy, now: float) -> RetentionResult:
    if session.get_bind().dialect.name == "postgresql":
        # Several nodes run retention; two concurrent roll-ups would both roll the same raw samples.
        # (SQLite has one writer at a time: the second sees the first's result.)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": RETENTION_LOCK})
    result = RetentionResult()
    raw_cutoff = now - policy.raw_s
    result.invocations_deleted = session.execute(delete(Invocation).where(Invocation.started_at < raw_cutoff)).rowcount
    aggregate_cutoff = now - policy.aggregate_s
    result.rollups_deleted = session.execute(
        delete(InvocationRollup).where(InvocationRollup.start + InvocationRollup.width_s <= aggregate_cutoff)
    ).rowcount
    result.samples_deleted = session.execute(
        delete(ResourceSample).where(ResourceSample.ts < aggregate_cutoff)
    ).rowcount
    # Whole minutes only, so no minute ends up half raw, half rolled.
    roll_cutoff = (now - policy.sample_rollup_s) // 60 * 60
    session.execute(ROLL_SAMPLES, {"cutoff": roll_cutoff})
    result.samples_rolled = session.execute(
        delete(ResourceSample).where(ResourceSample.step_s < 60, ResourceSample.ts < roll_cutoff)
    ).rowcount
    return result


class RetentionTask(Periodic):
    what = "metrics retention"

    def __init__(self, sessions: sessionmaker[Session], policy: RetentionPolicy, interval_s: float) -> None:
        self._sessions, self.policy, self.interval_s = sessions, policy, interval_s

    def run_once(self, now: float | None = None) -> RetentionResult:
        with self._sessions.begin() as session:
            return apply_retention(session, self.policy, time.time() if now is None else now)

    async def tick(self) -> None:
        result = await asyncio.to_thread(self.run_once)
        if result.invocations_deleted or result.samples_rolled:
            log.info("metrics retention: %s", result)

    def pause_s(self) -> float:
        return self.interval_s
