"""Warm pools: the one owner of sandbox lifecycles.

Per function version a `VersionPool` keeps started instances, hands them to invocations up to each
instance's `concurrency`, starts more (up to `max_instances`) while requests wait, makes callers
wait a bounded time for capacity, evicts instances idle past the keep-alive while keeping
`min_warm`, and drains when its version is retired by an update or a delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hearth.engine.clock import MONOTONIC, Clock, Deadlines
from hearth.engine.sandbox import FunctionInitError, FunctionSpec, Sandbox

log = logging.getLogger(__name__)

SandboxFactory = Callable[[FunctionSpec], Awaitable[tuple[Sandbox, str, float]]]
"""Produces a sandbox loaded with `spec`: (sandbox, path 'cold' | 'stem', init ms)."""


class CapacityError(Exception):
    """No instance became free within the wait limit, or the wait queue is full."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PoolRetired(Exception):
    """The version this pool serves was replaced or deleted; resolve the function again."""


@dataclass(eq=False)
class Instance:
    sandbox: Sandbox
    spec: FunctionSpec
    start_path: str
    init_ms: float
    inflight: int = 0
    served: int = 0
    last_used: float = field(default_factory=time.monotonic)  # on the pool's clock


class VersionPool:
    def __init__(self, spec: FunctionSpec, factory: SandboxFactory, max_waiting: int, clock: Clock = MONOTONIC) -> None:
        self.spec = spec
        self.clock = clock
        self.instances: list[Instance] = []
        self.starting = 0
        self.retired = False
        self._factory = factory
        self._max_waiting = max_waiting
        self._waiters: deque[asyncio.Future[Instance | None]] = deque()
        self._stopping: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wait_deadlines = Deadlines[asyncio.Future[Instance | None]](clock, _expire)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _pick(self) -> Instance | None:
        best: Instance | None = None
        for instance in self.instances:
            usable = instance.inflight < self.spec.concurrency and instance.sandbox.healthy
            if usable and (best is None or instance.last_used > best.last_used):
                best = instance
        return best

    async def acquire(self, wait_s: float) -> tuple[Instance, str]:
        """Reserve a slot on an instance: (instance, 'warm' | 'cold' | 'stem').

        Waiters are served first come, first served: a freed slot is handed to the oldest waiter
        directly, so a newly arriving call cannot take it first and starve those already queued.
        """
        deadline = self.clock.now() + wait_s
        own_start: asyncio.Task[Instance] | None = None
        while True:
            if self.retired:
                self._abandon(own_start)
                raise PoolRetired(self.spec.name)
            instance = None if self._waiters else self._pick()
            if instance is not None:
                self._abandon(own_start)
                instance.inflight += 1
                return instance, "warm"
            if own_start is None and self.starting + len(self.instances) < self.spec.max_instances:
                own_start = self._spawn_start(reserved=True)
            timeout: float | None = None  # a cold start under way is progress, not queueing
            if own_start is None:
                if len(self._waiters) >= self._max_waiting:
                    raise CapacityError(f"{self.spec.name}: {len(self._waiters)} requests already waiting")
                timeout = deadline - self.clock.now()
                if timeout <= 0:
                    raise CapacityError(f"{self.spec.name}: no instance became free within {wait_s:g} s")
            loop = self._loop
            if loop is None:  # looked up once: asyncio.get_running_loop() is a getpid() system call each time
                loop = self._loop = asyncio.get_running_loop()
            waiter: asyncio.Future[Instance | None] = loop.create_future()
            self._waiters.append(waiter)
            if timeout is not None:
                self._wait_deadlines.add(waiter, deadline)
            try:
                if own_start is None:
                    await waiter  # a timer, not asyncio.wait_for: no task per waiting call
                else:
                    await asyncio.wait({waiter, own_start}, return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                handed = self._withdraw(waiter)
                if handed is not None:  # handed over in the same instant the wait ran out
                    return handed, "warm"
                raise CapacityError(f"{self.spec.name}: no instance became free within {wait_s:g} s") from None
            except asyncio.CancelledError:
                handed = self._withdraw(waiter)
                if handed is not None:  # give the slot back to the next waiter
                    handed.inflight -= 1
                    self._offer(handed)
                self._abandon(own_start)
                raise
            finally:
                self._wait_deadlines.discard(waiter)
            handed = self._withdraw(waiter)
            if handed is not None and handed is _started(own_start):
                # With concurrency > 1 the new instance's spare slot went to the oldest waiter: us. Keep the
                # slot the start reserved for us (a cold start, not a warm hit) and offer the spare again.
                handed.inflight -= 1
                self._offer(handed)
                return handed, handed.start_path
            if handed is not None:
                self._abandon(own_start)
                return handed, "warm"
            if own_start is not None and own_start.done():
                instance = own_start.result()  # init errors reach the caller that started it
                return instance, instance.start_path

    def _withdraw(self, waiter: asyncio.Future[Instance | None]) -> Instance | None:
        """Leave the queue; returns the instance handed to this waiter, if one was."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            return waiter.result()  # handed over: `_offer` took it off the queue then
        # Not found, deque.remove formats the waiter's repr (and its instance's) into the error: only here.
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        if not waiter.done():
            waiter.cancel()
        return None

    def _abandon(self, start: asyncio.Task[Instance] | None) -> None:
        """A caller no longer waits for the start it began: hand the instance to the pool when ready."""
        if start is None:
            return

        def hand_over(task: asyncio.Task[Instance]) -> None:
            if task.cancelled() or task.exception() is not None:
                return
            instance = task.result()
            instance.served -= 1  # release() counts a served call; this one served none
            self.release(instance)

        start.add_done_callback(hand_over)

    def _spawn_start(self, *, reserved: bool) -> asyncio.Task[Instance]:
        # Counted as starting from this instant, not from when the task first runs: callers in the
        # same loop tick would otherwise all see room and start more than max_instances.
        self.starting += 1
        task = asyncio.create_task(self._start(reserved=reserved))
        task.add_done_callback(self._start_done)
        return task

    def _start_done(self, _: asyncio.Task[Instance]) -> None:
        self.starting -= 1

    async def _start(self, *, reserved: bool) -> Instance:
        sandbox, path, init_ms = await self._factory(self.spec)
        instance = Instance(
            sandbox, self.spec, path, init_ms, inflight=1 if reserved else 0, last_used=self.clock.now()
        )
        if self.retired and not reserved:
            self._stop_later(instance)
            return instance
        self.instances.append(instance)
        self._offer(instance)
        return instance

    def release(self, instance: Instance) -> None:
        instance.inflight -= 1
        instance.served += 1
        instance.last_used = self.clock.now()
        if not instance.sandbox.healthy or (self.retired and instance.inflight == 0):
            self.discard(instance)
        else:
            self._offer(instance)

    def discard(self, instance: Instance) -> None:
        """Remove an instance (dead, timed out, evicted) and stop its sandbox in the background."""
        if instance in self.instances:
            self.instances.remove(instance)
        self._stop_later(instance)
        self._wake_one()  # there is room to start another instance now

    def _stop_later(self, instance: Instance) -> None:
        task = asyncio.create_task(instance.sandbox.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _offer(self, instance: Instance) -> None:
        """Hand free slots of `instance` to the oldest waiters."""
        while self._waiters and instance.inflight < self.spec.concurrency and instance.sandbox.healthy:
            waiter = self._waiters.popleft()
            if not waiter.done():
                instance.inflight += 1
                waiter.set_result(instance)

    def _wake_one(self) -> None:
        """Wake the oldest waiter with nothing handed over: it looks again (and may start an instance)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def evict_idle(self, keep_alive_s: float, now: float) -> int:
        keep = 0 if self.retired else self.spec.min_warm
        idle = sorted(
            (i for i in self.instances if i.inflight == 0 and now - i.last_used > keep_alive_s),
            key=lambda i: i.last_used,
        )
        evicted = 0
        for instance in idle:
            if len(self.instances) <= keep:
                break
            self.discard(instance)
            evicted += 1
        for instance in list(self.instances):
            if not instance.sandbox.healthy and instance.inflight == 0:
                self.discard(instance)
        return evicted

    def top_up(self) -> None:
        """Start instances in the background until `min_warm` are running or starting."""
        if self.retired:
            return
        missing = self.spec.min_warm - (len(self.instances) + self.starting)
        for _ in range(max(0, missing)):
            task = self._spawn_start(reserved=False)
            task.add_done_callback(_log_background_start_failure)

    def retire(self) -> None:
        self.retired = True
        for instance in list(self.instances):
            if instance.inflight == 0:
                self.discard(instance)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(PoolRetired(self.spec.name))

    async def stop_all(self) -> None:
        self.retired = True
        instances, self.instances = self.instances, []
        await asyncio.gather(*(i.sandbox.stop() for i in instances), *self._stopping, return_exceptions=True)

    @property
    def empty(self) -> bool:
        return not self.instances and self.starting == 0 and not self._stopping


def _started(start: asyncio.Task[Instance] | None) -> Instance | None:
    if start is None or not start.done() or start.cancelled() or start.exception() is not None:
        return None
    return start.result()


def _expire(waiter: asyncio.Future[Instance | None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _log_background_start_failure(task: asyncio.Task[Instance]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, FunctionInitError):
        log.warning("min_warm start failed: function code does not load: %s", exc)
    elif exc is not None:
        log.warning("min_warm start failed: %s", exc)
