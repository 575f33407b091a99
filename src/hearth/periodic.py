"""A task that runs on the event loop every so often until closed (sampler, retention, cron ticker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


class Periodic:
    """Subclasses define `tick()` and `pause_s()`; a failing tick is logged and the loop goes on."""

    what = "periodic task"  # for the log
    _task: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        raise NotImplementedError

    def pause_s(self) -> float:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("%s failed", self.what)
            await asyncio.sleep(self.pause_s())
