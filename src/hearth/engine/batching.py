"""Request batching: pending invocations of one function grouped into one round trip to one instance.

A batch closes when it has `max_size` items or its first item has waited `max_wait_ms`. Each item
keeps its own result, error, duration and logs; with `batch_handler` the handler receives the list
of events at once (for vectorised work) and returns a list of results.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hearth.engine.clock import MONOTONIC, Clock, Timer
from hearth.engine.sandbox import FunctionSpec

if TYPE_CHECKING:
    from hearth.engine.engine import InvocationResult

Resolve = Callable[[], FunctionSpec | None]


class Dispatch(Protocol):
    def __call__(
        self,
        spec: FunctionSpec,
        resolve: Resolve,
        items: list[tuple[InvocationResult, Any]],
        *,
        batch_handler: bool,
    ) -> Awaitable[None]: ...


@dataclass(frozen=True)
class BatchPolicy:
    max_size: int
    max_wait_ms: float
    batch_handler: bool = False

    @classmethod
    def of(cls, spec: FunctionSpec) -> BatchPolicy | None:
        settings = spec.batch
        if settings is None:
            return None
        policy = cls(settings.max_size, settings.max_wait_ms, settings.batch_handler)
        return policy if policy.max_size > 1 or policy.batch_handler else None


@dataclass
class _Pending:
    res: InvocationResult
    event: Any
    resolve: Resolve
    spec: FunctionSpec
    enqueued: float
    done: asyncio.Future[None]


class Batcher:
    def __init__(self, policy: BatchPolicy, dispatch: Dispatch, clock: Clock = MONOTONIC) -> None:
        self.policy = policy
        self._dispatch = dispatch
        self._clock = clock
        self._pending: list[_Pending] = []
        self._timer: Timer | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, res: InvocationResult, event: Any, resolve: Resolve) -> None:
        spec = resolve()
        if spec is None:
            raise LookupError("function not found")
        loop = asyncio.get_running_loop()
        item = _Pending(res, event, resolve, spec, self._clock.now(), loop.create_future())
        self._pending.append(item)
        if len(self._pending) >= self.policy.max_size:
            self._flush()
        elif self._timer is None:
            self._timer = self._clock.call_later(self.policy.max_wait_ms / 1000, self._flush)
        await asyncio.shield(item.done)  # a caller that goes away does not take its batch with it

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch, self._pending = self._pending[: self.policy.max_size], self._pending[self.policy.max_size :]
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            if len(self._pending) < self.policy.max_size:
                break
        if self._pending:
            self._timer = self._clock.call_later(self.policy.max_wait_ms / 1000, self._flush)

    async def _run(self, batch: list[_Pending]) -> None:
        now = self._clock.now()
        for item in batch:
            item.res.queue_ms = (now - item.enqueued) * 1000
        newest = batch[-1]
        try:
            await self._dispatch(
                newest.spec,
                newest.resolve,
                [(item.res, item.event) for item in batch],
                batch_handler=self.policy.batch_handler,
            )
        except Exception as exc:  # the dispatcher reports failures in the results; this is a bug guard
            for item in batch:
                item.res.status = "crashed"
                item.res.error = {"type": "InternalError", "message": f"batch failed: {type(exc).__name__}"}
        finally:
            for item in batch:
                if not item.done.done():
                    item.done.set_result(None)
