"""The durable queue of async invocations: a small interface, and its implementation on the store.

Claiming takes a lease: a job whose worker died is claimable again once its lease has expired, so
nothing is lost, and several nodes can share one queue. Another implementation (Redis Streams, for
example) only has to provide `JobQueue`; the scheduler knows nothing else about storage.

Counting, per job: `attempts` is every time the job started to run, `interruptions` those cut short
by a crash or a shutdown (they do not use up the job's retries), `runs` every claim including those
that met a full pool and never ran (it names each attempt's invocation record: `<job id>.<run>`).
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hearth.store.models import Job

FINAL = frozenset({"succeeded", "failed", "timed_out"})
JOBS = Job.__table__  # Core statements: the hot path skips the ORM's per-statement bookkeeping
C = JOBS.c
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

    @property
    def record_id(self) -> str:
        return f"{self.id}.{self.run}"

    @property
    def last_allowed(self) -> bool:
        """No retry is left after this attempt if it fails (interrupted attempts are not counted)."""
        return self.attempt - self.interruptions >= self.max_attempts


@dataclass(frozen=True)
class PendingCallback:
    id: str
    url: str
    body: dict[str, Any]


class JobQueue(abc.ABC):
    @abc.abstractmethod
    def enqueue(self, job: NewJob) -> tuple[str, bool]:
        """Store the job durably; (its id, created). An idempotency key already used for the same
        function returns the existing job's id with created=False."""

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
    def finish(
        self,
        job_id: str,
        worker: str,
        run: int,
        status: str,
        result: Any,
        error: dict[str, Any] | None,
        record_id: str | None,
        dead_letter: bool,
    ) -> bool:
        """Final state of the claim (`worker`, `run`); False if the job is no longer that claim's (its
        lease ran out and it was queued again). A job with
        a callback_url gets callback_status `pending` in the same write."""

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
    def depth(self) -> int:
        """Jobs waiting (queued, due or not)."""

    @abc.abstractmethod
    def pending_callbacks(self, limit: int) -> list[PendingCallback]:
        """Final jobs whose callback was not delivered yet (e.g. the server stopped meanwhile)."""

    @abc.abstractmethod
    def set_callback(self, job_id: str, status: str, attempts: int) -> None: ...

    @abc.abstractmethod
    def prune(self, finished_before: float) -> int:
        """Delete final jobs (and their callback state) that finished before the given time."""


def callback_body(
    job: Job | ClaimedJob, status: str, result: Any, error: dict[str, Any] | None, attempts: int
) -> dict[str, Any]:
    return {
        "invocation_id": job.id,
        "function": job.function_name,
        "status": status,
        "result": result,
        "error": error,
        "attempts": attempts,
    }


class SqlJobQueue(JobQueue):
    """The queue in the store's `jobs` table (SQLite by default; any SQLAlchemy database)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        # This process' writes to the queue go one at a time: threads contending for SQLite's write
        # lock would otherwise wait in its busy handler, which sleeps in steps of milliseconds.
        self._writing = threading.Lock()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        with self._writing, self._sessions.begin() as session:
            yield session

    def enqueue(self, job: NewJob) -> tuple[str, bool]:
        now = time.time()
        job_id = job.id or new_job_id()
        row = {
            "id": job_id,
            "function_name": job.function_name,
            "source": job.source,
            "idempotency_key": job.idempotency_key,
            "event": orjson.dumps(job.event).decode(),
            "status": "queued",
            "attempts": 0,
            "runs": 0,
            "max_attempts": job.max_attempts,
            "interruptions": 0,
            "run_at": job.run_at or now,
            "created_at": now,
            "dead_letter": False,
            "callback_url": job.callback_url,
            "callback_attempts": 0,
        }
        try:
            with self._write() as session:
                session.execute(insert(JOBS), [row])
            return job_id, True
        except IntegrityError:
            if job.idempotency_key is None:
                raise
        with self._sessions() as session:
            existing = session.scalar(
                select(C.id).where(C.function_name == job.function_name, C.idempotency_key == job.idempotency_key)
            )
        if existing is None:
            raise LookupError(f"job with idempotency key {job.idempotency_key!r} vanished")  # pruned meanwhile
        return existing, False

    def claim(
        self, worker: str, limit: int, lease_s: float, room: Callable[[str], int], exclude: Collection[str] = ()
    ) -> list[ClaimedJob]:
        if limit <= 0:
            return []
        now = time.time()
        # Candidates first (a read), then one UPDATE ... RETURNING of those still queued: a job
        # another worker claimed in between is simply not returned. Atomic per row on SQLite (one
        # writer) and PostgreSQL alike; the read is not part of the write transaction, so SQLite
        # never has to upgrade a stale read snapshot.
        due = select(C.id, C.function_name).where(C.status == "queued", C.run_at <= now)
        if exclude:
            due = due.where(C.function_name.not_in(sorted(exclude)))
        with self._sessions() as session:
            candidates = session.execute(due.order_by(C.run_at).limit(max(4 * limit, 32))).all()
        taken: Counter[str] = Counter()
        chosen: list[str] = []
        for job_id, function in candidates:
            if taken[function] < room(function):
                taken[function] += 1
                chosen.append(job_id)
                if len(chosen) == limit:
                    break
        if not chosen:
            return []
        with self._write() as session:
            rows = session.execute(
                update(JOBS)
                .where(C.id.in_(chosen), C.status == "queued")
                .values(
                    status="running",
                    worker=worker,
                    lease_until=now + lease_s,
                    attempts=C.attempts + 1,
                    runs=C.runs + 1,
                    started_at=func.coalesce(C.started_at, now),
                )
                .returning(
                    C.id,
                    C.function_name,
                    C.event,
                    C.attempts,
                    C.interruptions,
                    C.max_attempts,
                    C.runs,
                    C.callback_url,
                    C.run_at,
                )
            ).all()
        rows.sort(key=lambda r: r.run_at)
        return [
            ClaimedJob(
                r.id,
                r.function_name,
                orjson.loads(r.event),
                r.attempts,
                r.interruptions,
                r.max_attempts,
                r.runs,
                r.callback_url,
            )
            for r in rows
        ]

    def renew(self, worker: str, job_ids: Collection[str], lease_s: float) -> None:
        if not job_ids:
            return
        with self._write() as session:
            session.execute(
                update(JOBS)
                .where(C.id.in_(list(job_ids)), C.worker == worker, C.status == "running")
                .values(lease_until=time.time() + lease_s)
            )

    def finish(
        self,
        job_id: str,
        worker: str,
        run: int,
        status: str,
        result: Any,
        error: dict[str, Any] | None,
        record_id: str | None,
        dead_letter: bool,
    ) -> bool:
        with self._write() as session:
            done = session.execute(
                update(JOBS)
                .where(C.id == job_id, C.worker == worker, C.runs == run, C.status == "running")
                .values(
                    status=status,
                    result=None if result is None else orjson.dumps(result).decode(),
                    error=error,
                    finished_at=time.time(),
                    lease_until=None,
                    last_record_id=record_id,
                    dead_letter=dead_letter,
                    callback_status=case((C.callback_url.is_not(None), "pending"), else_=None),
                )
            ).rowcount
        return bool(done)

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
        values: dict[str, Any] = {"status": "queued", "run_at": run_at, "lease_until": None, "worker": None}
        if error is not None:
            values["error"] = error
        if record_id is not None:
            values["last_record_id"] = record_id
        if not count_attempt:
            values["attempts"] = C.attempts - 1
        with self._write() as session:
            done = session.execute(
                update(JOBS)
                .where(C.id == job_id, C.worker == worker, C.runs == run, C.status == "running")
                .values(**values)
            ).rowcount
        return bool(done)

    def _requeue_interrupted(self, condition: Any, now: float) -> int:
        with self._write() as session:
            return int(
                session.execute(
                    update(JOBS)
                    .where(C.status == "running", condition)
                    .values(
                        status="queued",
                        run_at=now,
                        lease_until=None,
                        worker=None,
                        interruptions=C.interruptions + 1,
                    )
                ).rowcount
            )

    def release(self, worker: str, job_ids: Collection[str]) -> int:
        if not job_ids:
            return 0
        return self._requeue_interrupted((C.worker == worker) & C.id.in_(list(job_ids)), time.time())

    def recover(self, now: float, worker_prefix: str | None = None) -> int:
        condition = C.lease_until < now
        if worker_prefix is not None:
            condition = condition | C.worker.startswith(worker_prefix, autoescape=True)
        return self._requeue_interrupted(condition, now)

    def depth(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(JOBS).where(C.status == "queued")) or 0)

    def get(self, job_id: str) -> Job | None:
        with self._sessions() as session:
            return session.get(Job, job_id)

    def pending_callbacks(self, limit: int) -> list[PendingCallback]:
        with self._sessions() as session:
            jobs = session.scalars(select(Job).where(Job.callback_status == "pending").limit(limit)).all()
        return [
            PendingCallback(
                job.id,
                job.callback_url or "",
                callback_body(
                    job, job.status, None if job.result is None else orjson.loads(job.result), job.error, job.attempts
                ),
            )
            for job in jobs
        ]

    def set_callback(self, job_id: str, status: str, attempts: int) -> None:
        with self._write() as session:
            session.execute(
                update(JOBS).where(C.id == job_id).values(callback_status=status, callback_attempts=attempts)
            )

    def requeue_dead(self, job_id: str) -> bool:
        """Run a dead-lettered job again, with a fresh set of attempts."""
        with self._write() as session:
            return bool(
                session.execute(
                    update(JOBS)
                    .where(C.id == job_id, C.dead_letter.is_(True), C.status.in_(FINAL))
                    .values(
                        status="queued",
                        run_at=time.time(),
                        attempts=0,
                        interruptions=0,
                        dead_letter=False,
                        finished_at=None,
                        result=None,
                        callback_status=None,
                        callback_attempts=0,
                    )
                ).rowcount
            )

    def prune(self, finished_before: float) -> int:
        with self._write() as session:
            return int(
                session.execute(
                    delete(JOBS).where(
                        C.status.in_(FINAL),
                        C.finished_at < finished_before,
                        C.callback_status.is_distinct_from("pending"),
                    )
                ).rowcount
            )
