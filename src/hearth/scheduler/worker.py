"""The scheduler: claims due async jobs from the queue and runs them through the engine.

Async work goes through the invoker (`Engine.invoke`), the path sync calls take, so it shares their
pools and limits, and is recorded there like any call. It cannot starve sync traffic: at most
`max_concurrency` jobs run at once on this node, and at most `share` of a function's instance slots
(max_instances x concurrency, at least one) serve async jobs at a time; the other slots stay free for
sync calls. A job that meets a full pool waits in the pool's queue like a sync call, and if no slot
frees up within the capacity wait it goes back to the queue without using up an attempt
(back-pressure, not failure).

The worker is built from explicit parts (a queue, an invoker, the registry, its settings, a clock),
so it runs as well against an in-memory queue and a fake invoker (tests/unit/scheduler).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import httpx
import orjson

from hearth.engine.engine import InvocationResult
from hearth.engine.records import CallSite, as_result
from hearth.engine.registry import FunctionRegistry
from hearth.engine.sandbox import FunctionSpec
from hearth.scheduler.callback_transport import callback_client
from hearth.scheduler.callbacks import deliver_callback
from hearth.scheduler.group_commit import GroupCommit
from hearth.scheduler.queue import ClaimedJob, JobQueue, NewJob, Outcome, callback_body
from hearth.scheduler.settings import SchedulerSettings

log = logging.getLogger(__name__)
FINAL_STATUS = {"ok": "succeeded", "timeout": "timed_out"}  # every other outcome: failed
HOUSEKEEPING_S = 60.0
INTERNAL_RETRY_S = 5.0
R = TypeVar("R")
A = TypeVar("A")
Clock = Callable[[], float]  # wall-clock seconds (time.time): when a retry is due
Jitter = Callable[[float, float], float]  # a number between its two bounds (random.uniform)


class Invoker(Protocol):
    """What runs a job: `Engine.invoke`."""

    def invoke(
        self,
        resolve: Callable[[], FunctionSpec | None],
        event: Any,
        *,
        call: CallSite,
        answer: Callable[[InvocationResult], A],
        invocation_id: str | None = None,
    ) -> Awaitable[A]: ...


def backoff_s(attempt: int, base_s: float, cap_s: float, jitter: Jitter = random.uniform) -> float:
    """Exponential backoff with jitter: base x 2^(attempt-1), capped, times a random 0.5-1.5."""
    return min(cap_s, base_s * 2 ** (attempt - 1)) * jitter(0.5, 1.5)


class Scheduler:
    def __init__(
        self,
        queue: JobQueue,
        invoker: Invoker,
        registry: FunctionRegistry,
        settings: SchedulerSettings,
        node: str,
        *,
        clock: Clock = time.time,
        jitter: Jitter = random.uniform,
    ) -> None:
        self.queue = queue
        self.invoker = invoker
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.jitter = jitter
        self.node = node  # stable across restarts of this data dir: its leftovers are recovered at start
        self.worker = f"{node}-{os.getpid()}-{secrets.token_hex(3)}"
        self.max_concurrency = settings.max_concurrency
        self.share = settings.share
        self.lease_s = settings.lease_s
        self.poll_s = settings.poll_s
        self.inflight: dict[str, asyncio.Task[None]] = {}  # by attempt record id (`<job id>.<run>`)
        self.by_function: Counter[str] = Counter()
        self.depth = 0  # queued jobs, refreshed about once a second
        self.completed = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._callbacks: dict[str, asyncio.Task[None]] = {}
        self._callback_slots = asyncio.Semaphore(16)
        self._http: httpx.AsyncClient | None = None
        # Every queue call of this node runs on one thread: they would take turns at the database's
        # write lock anyway, and one thread keeps them from contending for it (and for the GIL).
        self._db = ThreadPoolExecutor(1, thread_name_prefix="hearth-queue")
        self.enqueue: GroupCommit[NewJob, tuple[str, bool]] = GroupCommit(self._db, queue.enqueue)
        self._finish: GroupCommit[Outcome, bool] = GroupCommit(self._db, queue.finish)

    async def db(self, fn: Callable[..., R], *args: Any) -> R:
        """Run a queue call on the queue's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._db, functools.partial(fn, *args))

    # ----- lifecycle
    async def start(self) -> None:
        recovered = await self.db(self.queue.recover, self.clock(), self.node + "-")
        if recovered:
            log.info("scheduler: %d job(s) left running by an earlier run queued again", recovered)
        self.depth = await self.db(self.queue.depth)
        self._http = callback_client(self.settings.callback_allow_private)
        self._tasks = [
            asyncio.create_task(self._run()),
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._housekeeping()),
        ]

    async def close(self, grace_s: float) -> None:
        """Stop claiming; let running jobs finish for up to `grace_s`, then give the rest back."""
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(Exception):  # the loop ends after its current claim (whose jobs then run)
            await asyncio.wait_for(asyncio.shield(self._tasks[0]), timeout=max(grace_s, 5.0))
        if self.inflight:
            await asyncio.wait(list(self.inflight.values()), timeout=grace_s)
        left = [record_id.rsplit(".", 1)[0] for record_id in self.inflight]
        tasks = list(self.inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._finish.wait_idle()
        released = await self.db(self.queue.release, self.worker, left)
        if released:
            log.info("scheduler: %d running job(s) given back to the queue", released)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._callbacks:  # unfinished deliveries stay `pending` and are retried at the next start
            await asyncio.wait(list(self._callbacks.values()), timeout=min(grace_s, 2.0))
            for task in list(self._callbacks.values()):
                task.cancel()
            await asyncio.gather(*self._callbacks.values(), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
        await self.enqueue.wait_idle()
        await asyncio.to_thread(self._db.shutdown, True)

    def notify(self, count: int = 1, function: str | None = None) -> None:
        """Jobs were enqueued: look now rather than at the next poll (unless they are all of one
        function that has no async slot free: a flood of it then costs no claim per submit)."""
        self.depth += count
        if function is None or self.by_function.get(function, 0) < self.cap(function):
            self._wake.set()

    # ----- fairness
    def cap(self, function: str) -> int:
        """How many async jobs of `function` may run at once on this node."""
        spec = self.registry.get(function)
        if spec is None:
            return 1  # it was deleted: its jobs still need one slot to reach their final state
        return max(1, math.floor(spec.max_instances * spec.concurrency * self.share))

    def _room(self) -> tuple[dict[str, int], set[str]]:
        """(free async slots per running function, functions with none): a snapshot for the claim."""
        room = {name: self.cap(name) - running for name, running in self.by_function.items()}
        return room, {name for name, free in room.items() if free <= 0}

    def _room_of(self, room: dict[str, int]) -> Callable[[str], int]:
        return lambda name: room.get(name, self.cap(name))

    # ----- the loop
    async def _run(self) -> None:
        last_depth = time.monotonic()
        while not self._stopping:
            self._wake.clear()  # before the claim: a job enqueued or finished meanwhile wakes the next turn
            claimed: list[ClaimedJob] = []
            try:
                free = self.max_concurrency - len(self.inflight)
                if free > 0:
                    room, exclude = self._room()
                    claimed = await self.db(
                        self.queue.claim, self.worker, free, self.lease_s, self._room_of(room), exclude
                    )
                for job in claimed:
                    self.by_function[job.function_name] += 1
                    self.inflight[job.record_id] = asyncio.create_task(self._run_job(job))
                if time.monotonic() - last_depth > 1.0:
                    self.depth = await self.db(self.queue.depth)
                    last_depth = time.monotonic()
            except Exception:
                log.exception("scheduler: claiming jobs failed; trying again")
            if claimed and len(self.inflight) < self.max_concurrency:
                continue  # more may be due right away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                running = [record_id.rsplit(".", 1)[0] for record_id in self.inflight]
                await self.db(self.queue.renew, self.worker, running, self.lease_s)
                # another node's (or a hung worker's) expired leases
                await self.db(self.queue.recover, self.clock())
            except Exception:
                log.exception("scheduler: renewing leases failed")

    async def _housekeeping(self) -> None:
        settings = self.settings
        while True:
            try:
                for pending in await self.db(self.queue.pending_callbacks, 500):
                    if pending.id not in self._callbacks:
                        self._callback(pending.id, pending.url, pending.body)
                pruned = await self.db(self.queue.prune, self.clock() - settings.retention_s)
                if pruned:
                    log.info("scheduler: %d final job(s) past retention deleted", pruned)
            except Exception:
                log.exception("scheduler: housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_S)

    # ----- one job
    async def _run_job(self, job: ClaimedJob) -> None:
        try:
            await self._attempt(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduler: job %s failed inside Hearth; it will be tried again", job.id)
            error = {"type": "InternalError", "message": "Hearth failed while running the job"}
            with contextlib.suppress(Exception):
                again = self.clock() + INTERNAL_RETRY_S
                await self.db(self.queue.retry_at, job.id, self.worker, job.run, again, error, None, False)
        finally:
            self.inflight.pop(job.record_id, None)
            self.by_function[job.function_name] -= 1
            if self.by_function[job.function_name] <= 0:
                del self.by_function[job.function_name]
            self._wake.set()  # a slot is free

    async def _attempt(self, job: ClaimedJob) -> None:
        settings = self.settings
        registry = self.registry
        try:
            res = await self.invoker.invoke(
                lambda: registry.get(job.function_name),
                job.event,
                call=CallSite("async", job.event_bytes),
                answer=as_result,
                invocation_id=job.record_id,
            )
        except LookupError:
            error = {"type": "NotFound", "message": f"function {job.function_name!r} no longer exists"}
            await self._final(job, "failed", None, error, None, dead_letter=True)
            return
        result = res.result_json if res.status == "ok" else None
        if res.status == "throttled":  # back-pressure: wait for capacity; the attempt does not count
            delay = max(res.retry_after_s or 1.0, 0.5) * self.jitter(1.0, 1.5)
            await self.db(
                self.queue.retry_at, job.id, self.worker, job.run, self.clock() + delay, None, job.record_id, False
            )
            return
        if res.status == "ok":
            # The result as the agent encoded it, stored and sent on as it is (a handler's None stays NULL).
            fragment = None if result in (None, b"null") else orjson.Fragment(result)
            await self._final(job, "succeeded", fragment, None, job.record_id)
            return
        error = dict(res.error or {"type": "Error", "message": res.status})
        error["status"] = res.status
        if not job.last_allowed:
            delay = backoff_s(job.attempt - job.interruptions, settings.retry_base_s, settings.retry_max_s, self.jitter)
            await self.db(self.queue.retry_at, job.id, self.worker, job.run, self.clock() + delay, error, job.record_id)
            return
        status = FINAL_STATUS.get(res.status, "failed")
        await self._final(job, status, None, error, job.record_id, dead_letter=True)

    async def _final(
        self,
        job: ClaimedJob,
        status: str,
        result: Any,
        error: dict[str, Any] | None,
        record_id: str | None,
        dead_letter: bool = False,
    ) -> None:
        owned = await self._finish(Outcome(job.id, self.worker, job.run, status, result, error, record_id, dead_letter))
        if not owned:
            log.warning("scheduler: job %s was taken over after its lease ran out; this outcome is dropped", job.id)
            return
        self.completed += 1
        if job.callback_url:
            self._callback(job.id, job.callback_url, callback_body(job, status, result, error, job.attempt))

    def _callback(self, job_id: str, url: str, body: dict[str, Any]) -> None:
        settings = self.settings
        assert self._http is not None

        async def deliver() -> None:
            async with self._callback_slots:
                await deliver_callback(
                    self._http,  # type: ignore[arg-type]
                    self.queue,
                    job_id,
                    url,
                    body,
                    settings.callback_attempts,
                )

        task = asyncio.create_task(deliver())
        self._callbacks[job_id] = task
        task.add_done_callback(lambda _: self._callbacks.pop(job_id, None))
