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
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import bindparam, case, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hearth.store.models import Job

FINAL = frozenset({"succeeded", "failed", "timed_out"})
JOBS = Job.__table__  # Core statements: the hot path skips the ORM's per-statement bookkeeping
C = JOBS.c
# The functions with queued jobs, by a skip scan of ix_jobs_claim (status, function_name, run_at):
# one index probe per function, however many jobs are queued. Standard SQL (SQLite, PostgreSQL).
QUEUED_FUNCTIONS = text(
    "WITH RECURSIVE f(name) AS ("
    " SELECT min(function_name) FROM jobs WHERE status = 'queued'"
    " UNION ALL"
    " SELECT (SELECT min(function_name) FROM jobs WHERE status = 'queued' AND function_name > f.name)"
    " FROM f WHERE f.name IS NOT NULL"
    ") SELECT name FROM f WHERE name IS NOT NULL"
)
MAX_FUNCTIONS_PER_CLAIM = 64
# The hot statements, built once: executing a prebuilt statement skips most of SQLAlchemy's
# per-call work (about 4x cheaper per finished job than building it each time).
_CLAIM = (
    update(JOBS)
    .where(
        C.id.in_(
            select(C.id)
            .where(C.status == "queued", C.function_name == bindparam("function"), C.run_at <= bindparam("now"))
            .order_by(C.run_at)
            .limit(bindparam("want"))
            .scalar_subquery()
        ),
        C.status == "queued",
    )
    .values(
        status="running",
        worker=bindparam("worker"),
        lease_until=bindparam("lease_until"),
        attempts=C.attempts + 1,
        runs=C.runs + 1,
        started_at=func.coalesce(C.started_at, bindparam("now")),
    )
    .returning(
        C.id, C.function_name, C.event, C.attempts, C.interruptions, C.max_attempts, C.runs, C.callback_url, C.run_at
    )
)
_FINISH = (
    update(JOBS)
    .where(C.id == bindparam("job_id"), C.worker == bindparam("w"), C.runs == bindparam("run"), C.status == "running")
    .values(
        status=bindparam("final"),
        result=bindparam("res"),
        error=bindparam("err", type_=JOBS.c.error.type),
        finished_at=bindparam("finished_at"),
        lease_until=None,
        last_record_id=bindparam("record_id"),
        dead_letter=bindparam("dl"),
        callback_status=case((C.callback_url.is_not(None), "pending"), else_=None),
    )
)
FUNCTIONS_REFRESH_S = 1.0
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
        self._last_function = ""  # round robin: the function the last claim took a job of
        self._functions: set[str] = set()  # functions that may have due jobs
        self._functions_at = 0.0
        self._due_later: dict[str, float] = {}  # function -> earliest retry this process queued

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        with self._writing, self._sessions.begin() as session:
            yield session

    def enqueue(self, jobs: Sequence[NewJob]) -> list[tuple[str, bool]]:
        now = time.time()
        rows = [
            {
                "id": job.id or new_job_id(),
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
            for job in jobs
        ]
        if not rows:
            return []
        try:
            with self._write() as session:
                session.execute(insert(JOBS), rows)
            self._functions.update(row["function_name"] for row in rows)
            return [(row["id"], True) for row in rows]
        except IntegrityError:
            if not any(row["idempotency_key"] for row in rows):
                raise
        # An idempotency key was used before (or twice in this batch): one at a time, in order.
        return [self._enqueue_one(row) for row in rows]

    def _enqueue_one(self, row: dict[str, Any]) -> tuple[str, bool]:
        for _ in range(2):
            try:
                with self._write() as session:
                    session.execute(insert(JOBS), [row])
                self._functions.add(row["function_name"])
                return row["id"], True
            except IntegrityError:
                if row["idempotency_key"] is None:
                    raise
            with self._sessions() as session:
                existing = session.scalar(
                    select(C.id).where(
                        C.function_name == row["function_name"], C.idempotency_key == row["idempotency_key"]
                    )
                )
            if existing is not None:
                return existing, False
            # the job with that key was deleted (pruned) in between: insert once more
        raise RuntimeError(f"could not store a job with idempotency key {row['idempotency_key']!r}")

    def claim(
        self, worker: str, limit: int, lease_s: float, room: Callable[[str], int], exclude: Collection[str] = ()
    ) -> list[ClaimedJob]:
        if limit <= 0:
            return []
        # Functions take turns (round robin from where the last claim stopped), each oldest job first:
        # a deep backlog of one function neither delays the jobs of others nor costs a scan per claim
        # while that function is at its cap. Which functions have queued jobs is known from this
        # process' enqueues, and looked up in the store (a skip scan) once a second or when nothing
        # known was claimable: the jobs of other nodes, and retries that came due.
        now = time.time()
        for name, due_at in list(self._due_later.items()):
            if due_at <= now:
                self._functions.add(name)
                self._due_later.pop(name, None)
        refreshed = now - self._functions_at > FUNCTIONS_REFRESH_S
        if refreshed:
            self._refresh_functions(now)
        rows = self._claim_from(sorted(self._functions), worker, limit, lease_s, room, exclude, now)
        if not rows and not refreshed:
            self._refresh_functions(now)
            rows = self._claim_from(sorted(self._functions), worker, limit, lease_s, room, exclude, now)
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
                len(r.event),
            )
            for r in rows
        ]

    def _refresh_functions(self, now: float) -> None:
        with self._sessions() as session:
            self._functions = {name for (name,) in session.execute(QUEUED_FUNCTIONS)}
        self._functions_at = now

    def _claim_from(
        self,
        functions: list[str],
        worker: str,
        limit: int,
        lease_s: float,
        room: Callable[[str], int],
        exclude: Collection[str],
        now: float,
    ) -> list[Any]:
        start = next((k for k, name in enumerate(functions) if name > self._last_function), 0)
        turn = [name for name in functions[start:] + functions[:start] if name not in exclude]
        rows: list[Any] = []
        with self._write() as session:
            for name in turn[:MAX_FUNCTIONS_PER_CLAIM]:
                want = min(room(name), limit - len(rows))
                if want <= 0:
                    continue
                # One statement per function: its oldest due jobs, if still queued, are now this worker's.
                # Atomic on SQLite (one writer) and on PostgreSQL (the outer status check is evaluated
                # again on rows another worker updated meanwhile: they are simply not returned).
                params = {"function": name, "now": now, "want": want, "worker": worker, "lease_until": now + lease_s}
                got = session.execute(_CLAIM, params).all()
                rows.extend(got)
                if got:
                    self._last_function = name
                if len(got) < want:  # nothing more due: known again once it gets jobs (or at the refresh)
                    self._functions.discard(name)
                if len(rows) >= limit:
                    break
        return rows

    def renew(self, worker: str, job_ids: Collection[str], lease_s: float) -> None:
        if not job_ids:
            return
        with self._write() as session:
            session.execute(
                update(JOBS)
                .where(C.id.in_(list(job_ids)), C.worker == worker, C.status == "running")
                .values(lease_until=time.time() + lease_s)
            )

    def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        done: list[bool] = []
        finished_at = time.time()
        with self._write() as session:
            for o in outcomes:
                params = {
                    "job_id": o.job_id,
                    "w": o.worker,
                    "run": o.run,
                    "final": o.status,
                    "res": None if o.result is None else orjson.dumps(o.result).decode(),
                    "err": o.error,
                    "finished_at": finished_at,
                    "record_id": o.record_id,
                    "dl": o.dead_letter,
                }
                changed = session.execute(_FINISH, params).rowcount
                done.append(bool(changed))
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
        values: dict[str, Any] = {"status": "queued", "run_at": run_at, "lease_until": None, "worker": None}
        if error is not None:
            values["error"] = error
        if record_id is not None:
            values["last_record_id"] = record_id
        if not count_attempt:
            values["attempts"] = C.attempts - 1
        with self._write() as session:
            function = session.execute(
                update(JOBS)
                .where(C.id == job_id, C.worker == worker, C.runs == run, C.status == "running")
                .values(**values)
                .returning(C.function_name)
            ).scalar()
        if function is None:
            return False
        self._due_later[function] = min(run_at, self._due_later.get(function, run_at))
        return True

    def _requeue_interrupted(self, condition: Any, now: float) -> int:
        with self._write() as session:
            functions = (
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
                    .returning(C.function_name)
                )
                .scalars()
                .all()
            )
        self._functions.update(functions)
        return len(functions)

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
            function = session.execute(
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
                .returning(C.function_name)
            ).scalar()
        if function is not None:
            self._functions.add(function)
        return function is not None

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
