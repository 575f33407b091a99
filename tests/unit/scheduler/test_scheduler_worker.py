"""The scheduler worker against its explicit parts: an in-memory queue on a clock the test moves, and
a scripted invoker (the worker is under test here, not the engine: tests/scheduler runs it for real).
Retries and their backoff, dead letters, back-pressure, the async share and the concurrency cap,
and shutdown's grace and hand-back. No sleeps: the tests wait for the worker's next claim or call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from tests.unit.scheduler.doubles import (
    Answer,
    FakeClock,
    MemoryJobQueue,
    ScriptedInvoker,
    StoredJob,
    registry_with,
    spec,
)

from hearth.engine.encoding import dumps
from hearth.scheduler.queue import NewJob
from hearth.scheduler.settings import SchedulerSettings
from hearth.scheduler.submit import submit
from hearth.scheduler.worker import Scheduler, backoff_s


def low_jitter(low: float, high: float) -> float:
    return low


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Until `condition` holds: the worker's queue calls run on its queue thread, so give it turns."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting for the worker"
        await asyncio.sleep(0.001)


class Rig:
    def __init__(self, invoker: ScriptedInvoker, *functions: Any, **settings: Any) -> None:
        self.clock = FakeClock()
        self.queue = MemoryJobQueue(self.clock)
        self.invoker = invoker
        self.registry = registry_with(*functions)
        options = {"lease_s": 300.0, "poll_s": 60.0, "retry_base_s": 1.0, "retry_max_s": 300.0} | settings
        self.scheduler = Scheduler(
            self.queue,
            invoker,
            self.registry,
            SchedulerSettings(**options),
            "node",
            clock=self.clock,
            jitter=low_jitter,
        )

    def job(self, job_id: str) -> StoredJob:
        return self.queue.jobs[job_id]

    async def next_turn(self) -> None:
        """Wake the worker and wait until it has claimed (or tried to) once more."""
        seen = self.queue.claims
        self.scheduler.notify(0)
        await until(lambda: self.queue.claims > seen)

    async def submit(self, function: str, event: Any = None) -> str:
        job_id, created = await submit(self.scheduler, function, event or {"n": 1}, source="api")
        assert created
        return job_id


def test_backoff_doubles_from_the_base_up_to_the_cap_with_half_to_one_and_a_half_jitter() -> None:
    assert [backoff_s(n, 1.0, 10.0, low_jitter) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert backoff_s(3, 1.0, 10.0, lambda low, high: high) == 6.0


def test_a_failing_job_is_retried_after_its_backoff_then_dead_lettered() -> None:
    async def scenario() -> None:
        invoker = ScriptedInvoker(lambda event: Answer("error", error={"type": "ValueError", "message": "no"}))
        rig = Rig(invoker, spec("f"), default_retries=2, retry_base_s=2.0, retry_max_s=3.0)
        await rig.scheduler.start()
        try:
            job_id = await rig.submit("f", {"n": 7})
            t0 = rig.clock()
            await until(lambda: rig.job(job_id).attempts == 1 and rig.job(job_id).status == "queued")
            first = rig.job(job_id)
            assert first.run_at == t0 + 1.0  # 2 s x 2^0 x 0.5
            assert first.error == {"type": "ValueError", "message": "no", "status": "error"}
            assert first.last_record_id == f"{job_id}.1"

            rig.clock.advance(0.99)  # not due yet: the worker's turn claims nothing
            await rig.next_turn()
            assert len(invoker.calls) == 1 and rig.job(job_id).status == "queued"

            rig.clock.advance(0.01)
            await rig.next_turn()
            await until(lambda: rig.job(job_id).attempts == 2 and rig.job(job_id).status == "queued")
            assert rig.job(job_id).run_at == rig.clock() + 1.5  # 2 s x 2^1, capped at 3 s, x 0.5

            rig.clock.advance(1.5)
            await rig.next_turn()
            await until(lambda: rig.job(job_id).status == "failed")
            last = rig.job(job_id)
            assert last.attempts == 3 and last.dead_letter is True
            assert last.last_record_id == f"{job_id}.3" and last.error is not None
            assert [c.invocation_id for c in invoker.calls] == [f"{job_id}.1", f"{job_id}.2", f"{job_id}.3"]
            assert {(c.call.trigger, c.call.request_bytes) for c in invoker.calls} == {("async", len(dumps({"n": 7})))}
        finally:
            await rig.scheduler.close(0.0)

    run(scenario)


def test_a_job_that_times_out_on_its_last_attempt_ends_timed_out() -> None:
    async def scenario() -> None:
        invoker = ScriptedInvoker(lambda event: Answer("timeout", error={"type": "Timeout", "message": "late"}))
        rig = Rig(invoker, spec("f"), default_retries=0)
        await rig.scheduler.start()
        try:
            job_id = await rig.submit("f")
            await until(lambda: rig.job(job_id).status != "queued" and rig.job(job_id).status != "running")
            assert rig.job(job_id).status == "timed_out" and rig.job(job_id).dead_letter is True
        finally:
            await rig.scheduler.close(0.0)

    run(scenario)


def test_a_job_whose_function_is_gone_is_dead_lettered_without_a_record() -> None:
    async def scenario() -> None:
        rig = Rig(ScriptedInvoker(), spec("gone"))
        job_id = await rig.submit("gone")
        rig.registry.remove("gone")
        await rig.scheduler.start()
        try:
            await until(lambda: rig.job(job_id).status == "failed")
            job = rig.job(job_id)
            assert job.dead_letter is True and job.last_record_id is None
            assert job.error == {"type": "NotFound", "message": "function 'gone' no longer exists"}
        finally:
            await rig.scheduler.close(0.0)

    run(scenario)


def test_a_throttled_attempt_goes_back_without_counting_and_then_succeeds() -> None:
    answers = iter([Answer("throttled", retry_after_s=3.0), Answer("ok", result="done")])

    async def scenario() -> None:
        rig = Rig(ScriptedInvoker(lambda event: next(answers)), spec("f"), default_retries=0)
        await rig.scheduler.start()
        try:
            job_id = await rig.submit("f")
            t0 = rig.clock()
            await until(lambda: len(rig.invoker.calls) == 1 and rig.job(job_id).status == "queued")
            assert rig.job(job_id).attempts == 0  # back-pressure: no attempt used up (only one was allowed)
            assert rig.job(job_id).run_at == t0 + 3.0  # the pool's retry-after x 1.0 (the low jitter)
            rig.clock.advance(3.0)
            await rig.next_turn()
            await until(lambda: rig.job(job_id).status == "succeeded")
            assert rig.job(job_id).result == "done" and rig.job(job_id).attempts == 1
        finally:
            await rig.scheduler.close(0.0)

    run(scenario)


def test_async_jobs_hold_at_most_their_share_of_a_functions_slots() -> None:
    async def scenario() -> None:
        invoker = ScriptedInvoker()
        invoker.gate.clear()
        # busy: 4 instances x 1 -> 2 async slots at share 0.5; other: 2 x 2 -> 2; tiny: 1 x 1 -> still 1
        functions = (spec("busy", max_instances=4), spec("other", max_instances=2, concurrency=2), spec("tiny", 1))
        rig = Rig(invoker, *functions, max_concurrency=10, share=0.5)
        assert [rig.scheduler.cap(name) for name in ("busy", "other", "tiny", "deleted")] == [2, 2, 1, 1]
        await rig.scheduler.start()
        try:
            busy = [await rig.submit("busy") for _ in range(5)]
            await rig.submit("other")
            await rig.submit("tiny")
            await rig.submit("tiny")
            await invoker.wait_running(4)
            await rig.next_turn()
            await rig.next_turn()
            assert dict(invoker.running) == {"busy": 2, "other": 1, "tiny": 1}
            assert sum(rig.job(job_id).status == "queued" for job_id in busy) == 3
            invoker.gate.set()
            await until(lambda: all(job.status == "succeeded" for job in rig.queue.jobs.values()))
            assert invoker.most_at_once["busy"] == 2 and invoker.most_at_once["tiny"] == 1
        finally:
            await rig.scheduler.close(0.0)

    run(scenario)


def test_no_more_jobs_run_at_once_than_the_nodes_async_concurrency() -> None:
    async def scenario() -> None:
        invoker = ScriptedInvoker()
        invoker.gate.clear()
        rig = Rig(invoker, spec("a"), spec("b"), spec("c"), max_concurrency=2, share=1.0)
        for name in ("a", "b", "c", "a"):  # all due before the worker's first claim
            await rig.submit(name)
        await rig.scheduler.start()
        try:
            await invoker.wait_running(2)
            running = [job for job in rig.queue.jobs.values() if job.status == "running"]
            assert len(running) == 2 and rig.queue.depth() == 2  # claimed in one go: the cap held
            invoker.gate.set()
            await until(lambda: all(job.status == "succeeded" for job in rig.queue.jobs.values()))
            assert len(invoker.calls) == 4
        finally:
            await rig.scheduler.close(0.0)

    run(scenario)


@pytest.mark.parametrize("finishes_within_grace", [True, False])
def test_shutdown_lets_running_jobs_finish_within_the_grace_then_gives_the_rest_back(
    finishes_within_grace: bool,
) -> None:
    async def scenario() -> None:
        invoker = ScriptedInvoker()
        invoker.gate.clear()
        rig = Rig(invoker, spec("f"), max_concurrency=2)
        await rig.scheduler.start()
        first, second = await rig.submit("f"), await rig.submit("f")
        await invoker.wait_running(2)
        queued = await rig.submit("f")  # no slot: still queued when shutdown starts
        grace_s = 5.0 if finishes_within_grace else 0.01
        closing = asyncio.create_task(rig.scheduler.close(grace_s))
        if finishes_within_grace:
            await until(lambda: rig.scheduler._stopping)
            invoker.gate.set()
        await closing
        if finishes_within_grace:
            assert rig.job(first).status == rig.job(second).status == "succeeded"
        else:
            for job_id in (first, second):  # given back: run again at once elsewhere, the attempt not held against it
                job = rig.job(job_id)
                assert (job.status, job.worker, job.interruptions, job.run_at) == ("queued", None, 1, rig.clock())
        assert rig.job(queued).status == "queued" and rig.job(queued).attempts == 0
        assert len(invoker.calls) == 2

    run(scenario)


def test_jobs_left_running_by_an_earlier_run_of_this_node_are_queued_again_at_start() -> None:
    async def scenario() -> None:
        rig = Rig(ScriptedInvoker(), spec("f"))
        ((job_id, _),) = rig.queue.enqueue([NewJob("f", {}, max_attempts=3)])
        rig.queue.claim("node-1234-abcdef", 1, 300.0, lambda name: 1)  # the earlier process' claim
        await rig.scheduler.start()
        try:
            await until(lambda: rig.job(job_id).status == "succeeded")
            assert rig.job(job_id).interruptions == 1 and rig.job(job_id).attempts == 2
        finally:
            await rig.scheduler.close(0.0)

    run(scenario)
