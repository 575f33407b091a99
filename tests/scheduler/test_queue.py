"""What the API reads through the abstract queue (get, list_jobs, requeue_dead), against SqlJobQueue on
a real SQLite store: no server, no clock tricks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hearth.scheduler.queue import JobQuery, JobQueue, NewJob, Outcome, SqlJobQueue
from hearth.store.db import make_engine, make_sessionmaker, migrate

WORKER = "node-1"


@pytest.fixture
def queue(tmp_path: Path) -> JobQueue:
    url = f"sqlite:///{tmp_path / 'hearth.db'}"
    migrate(url)
    return SqlJobQueue(make_sessionmaker(make_engine(url)))


def run_to_end(queue: JobQueue, function: str, status: str, dead_letter: bool = False) -> str:
    ((job_id, _),) = queue.enqueue([NewJob(function, {"n": 1}, max_attempts=1)])
    (claimed,) = queue.claim(WORKER, 1, 30.0, lambda name: 1 if name == function else 0)
    assert claimed.id == job_id
    result = {"ok": True} if status == "succeeded" else None
    error = None if status == "succeeded" else {"type": "Boom"}
    outcome = Outcome(job_id, WORKER, claimed.run, status, result, error, claimed.record_id, dead_letter)
    assert queue.finish([outcome]) == [True]
    return job_id


def test_get_gives_the_whole_record(queue: JobQueue) -> None:
    done = run_to_end(queue, "alpha", "succeeded")
    record = queue.get(done)
    assert record is not None
    assert (record.id, record.function_name, record.status, record.attempts) == (done, "alpha", "succeeded", 1)
    assert record.result == '{"ok":true}' and record.error is None and record.last_record_id == f"{done}.1"
    assert record.finished_at is not None and record.started_at is not None
    assert queue.get("job-missing") is None


def test_list_jobs_filters_and_orders_newest_first(queue: JobQueue) -> None:
    first = run_to_end(queue, "alpha", "succeeded")
    dead = run_to_end(queue, "alpha", "failed", dead_letter=True)
    other = run_to_end(queue, "beta", "timed_out")
    ((waiting, _),) = queue.enqueue([NewJob("gamma", {}, max_attempts=3)])

    def ids(limit: int = 50, **conditions: Any) -> list[str]:
        return [job.id for job in queue.list_jobs(JobQuery(limit=limit, **conditions))]

    assert ids() == [waiting, other, dead, first]
    assert ids(limit=2) == [waiting, other]
    assert ids(function="alpha") == [dead, first]
    assert ids(functions=["beta", "gamma"]) == [waiting, other]
    assert ids(functions=[]) == []
    assert ids(status="queued") == [waiting]
    assert ids(status="failed") == [dead]
    assert ids(dead_letter=True) == [dead]
    assert ids(dead_letter=False, function="alpha") == [first]


def test_requeue_dead_runs_only_dead_letters_again(queue: JobQueue) -> None:
    done = run_to_end(queue, "alpha", "succeeded")
    dead = run_to_end(queue, "alpha", "failed", dead_letter=True)
    assert not queue.requeue_dead(done)
    assert queue.requeue_dead(dead)
    record = queue.get(dead)
    assert record is not None
    assert (record.status, record.dead_letter, record.attempts, record.result) == ("queued", False, 0, None)
    assert not queue.requeue_dead(dead)  # no longer dead-lettered
    (claimed,) = queue.claim(WORKER, 1, 30.0, lambda name: 1)  # and claimable again
    assert claimed.id == dead
