"""Starts the scheduler and the cron ticker in the API process and returns how to stop them."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Awaitable, Callable

from hearth.api.state import HearthState
from hearth.scheduler.cron import CronTicker
from hearth.scheduler.queue import SqlJobQueue
from hearth.scheduler.settings import SchedulerSettings
from hearth.scheduler.worker import Scheduler


async def start_scheduler(state: HearthState, node: str) -> Callable[[], Awaitable[None]]:
    """`node` must be stable across restarts of this data dir: jobs its earlier run left running
    are queued again at once instead of after their lease."""
    settings = state.settings
    node = hashlib.sha256(f"{socket.gethostname()}:{node}".encode()).hexdigest()[:12]  # one per host and data dir
    scheduler = Scheduler(
        SqlJobQueue(state.sessions), state.engine, state.registry, SchedulerSettings.from_settings(settings), node
    )
    state.scheduler = scheduler
    state.queue_depth = lambda: scheduler.depth
    await scheduler.start()
    cron = CronTicker(
        state.registry,
        scheduler.queue,
        state.sessions,
        catchup=settings.schedule_catchup,
        tick_s=settings.schedule_tick_s,
        default_retries=settings.async_default_retries,
        notify=scheduler.notify,
    )
    cron.start()

    async def stop() -> None:
        await cron.close()
        await scheduler.close(settings.async_shutdown_grace_s)

    return stop
