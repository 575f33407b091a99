"""Group commit: calls that arrive while a write is under way share the next write.

`await batch(item)` returns once `fn([..., item, ...])` has run on the executor (one transaction for
every item added meanwhile). A flood of async submissions or of finishing jobs then costs one commit
per batch rather than one per item, and holds the event loop's GIL partner thread far less.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(self, executor: Executor, fn: Callable[[list[T]], list[R]], max_batch: int = 500) -> None:
        self._executor = executor
        self._fn = fn
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            try:
                results = await loop.run_in_executor(self._executor, self._fn, [item for item, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # a caller that gave up (cancelled) still had its write
                    future.set_result(result)

    async def wait_idle(self) -> None:
        """Until every item added so far is written."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)
