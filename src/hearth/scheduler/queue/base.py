"""The durable queue of async invocations as the scheduler and the API see it: one abstract class.

Claiming takes a lease: a job whose worker died is claimable again once its lease has expired, so
nothing is lost, and several nodes can share one queue. Another implementation (Redis Streams, for
example) only has to provide `JobQueue`; neither the scheduler nor the API knows anything else about
storage.

Counting, per job: `attempts` is every time the job started to run, `interruptions` those cut short
by a crash or a shutdown (they do not use up the job's retries), `runs` every claim including those
that met a full pool and never ran (it names each attempt's invocation record: `<job id>.<run>`).
"""

from __future__ import annotations

import abc
import itertools
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

FINAL = frozenset({"succeeded", "failed", "timed_out"})
JOB_ID_PREFIX = "job-"
# Unique across restarts and nodes (start time + randomness), cheap per job; never contains a dot
# (attempt records are named `<job id>.<run>`).
_ID_STEM = f"{JOB_ID_PREFIX}{int(time.time()):x}{secrets.token_hex(3)}"
_id_counter = itertools.count()


def new_job_id() -> str:
    return f"{_ID_STEM}{next(_id_counter):08x}"


@dataclass(frozen=True)
class NewJob:
    function_name: str
    event: Any
    max_attempts: int
    source: str = "api"
    idempotency_key: str | None = None
    callback_url: str | None = None
    run_at: float | None = None
    id: str = ""  # a fresh id when empty


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    function_name: str
    event: Any
    attempt: int  # this attempt's number, counting interrupted ones
    interruptions: int
    max_attempts: int
    run: int  # this claim's number: the attempt record is `<id>.<run>`
    callback_url: str | None
    event_bytes: int = 0  # the event's size as stored (JSON)

    @property
    def record_id(self) -> str:
        return f"{self.id}.{self.run}"

    @property
    def last_allowed(self) -> bool:
        """No retry is left after this attempt if it fails (interrupted attempts are not counted)."""
        return self.attempt - self.interruptions >= self.max_attempts


@dataclass(frozen=True)
class JobRecord:
    """A job's whole state, as the API shows it."""

    id: str
    function_name: str
    source: str  # api, http, lambda or cron
    status: str
    dead_letter: bool
    attempts: int
    max_attempts: int
    interruptions: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    run_at: float
    result: str | None  # JSON text, as stored
    error: dict[str, Any] | None
    idempotency_key: str | None
    callback_url: str | None
    callback_status: str | None
    callback_attempts: int
    last_record_id: str | None


@dataclass(frozen=True)
class JobQuery:
    """Which jobs `JobQueue.list_jobs` returns (newest first): every condition given must hold."""

    limit: int
    function: str | None = None
    functions: Collection[str] | None = None  # only jobs of these functions
    status: str | None = None
    dead_letter: bool | None = None


@dataclass(frozen=True)
class Outcome:
    """The final state one claim (`worker`, `run`) reached."""

    job_id: str
    worker: str
    run: int
    status: str
    result: Any
    error: dict[str, Any] | None
    record_id: str | None
    dead_letter: bool


@dataclass(frozen=True)
class PendingCallback:
    id: str
    url: str
    body: dict[str, Any]


class NamedJob(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def function_name(self) -> str: ...


def callback_body(
    job: NamedJob, status: str, result: Any, error: dict[str, Any] | None, attempts: int
) -> dict[str, Any]:
    return {
        "invocation_id": job.id,
        "function": job.function_name,
        "status": status,
        "result": result,
        "error": error,
        "attempts": attempts,
    }


class JobQueue(abc.ABC):
    @abc.abstractmethod
    def enqueue(self, jobs: Sequence[NewJob]) -> list[tuple[str, bool]]:
        """Store the jobs durably (one commit for all); per job (its id, created). An idempotency key
        already used for the same function gives the existing job's id with created=False."""

    @abc.abstractmethod
    def claim(
        self, worker: str, limit: int, lease_s: float, room: Callable[[str], int], exclude: Collection[str] = ()
    ) -> list[ClaimedJob]:
        """Up to `limit` due jobs, oldest first, now running under `worker`'s lease: at most
        `room(function)` of each function, none of the functions in `exclude`."""

    @abc.abstractmethod
    def renew(self, worker: str, job_ids: Collection[str], lease_s: float) -> None:
        """Extend the lease of `worker`'s running jobs."""

    @abc.abstractmethod
    def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Final states (one commit for all). Per outcome: False if the job is no longer that claim's
        (its lease ran out and it was queued again). A job with a callback_url gets callback_status
        `pending` in the same write."""

    @abc.abstractmethod
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
        """Back to the queue until `run_at` (count_attempt=False: the attempt never ran: a full pool)."""

    @abc.abstractmethod
    def release(self, worker: str, job_ids: Collection[str]) -> int:
        """Give running jobs back (shutdown): queued again, the attempt counted as interrupted."""

    @abc.abstractmethod
    def recover(self, now: float, worker_prefix: str | None = None) -> int:
        """Queue again the running jobs whose lease expired, or (at start) those of an earlier run of
        this node (`worker_prefix`); their attempt counts as interrupted."""

    @abc.abstractmethod
    def requeue_dead(self, job_id: str) -> bool:
        """Run a dead-lettered job again, with a fresh set of attempts; False if it is not dead-lettered."""

    @abc.abstractmethod
    def depth(self) -> int:
        """Jobs waiting (queued, due or not)."""

    @abc.abstractmethod
    def get(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    def list_jobs(self, query: JobQuery) -> list[JobRecord]:
        """The newest jobs matching `query`, at most `query.limit`."""

    @abc.abstractmethod
    def pending_callbacks(self, limit: int) -> list[PendingCallback]:
        """Final jobs whose callback was not delivered yet (e.g. the server stopped meanwhile)."""

    @abc.abstractmethod
    def set_callback(self, job_id: str, status: str, attempts: int) -> None: ...

    @abc.abstractmethod
    def prune(self, finished_before: float) -> int:
        """Delete final jobs (and their callback state) that finished before the given time."""
