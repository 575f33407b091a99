"""Scheduled triggers: a function's `schedule` (cron expressions, UTC) enqueues one async job per tick.

Exactly once per tick: each job carries the idempotency key `cron:<expression>:<tick>`, so a tick
enqueued twice (two nodes, or a crash between the enqueue and the bookkeeping) is still one job.
The ticker looks every `HEARTH_SCHEDULE_TICK_S`; ticks it finds at most `2 x tick + 1` seconds late
are on time and each runs. Older ones were missed while Hearth was down and follow
`HEARTH_SCHEDULE_CATCHUP`: `once` runs the latest missed tick once (its event says `catch_up: true`),
`skip` runs none. A new expression starts from the next tick after it is deployed.

Expressions have 5 fields (minute resolution), or 6 with seconds as the sixth (croniter's form):
`* * * * * */10` is every ten seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from croniter import croniter
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from hearth.engine.registry import FunctionRegistry
from hearth.periodic import Periodic
from hearth.scheduler.queue import JobQueue, NewJob
from hearth.scheduler.submit import max_attempts
from hearth.store.models import ScheduleTick

log = logging.getLogger(__name__)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def latest_tick(expression: str, now: float) -> float:
    """The latest tick at or before `now` (ticks fall on whole seconds)."""
    return float(croniter(expression, _at(math.floor(now) + 1)).get_prev(float))


def due_ticks(expression: str, last: float, now: float, catchup: str, grace_s: float) -> tuple[list[float], float]:
    """(ticks to run now, oldest first; the new `last`). Ticks in (last, now] are due: those at most
    `grace_s` old all run; of older ones (missed while down) the latest runs under `once`, none
    under `skip`. Bounded work however long Hearth was down."""
    latest = latest_tick(expression, now)
    if latest <= last:
        return [], last
    cutoff = now - grace_s
    run: list[float] = []
    if cutoff > last:
        missed = latest_tick(expression, cutoff)
        if missed > last and catchup == "once":
            run.append(missed)
    ticks = croniter(expression, _at(max(last, cutoff)))
    while (tick := float(ticks.get_next(float))) <= now:
        if tick > last and tick not in run:
            run.append(tick)
    return run, latest


class CronTicker(Periodic):
    what = "cron: enqueueing scheduled runs"

    def __init__(
        self,
        registry: FunctionRegistry,
        queue: JobQueue,
        sessions: sessionmaker[Session],
        *,
        catchup: str,
        tick_s: float,
        default_retries: int,
        notify: Callable[[int], None],
    ) -> None:
        self.registry, self.queue, self.sessions = registry, queue, sessions
        self.catchup, self.tick_s, self.default_retries, self.notify = catchup, tick_s, default_retries, notify
        self.grace_s = 2 * tick_s + 1

    async def tick(self) -> None:
        enqueued = await asyncio.to_thread(self.run_once, time.time())
        if enqueued:
            self.notify(enqueued)

    def pause_s(self) -> float:
        return self.tick_s - time.time() % self.tick_s  # on the tick grid: less drift

    def run_once(self, now: float) -> int:
        """Enqueue every due tick of every schedule; returns how many jobs were created."""
        schedules = {(spec.name, expression): spec for spec in self.registry.all() for expression in spec.schedule}
        with self.sessions() as session:
            known = {(t.function_name, t.expression): t.last_tick for t in session.scalars(select(ScheduleTick))}
        jobs: list[NewJob] = []
        moved: dict[tuple[str, str], float] = {}
        for key, spec in schedules.items():
            last = known.get(key)
            if last is None:  # new: count from now, do not run ticks from before it existed
                moved[key] = now
                continue
            ticks, moved[key] = due_ticks(key[1], last, now, self.catchup, self.grace_s)
            for tick in ticks:
                event: dict[str, Any] = {
                    "source": "hearth.schedule",
                    "schedule": key[1],
                    "time": _at(tick).isoformat().replace("+00:00", "Z"),
                }
                if now - tick > self.grace_s:
                    event["catch_up"] = True
                jobs.append(
                    NewJob(
                        function_name=spec.name,
                        event=event,
                        max_attempts=max_attempts(spec.retries, self.default_retries),
                        source="cron",
                        idempotency_key=f"cron:{key[1]}:{tick:.0f}",
                    )
                )
        # Enqueued before the ticks are recorded: a crash in between re-enqueues the same keys, a no-op.
        enqueued = sum(created for _, created in self.queue.enqueue(jobs))
        stale = [key for key in known if key not in schedules]
        with self.sessions.begin() as session:
            for (function, expression), last_tick in moved.items():
                if known.get((function, expression)) != last_tick:
                    session.merge(ScheduleTick(function_name=function, expression=expression, last_tick=last_tick))
            for function, expression in stale:  # removed from the function: forget, so a re-add starts afresh
                session.execute(
                    delete(ScheduleTick).where(
                        ScheduleTick.function_name == function, ScheduleTick.expression == expression
                    )
                )
        return enqueued
