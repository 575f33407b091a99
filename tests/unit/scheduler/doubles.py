"""The scheduler worker's parts, for its unit tests: a clock the test moves, an in-memory job queue
that keeps time by that clock, and an invoker whose outcomes the test scripts.

The worker is the thing under test: its parts are stand-ins with the contracts of the real ones
(`JobQueue` as SqlJobQueue implements it, `Engine.invoke`'s signature).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from hearth.engine.encoding import dumps
from hearth.engine.engine import InvocationResult
from hearth.engine.records import CallSite
from hearth.engine.registry import FunctionRegistry
from hearth.engine.sandbox import FunctionSpec
from hearth.scheduler.queue import (
    FINAL,
    ClaimedJob,
    JobQuery,
    JobQueue,
    JobRecord,
    NewJob,
    Outcome,
    PendingCallback,
    callback_body,
)

A = TypeVar("A")


class FakeClock:
    """Wall-clock seconds that move only when the test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class StoredJob:
    id: str
    function_name: str
    event: Any
    max_attempts: int
    run_at: float
    created: int
    callback_url: str | None = None
    idempotency_key: str | None = None
    status: str = "queued"
    attempts: int = 0
    interruptions: int = 0
    runs: int = 0
    worker: str | None = None
    lease_until: float | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    last_record_id: str | None = None
    dead_letter: bool = False
    finished_at: float | None = None
    callback_status: str | None = None
    callback_attempts: int = 0


@dataclass
class MemoryJobQueue(JobQueue):
    """JobQueue's contract in memory, due times read from `clock`."""

    clock: FakeClock
    jobs: dict[str, StoredJob] = field(default_factory=dict)
    claims: int = 0  # claim calls so far: a test waits for the worker's next turn by it
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enqueue(self, jobs: Sequence[NewJob]) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        with self._lock:
            for new in jobs:
                same = next(
                    (
                        j
                        for j in self.jobs.values()
                        if new.idempotency_key is not None
                        and (j.function_name, j.idempotency_key) == (new.function_name, new.idempotency_key)
                    ),
                    None,
                )
                if same is not None:
                    out.append((same.id, False))
                    continue
                number = next(self._ids)
                job_id = new.id or f"job-{number:04d}"
                run_at = self.clock() if new.run_at is None else new.run_at
                self.jobs[job_id] = StoredJob(
                    job_id,
                    new.function_name,
                    new.event,
                    new.max_attempts,
                    run_at,
                    number,
                    new.callback_url,
                    new.idempotency_key,
                )
                out.append((job_id, True))
        return out

    def claim(
        self, worker: str, limit: int, lease_s: float, room: Callable[[str], int], exclude: Collection[str] = ()
    ) -> list[ClaimedJob]:
        now = self.clock()
        claimed: list[ClaimedJob] = []
        taken: dict[str, int] = {}
        with self._lock:
            self.claims += 1
            due = sorted(
                (j for j in self.jobs.values() if j.status == "queued" and j.run_at <= now),
                key=lambda j: (j.run_at, j.created),
            )
            for job in due:
                if len(claimed) >= limit:
                    break
                name = job.function_name
                if name in exclude or taken.get(name, 0) >= room(name):
                    continue
                taken[name] = taken.get(name, 0) + 1
                job.status, job.worker, job.lease_until = "running", worker, now + lease_s
                job.attempts += 1
                job.runs += 1
                claimed.append(
                    ClaimedJob(
                        job.id,
                        name,
                        job.event,
                        job.attempts,
                        job.interruptions,
                        job.max_attempts,
                        job.runs,
                        job.callback_url,
                        len(dumps(job.event)),  # the event's size as stored
                    )
                )
        return claimed

    def renew(self, worker: str, job_ids: Collection[str], lease_s: float) -> None:
        with self._lock:
            for job_id in job_ids:
                job = self.jobs.get(job_id)
                if job is not None and job.worker == worker and job.status == "running":
                    job.lease_until = self.clock() + lease_s

    def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        done: list[bool] = []
        with self._lock:
            for o in outcomes:
                job = self.jobs.get(o.job_id)
                if job is None or (job.worker, job.runs, job.status) != (o.worker, o.run, "running"):
                    done.append(False)
                    continue
                # As stored and read back by the SQL queue (the worker hands the agent's bytes as a Fragment).
                result = orjson.loads(orjson.dumps(o.result))
                job.status, job.result, job.error = o.status, result, o.error
                job.finished_at, job.lease_until = self.clock(), None
                job.last_record_id, job.dead_letter = o.record_id, o.dead_letter
                job.callback_status = "pending" if job.callback_url is not None else None
                done.append(True)
        return done

    def retry_at(
        self,
        job_id: str,
        worker: str,
        run: int,
        run_at: float,
        error: dict[str, Any] | None,
        record_id: str | None,
        count_attempt: bool = True,
    ) -> bool:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or (job.worker, job.runs, job.status) != (worker, run, "running"):
                return False
            job.status, job.run_at, job.lease_until, job.worker = "queued", run_at, None, None
            if error is not None:
                job.error = error
            if record_id is not None:
                job.last_record_id = record_id
            if not count_attempt:
                job.attempts -= 1
            return True

    def _requeue_interrupted(self, matches: Callable[[StoredJob], bool], now: float) -> int:
        count = 0
        with self._lock:
            for job in self.jobs.values():
                if job.status == "running" and matches(job):
                    job.status, job.run_at, job.lease_until, job.worker = "queued", now, None, None
                    job.interruptions += 1
                    count += 1
        return count

    def release(self, worker: str, job_ids: Collection[str]) -> int:
        ids = set(job_ids)
        return self._requeue_interrupted(lambda j: j.worker == worker and j.id in ids, self.clock())

    def recover(self, now: float, worker_prefix: str | None = None) -> int:
        def expired(job: StoredJob) -> bool:
            lapsed = job.lease_until is not None and job.lease_until < now
            return lapsed or (worker_prefix is not None and (job.worker or "").startswith(worker_prefix))

        return self._requeue_interrupted(expired, now)

    def requeue_dead(self, job_id: str) -> bool:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or not job.dead_letter or job.status not in FINAL:
                return False
            job.status, job.run_at, job.attempts, job.interruptions = "queued", self.clock(), 0, 0
            job.dead_letter, job.finished_at, job.result = False, None, None
            job.callback_status, job.callback_attempts = None, 0
            return True

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            job = self.jobs.get(job_id)
            return None if job is None else self._record(job)

    def list_jobs(self, query: JobQuery) -> list[JobRecord]:
        with self._lock:
            found = [
                job
                for job in sorted(self.jobs.values(), key=lambda j: j.created, reverse=True)
                if (query.function is None or job.function_name == query.function)
                and (query.functions is None or job.function_name in query.functions)
                and (query.status is None or job.status == query.status)
                and (query.dead_letter is None or job.dead_letter == query.dead_letter)
            ]
            return [self._record(job) for job in found[: query.limit]]

    def _record(self, job: StoredJob) -> JobRecord:
        return JobRecord(
            id=job.id,
            function_name=job.function_name,
            source="api",
            status=job.status,
            dead_letter=job.dead_letter,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            interruptions=job.interruptions,
            created_at=float(job.created),
            started_at=None,
            finished_at=job.finished_at,
            run_at=job.run_at,
            result=None if job.result is None else dumps(job.result).decode(),
            error=job.error,
            idempotency_key=job.idempotency_key,
            callback_url=job.callback_url,
            callback_status=job.callback_status,
            callback_attempts=job.callback_attempts,
            last_record_id=job.last_record_id,
        )

    def depth(self) -> int:
        with self._lock:
            return sum(1 for j in self.jobs.values() if j.status == "queued")

    def pending_callbacks(self, limit: int) -> list[PendingCallback]:
        with self._lock:
            pending = [j for j in self.jobs.values() if j.callback_status == "pending"][:limit]
            return [
                PendingCallback(j.id, j.callback_url or "", callback_body(j, j.status, j.result, j.error, j.attempts))
                for j in pending
            ]

    def set_callback(self, job_id: str, status: str, attempts: int) -> None:
        with self._lock:
            job = self.jobs[job_id]
            job.callback_status, job.callback_attempts = status, attempts

    def prune(self, finished_before: float) -> int:
        with self._lock:
            old = [
                j.id
                for j in self.jobs.values()
                if j.status in FINAL
                and j.finished_at is not None
                and j.finished_at < finished_before
                and j.callback_status != "pending"
            ]
            for job_id in old:
                del self.jobs[job_id]
            return len(old)


@dataclass
class Answer:
    """How a scripted invocation ends."""

    status: str = "ok"
    result: Any = None
    error: dict[str, Any] | None = None
    retry_after_s: float | None = None


@dataclass
class Call:
    function: str
    event: Any
    call: CallSite
    invocation_id: str | None


class ScriptedInvoker:
    """Engine.invoke's contract: resolves the function (LookupError when it is gone), answers per
    `script`, and holds calls while `gate` is closed so a test can see what runs at once."""

    def __init__(self, script: Callable[[Any], Answer] | None = None) -> None:
        self.script = script or (lambda event: Answer(result=event))
        self.calls: list[Call] = []
        self.running: Counter[str] = Counter()  # calls under way, per function
        self.most_at_once: Counter[str] = Counter()
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Condition()

    async def invoke(
        self,
        resolve: Callable[[], FunctionSpec | None],
        event: Any,
        *,
        call: CallSite,
        answer: Callable[[InvocationResult], A],
        invocation_id: str | None = None,
    ) -> A:
        spec = resolve()
        if spec is None:
            raise LookupError("function not found")
        self.calls.append(Call(spec.name, event, call, invocation_id))
        self.running[spec.name] += 1
        self.most_at_once[spec.name] = max(self.most_at_once[spec.name], self.running[spec.name])
        async with self.started:
            self.started.notify_all()
        try:
            await self.gate.wait()
        finally:
            self.running[spec.name] -= 1
        scripted = self.script(event)
        res = InvocationResult(invocation_id or "inv", spec.name, spec.version, scripted.status, spec.backend)
        res.result_json = dumps(scripted.result) if scripted.status == "ok" else None  # as an agent encodes it
        res.error, res.retry_after_s = scripted.error, scripted.retry_after_s
        return answer(res)

    async def wait_running(self, count: int, timeout_s: float = 5.0) -> None:
        """Until `count` calls are under way (held at the closed gate)."""
        async with self.started:
            await asyncio.wait_for(self.started.wait_for(lambda: self.running.total() >= count), timeout_s)


def registry_with(*specs: FunctionSpec) -> FunctionRegistry:
    registry = FunctionRegistry()
    for spec in specs:
        registry.put(spec)
    return registry


def spec(name: str, max_instances: int = 10, concurrency: int = 1) -> FunctionSpec:
    return FunctionSpec(
        name=name,
        version=1,
        language="python",
        handler="handler",
        code_dir=Path("/nonexistent"),
        max_instances=max_instances,
        concurrency=concurrency,
        route=f"/{name}",
    )
