"""Async invocations through real servers: durability across kill -9, retries with backoff, dead
letters, idempotency, back-pressure and the async share, callbacks, cron schedules (and their
catch-up after downtime) and graceful shutdown."""

from __future__ import annotations

import itertools
import json
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from hearth.engine.registry import FunctionRegistry
from hearth.engine.sandbox import FunctionSpec
from hearth.scheduler.cron import CronTicker, due_ticks
from hearth.scheduler.queue import SqlJobQueue
from hearth.store.db import make_engine, make_sessionmaker, migrate
from hearth.store.models import Job
from hearth.testing import HearthServer

ECHO = "def handler(event, context):\n    return event\n"
FLAKY = """
import os
def handler(event, context):
    marker = "/tmp/seen-" + event["key"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return "second attempt"
"""
ALWAYS_FAILS = "def handler(event, context):\n    raise ValueError('no')\n"
SLOW = "import time\ndef handler(event, context):\n    time.sleep(event.get('s', 2))\n    return 'slept'\n"
FINAL = {"succeeded", "failed", "timed_out"}
FAST_ENV = {
    "HEARTH_ASYNC_RETRY_BASE_S": "0.3",
    "HEARTH_ASYNC_SHUTDOWN_GRACE_S": "0.5",
    "HEARTH_SCHEDULE_TICK_S": "0.5",
    "HEARTH_ASYNC_POLL_S": "0.05",
    "HEARTH_CAPACITY_WAIT_S": "0.5",
    "HEARTH_CALLBACK_ALLOW_PRIVATE": "true",
}


def submit(hearth: HearthServer, name: str, event: Any, **params: str) -> dict[str, Any]:
    response = hearth.client.post(f"/api/functions/{name}/invoke", params={"mode": "async", **params}, json=event)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["invocation_id"].startswith("job-")
    assert body["status_url"] == f"/api/invocations/{body['invocation_id']}"
    assert response.headers["x-hearth-invocation-id"] == body["invocation_id"]
    return dict(body)


def job_of(hearth: HearthServer, job_id: str) -> dict[str, Any]:
    response = hearth.client.get(f"/api/invocations/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def record_of(hearth: HearthServer, record_id: str) -> dict[str, Any]:
    """An attempt's invocation record: written behind (docs/metrics.md), so it may take a moment."""
    deadline = time.monotonic() + 10
    while (response := hearth.client.get(f"/api/invocations/{record_id}")).status_code == 404:
        assert time.monotonic() < deadline, f"no record {record_id}"
        time.sleep(0.1)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_final(hearth: HearthServer, job_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = job_of(hearth, job_id)
        if job["status"] in FINAL:
            return job
        assert time.monotonic() < deadline, f"job never finished: {job}"
        time.sleep(0.05)


def wait_for(value: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
    """Poll until `value()` is truthy; returns it."""
    deadline = time.monotonic() + timeout_s
    while not (found := value()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def wait_past(wall_time: float) -> None:
    """Until the wall clock (which cron ticks follow) has passed `wall_time`."""
    while time.time() <= wall_time:
        time.sleep(0.05)


def server(tmp_path: Path, **env: str) -> HearthServer:
    instance = HearthServer(tmp_path / "data", env={**FAST_ENV, **env})
    instance.start()
    return instance


def query(hearth: HearthServer, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(hearth.data_dir / "hearth.db", timeout=10) as db:
        return db.execute(sql, args).fetchall()


@pytest.fixture(scope="module")
def async_server(tmp_path_factory: pytest.TempPathFactory, runtime_images: dict[str, str]) -> Iterator[HearthServer]:
    """This module's server (short retry/poll/capacity/shutdown waits, loopback callbacks allowed);
    the tests that stop or kill it start it again."""
    instance = server(tmp_path_factory.mktemp("async"))
    yield instance
    if instance.proc is not None and instance.proc.poll() is None:
        instance.stop()


@pytest.fixture
def hearth_a(async_server: HearthServer) -> HearthServer:
    if async_server.proc is None or async_server.proc.poll() is not None:  # a test before failed while it was down
        async_server.start()
    return async_server


def test_async_invocation_is_queued_then_succeeds(hearth: HearthServer, fname: str, backend: str) -> None:
    hearth.deploy(fname, ECHO, backend=backend)
    queued = submit(hearth, fname, {"n": 1})
    assert queued["status"] == "queued" and queued["duplicate"] is False
    job = wait_final(hearth, queued["invocation_id"])
    assert job["status"] == "succeeded" and job["result"] == {"n": 1} and job["attempts"] == 1
    assert job["dead_letter"] is False and job["error"] is None and job["mode"] == "async"
    assert job["finished_at"] >= job["started_at"] >= job["created_at"]
    # the attempt is an invocation record like any other (the metrics engineer's route serves it)
    assert job["last_record_id"] == f"{job['id']}.1"
    record = record_of(hearth, job["last_record_id"])
    assert record["mode"] == "async" and record["status"] == "ok" and record["function"] == fname
    # the HTTP trigger takes the same path with a header; the caller's credentials are not stored
    trigger = httpx.post(
        f"{hearth.base_url}/fn/{fname}",
        json={"via": "trigger"},
        timeout=30,
        headers={"X-Hearth-Invocation-Type": "async", "Authorization": "Bearer secret-of-the-caller"},
    )
    assert trigger.status_code == 202, trigger.text
    job = wait_final(hearth, trigger.json()["invocation_id"])
    assert job["status"] == "succeeded" and job["source"] == "http"
    assert json.loads(job["result"]["body"]) == {"via": "trigger"}
    assert "authorization" not in job["result"]["headers"]
    assert hearth.client.post("/api/functions/nope/invoke", params={"mode": "async"}, json={}).status_code == 404
    assert hearth.client.post(f"/api/functions/{fname}/invoke", params={"mode": "later"}, json={}).status_code == 422
    assert hearth.client.get("/api/invocations/job-doesnotexist").status_code == 404
    # an unauthenticated caller sees nothing
    assert httpx.get(f"{hearth.base_url}/api/invocations/{job['id']}").status_code == 401


def test_idempotency_key_returns_the_first_job(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, ECHO)
    first = submit(hearth, fname, {"n": 1}, idempotency_key="order-17")
    again = hearth.client.post(
        f"/api/functions/{fname}/invoke",
        params={"mode": "async"},
        json={"n": 2},
        headers={"X-Hearth-Idempotency-Key": "order-17"},
    )
    assert again.status_code == 202 and again.json()["invocation_id"] == first["invocation_id"]
    assert again.json()["duplicate"] is True and first["duplicate"] is False
    assert wait_final(hearth, first["invocation_id"])["result"] == {"n": 1}
    jobs = hearth.client.get("/api/jobs", params={"function": fname}).json()["jobs"]
    assert [job["id"] for job in jobs] == [first["invocation_id"]]
    # the same key after the job finished: still the same job
    third = submit(hearth, fname, {"n": 3}, idempotency_key="order-17")
    assert third["invocation_id"] == first["invocation_id"] and third["duplicate"] is True
    other = submit(hearth, fname, {"n": 4}, idempotency_key="order-18")
    assert other["invocation_id"] != first["invocation_id"]
    long_key = hearth.client.post(
        f"/api/functions/{fname}/invoke", params={"mode": "async", "idempotency_key": "k" * 256}, json={}
    )
    assert long_key.status_code == 422


def test_retries_with_backoff_dead_letter_and_redrive(hearth_a: HearthServer, fname: str) -> None:
    hearth = hearth_a
    hearth.deploy(f"{fname}-flaky", FLAKY, retries=2)
    hearth.deploy(f"{fname}-bad", ALWAYS_FAILS, retries=2)
    hearth.deploy(f"{fname}-slow", SLOW, retries=1, timeout_s=1)
    assert hearth.invoke(f"{fname}-bad").status_code == 500  # warm: the gaps below are the backoff alone
    flaky_id = submit(hearth, f"{fname}-flaky", {"key": fname})["invocation_id"]
    bad_id = submit(hearth, f"{fname}-bad", {})["invocation_id"]
    slow_id = submit(hearth, f"{fname}-slow", {"s": 5})["invocation_id"]

    flaky = wait_final(hearth, flaky_id)
    assert flaky["status"] == "succeeded" and flaky["attempts"] == 2 and flaky["result"] == "second attempt"
    assert flaky["dead_letter"] is False

    bad = wait_final(hearth, bad_id)
    assert bad["status"] == "failed" and bad["attempts"] == 3 and bad["max_attempts"] == 3
    assert bad["dead_letter"] is True and bad["error"]["type"] == "ValueError" and bad["error"]["status"] == "error"
    records = [record_of(hearth, f"{bad_id}.{run}") for run in (1, 2, 3)]
    assert [r["status"] for r in records] == ["error", "error", "error"]
    starts = [r["started_at"] for r in records]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # base 0.3 s doubling, jitter x0.5-1.5: the first wait 0.15-0.45 s, the second 0.3-0.9 s (+ polling)
    assert 0.15 <= gaps[0] <= 0.45 + 0.4, gaps
    assert 0.3 <= gaps[1] <= 0.9 + 0.4, gaps

    slow = wait_final(hearth, slow_id)  # timeouts are retried too, and dead-lettered as timed_out
    assert slow["status"] == "timed_out" and slow["attempts"] == 2 and slow["dead_letter"] is True
    assert slow["error"]["type"] == "Timeout"

    dead = hearth.client.get("/api/jobs", params={"dead_letter": "true"}).json()["jobs"]
    dead_ids = {job["id"] for job in dead}
    assert {bad_id, slow_id} <= dead_ids and flaky_id not in dead_ids
    retried = hearth.client.post(f"/api/jobs/{bad_id}/retry")
    assert retried.status_code == 202 and retried.json()["dead_letter"] is False
    assert retried.json()["status"] in ("queued", "running")
    again = wait_final(hearth, bad_id)
    assert again["attempts"] == 3 and again["dead_letter"] is True  # a fresh set of attempts, failed again
    assert again["last_record_id"] == f"{bad_id}.6"  # every run has a record of its own
    assert hearth.client.post(f"/api/jobs/{flaky_id}/retry").status_code == 409


def test_full_pool_is_back_pressure_and_async_keeps_to_its_share(hearth_a: HearthServer, fname: str) -> None:
    hearth = hearth_a
    # one instance: a sync call holds it longer than the capacity wait (0.5 s here)
    hearth.deploy(fname, SLOW, max_instances=1)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(hearth.invoke, fname, {"s": 2.5})
        deadline = time.monotonic() + 20
        while hearth.client.get(f"/api/functions/{fname}").json()["instances"]["busy"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        job_id = submit(hearth, fname, {"s": 0})["invocation_id"]
        assert held.result().status_code == 200
    job = wait_final(hearth, job_id)
    # it met the full pool (a throttled record), waited, and ran: one attempt, not a failure
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["dead_letter"] is False
    first = record_of(hearth, f"{job_id}.1")
    assert first["status"] == "throttled"
    assert job["last_record_id"] != f"{job_id}.1"

    # two instances: async jobs may hold one (share 0.5), the other stays for sync calls
    shared = f"{fname}-share"
    hearth.deploy(shared, SLOW, max_instances=2)
    ids = [submit(hearth, shared, {"s": 1})["invocation_id"] for _ in range(4)]
    running_seen = 0
    sync = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        jobs = hearth.client.get("/api/jobs", params={"function": shared}).json()["jobs"]
        running_seen = max(running_seen, sum(job["status"] == "running" for job in jobs))
        if sync is None and running_seen:
            sync = hearth.invoke(shared, {"s": 0})  # served by the free instance while jobs still wait
            assert sync.status_code == 200
            queued = sum(
                job["status"] == "queued"
                for job in hearth.client.get("/api/jobs", params={"function": shared}).json()["jobs"]
            )
            assert queued >= 2, "the sync call waited for the async jobs"
        if all(job["status"] in FINAL for job in jobs):
            break
        time.sleep(0.05)
    assert running_seen == 1
    assert all(wait_final(hearth, job_id)["status"] == "succeeded" for job_id in ids)


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, Any], str]] = []
    failures_left = 1

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if Receiver.failures_left > 0:  # the first delivery fails: the second must come
            Receiver.failures_left -= 1
            self.send_response(503)
        else:
            Receiver.received.append((body, self.headers["X-Hearth-Invocation-Id"]))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_callback_is_delivered_with_retries(hearth_a: HearthServer, hearth: HearthServer, fname: str) -> None:
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_port}/done"
    try:
        hearth_a.deploy(fname, ECHO)
        job_id = submit(hearth_a, fname, {"n": 5}, callback_url=url)["invocation_id"]
        deadline = time.monotonic() + 20
        while not Receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        expected = {
            "invocation_id": job_id,
            "function": fname,
            "status": "succeeded",
            "result": {"n": 5},
            "error": None,
            "attempts": 1,
        }
        assert Receiver.received == [(expected, job_id)]
        deadline = time.monotonic() + 5
        while (job := job_of(hearth_a, job_id))["callback_status"] == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job["callback_status"] == "delivered" and job["callback_attempts"] == 2
        # by default, loopback and private targets are refused
        hearth.deploy(fname, ECHO)
        refused = hearth.client.post(
            f"/api/functions/{fname}/invoke", params={"mode": "async", "callback_url": url}, json={}
        )
        assert refused.status_code == 422 and "not a globally routable address" in refused.json()["error"]["message"]
        not_http = hearth.client.post(
            f"/api/functions/{fname}/invoke", params={"mode": "async", "callback_url": "file:///etc/passwd"}, json={}
        )
        assert not_http.status_code == 422
    finally:
        receiver.shutdown()


def test_missed_ticks_follow_the_catchup_policy() -> None:
    # ticks every minute; down from 10:00:30 to 10:05:10 (grace 3 s)
    last, now = 1_800_000_030.0, 1_800_000_310.0
    assert due_ticks("* * * * *", last, now, "once", 3.0) == ([1_800_000_300.0], 1_800_000_300.0)
    assert due_ticks("* * * * *", last, now, "skip", 3.0) == ([], 1_800_000_300.0)
    # on time (within the grace): runs under either policy
    assert due_ticks("* * * * *", last, 1_800_000_301.0, "skip", 3.0) == ([1_800_000_300.0], 1_800_000_300.0)
    assert due_ticks("* * * * *", last, 1_800_000_050.0, "once", 3.0) == ([], last)
    # seconds resolution: every 2 s, looked at 3 s late: both ticks are on time
    assert due_ticks("* * * * * */2", 1_800_000_000.0, 1_800_000_004.5, "skip", 3.0)[0] == [
        1_800_000_002.0,
        1_800_000_004.0,
    ]
    # a year down, per-second schedule: bounded work, one catch-up run
    start = time.perf_counter()
    ticks, moved = due_ticks("* * * * * *", 1_800_000_000.0, 1_800_000_000.0 + 365 * 86400 + 0.5, "once", 3.0)
    assert moved == 1_800_000_000.0 + 365 * 86400 and len(ticks) == 4 and time.perf_counter() - start < 1


@pytest.mark.parametrize(("catchup", "expected"), [("once", 1), ("skip", 0)])
def test_ticks_missed_while_down_on_a_controlled_clock(tmp_path: Path, catchup: str, expected: int) -> None:
    """The ticker against a real store, its clock driven by the test: downtime, two nodes, repeats."""
    url = f"sqlite:///{tmp_path / 'hearth.db'}"
    migrate(url)
    sessions = make_sessionmaker(make_engine(url))
    registry = FunctionRegistry()
    registry.put(
        FunctionSpec(
            name="tick",
            version=1,
            language="python",
            handler="handler",
            code_dir=tmp_path,
            schedule=("* * * * *",),
        )
    )
    queue = SqlJobQueue(sessions)

    def ticker() -> CronTicker:
        return CronTicker(
            registry, queue, sessions, catchup=catchup, tick_s=1.0, default_retries=2, notify=lambda n: None
        )

    node_a, node_b = ticker(), ticker()
    t0 = 1_800_000_000.0  # a whole minute
    assert node_a.run_once(t0 + 10) == 0  # a new schedule starts counting now
    assert node_a.run_once(t0 + 60.5) == 1  # the 10:01 tick
    assert node_b.run_once(t0 + 60.7) == 0  # another node, same tick: still one job
    assert node_a.run_once(t0 + 61) == 0
    # down from just after 10:01 until 10:05:30: ticks 10:02 ... 10:05 were missed
    assert node_a.run_once(t0 + 330) == expected
    assert node_a.run_once(t0 + 360.2) == 1  # and the next tick runs as usual
    with sessions() as session:
        jobs = session.scalars(select(Job).order_by(Job.created_at)).all()
    ticks = [float(job.idempotency_key.rsplit(":", 1)[1]) - t0 for job in jobs]  # type: ignore[union-attr]
    assert ticks == ([60.0, 300.0, 360.0] if catchup == "once" else [60.0, 360.0])
    assert [json.loads(job.event).get("catch_up", False) for job in jobs] == (
        [False, True, False] if catchup == "once" else [False, False]
    )
    assert {job.max_attempts for job in jobs} == {3}
    # the schedule removed: its bookkeeping goes, so adding it back starts afresh
    registry.put(FunctionSpec(name="tick", version=2, language="python", handler="handler", code_dir=tmp_path))
    node_a.run_once(t0 + 400)
    registry.put(
        FunctionSpec(
            name="tick",
            version=3,
            language="python",
            handler="handler",
            code_dir=tmp_path,
            schedule=("* * * * *",),
        )
    )
    assert node_a.run_once(t0 + 1000) == 0


class SlowReceiver(BaseHTTPRequestHandler):
    """Holds the first delivery until `release` is set (it is under way when Hearth stops); takes the others."""

    release = threading.Event()
    first_arrived = threading.Event()
    deliveries: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not SlowReceiver.first_arrived.is_set():
            SlowReceiver.first_arrived.set()
            SlowReceiver.release.wait(30)
        else:
            SlowReceiver.deliveries.append(body)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_cron_ticks_then_shutdown_gives_jobs_back_and_missed_ticks_run_once(hearth_a: HearthServer, fname: str) -> None:
    hearth = hearth_a
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), SlowReceiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    cron, slow = f"{fname}-cron", f"{fname}-slow"
    hearth.deploy(cron, ECHO, schedule=["* * * * * */2"])  # every 2 s (6 fields: seconds last)
    assert hearth.client.get(f"/api/functions/{cron}").json()["schedule"] == ["* * * * * */2"]
    hearth.deploy(slow, SLOW)
    assert wait_final(hearth, submit(hearth, slow, {"s": 0})["invocation_id"])["status"] == "succeeded"  # warm
    jobs = wait_for(
        lambda: (found := hearth.client.get("/api/jobs", params={"function": cron}).json()["jobs"])[1:] and found,
        "two cron ticks",
    )
    for job in jobs:
        job = wait_final(hearth, job["id"])
        assert job["source"] == "cron" and job["status"] == "succeeded"
        assert job["result"]["source"] == "hearth.schedule" and int(job["result"]["time"][17:19]) % 2 == 0
        assert "catch_up" not in job["result"]
    assert len({job["idempotency_key"] for job in jobs}) == len(jobs)  # each tick once
    ticks = sorted(float(job["idempotency_key"].rsplit(":", 1)[1]) for job in jobs)
    assert all(later - earlier >= 2 for earlier, later in itertools.pairwise(ticks)), ticks  # every 2 s, no oftener

    # a callback under way when Hearth stops is delivered after the start
    url = f"http://127.0.0.1:{receiver.server_port}/hook"
    called_id = submit(hearth, slow, {"s": 0}, callback_url=url)["invocation_id"]
    assert SlowReceiver.first_arrived.wait(20)
    # graceful shutdown while a job runs: it is given back (grace 0.5 s here), not lost or finished
    job_id = submit(hearth, slow, {"s": 3})["invocation_id"]
    deadline = time.monotonic() + 20
    while job_of(hearth, job_id)["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    hearth.stop()
    down_at = time.time()
    (row,) = query(hearth, "SELECT status, attempts, interruptions, worker FROM jobs WHERE id = ?", job_id)
    assert row == ("queued", 1, 1, None)
    assert re.search(r"\d+ running job\(s\) given back to the queue", hearth.log_path.read_text())
    assert query(hearth, "SELECT callback_status FROM jobs WHERE id = ?", called_id) == [("pending",)]
    SlowReceiver.release.set()
    first_missed = (int(down_at) // 2 + 1) * 2  # the first even second (a tick of */2) after the stop
    # Two ticks pass while Hearth is down, both older than the ticker's grace (2 * HEARTH_SCHEDULE_TICK_S + 1 s)
    # by the time it starts again: missed ticks, not late ones, so `once` has two to choose from.
    wait_past(first_missed + 2 + 2)
    hearth.start()
    up_at = time.time()
    job = wait_final(hearth, job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 2 and job["interruptions"] == 1

    def created_since_down() -> list[dict[str, Any]]:
        jobs = hearth.client.get("/api/jobs", params={"function": cron, "limit": 100}).json()["jobs"]
        return [job for job in jobs if job["created_at"] > down_at]

    def tick_of(job: dict[str, Any]) -> float:
        return float(job["idempotency_key"].rsplit(":", 1)[1])

    wait_for(lambda: any(tick_of(job) < up_at for job in created_since_down()), "the catch-up job")
    after = [wait_final(hearth, job["id"]) for job in created_since_down()]
    catch_ups = [job for job in after if job["result"].get("catch_up")]
    assert len(catch_ups) == 1, after  # HEARTH_SCHEDULE_CATCHUP=once (the default): the missed ticks run once
    assert down_at < tick_of(catch_ups[0]) < up_at

    deadline = time.monotonic() + 10
    while (called := job_of(hearth, called_id))["callback_status"] == "pending":
        assert time.monotonic() < deadline, called
        time.sleep(0.1)
    assert called["callback_status"] == "delivered"
    assert [d["invocation_id"] for d in SlowReceiver.deliveries] == [called_id]
    receiver.shutdown()

    bad = hearth.client.patch(f"/api/functions/{cron}", json={"schedule": ["every minute"]})
    assert bad.status_code == 422
    assert hearth.client.patch(f"/api/functions/{cron}", json={"schedule": None}).status_code == 200


def test_kill_9_loses_no_job(hearth_a: HearthServer, fname: str) -> None:
    """1,000 jobs; kill -9 while they are being submitted and run; start again; a client resubmits what
    got no 202 with the same idempotency key: every job runs to one final state, none is lost or doubled."""
    hearth = hearth_a
    handler = "import time\ndef handler(event, context):\n    time.sleep(0.01)\n    return event['n']\n"
    hearth.deploy(fname, handler, max_instances=2, concurrency=4)  # async share: 4 at once
    accepted: dict[int, str] = {}
    lock = threading.Lock()
    killed = threading.Event()
    running = "SELECT 1 FROM jobs WHERE function_name = ? AND status = 'running' LIMIT 1"

    def send(n: int) -> None:
        try:
            response = hearth.client.post(
                f"/api/functions/{fname}/invoke",
                params={"mode": "async", "idempotency_key": f"n-{n}"},
                json={"n": n},
                timeout=10,
            )
        except httpx.HTTPError:
            return
        if response.status_code == 202:
            with lock:
                accepted[n] = response.json()["invocation_id"]
                # From the 600th job on, at a moment when jobs are running (between two claims none may be)
                if len(accepted) >= 600 and not killed.is_set() and query(hearth, running, fname):
                    killed.set()
                    hearth.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(1000)))
    assert killed.is_set()
    hearth.proc.wait()  # type: ignore[union-attr]
    states = dict(query(hearth, "SELECT status, count(*) FROM jobs WHERE function_name = ? GROUP BY status", fname))
    assert set(states) <= {"queued", "running", "succeeded"}, states
    assert states.get("queued", 0) + states.get("running", 0) > 0, f"nothing left to recover: {states}"
    assert sum(states.values()) >= len(accepted)  # every 202 was stored (and maybe a few unanswered)

    hearth.start()
    restarted_at = time.time()
    if states.get("running"):  # queued again at the start, not after their lease (30 s) ran out
        assert f"scheduler: {states['running']} job(s) left running by an earlier run" in hearth.log_path.read_text()
    for n in range(1000):  # the client retries what it has no answer for, with the same key
        if n not in accepted:
            response = hearth.client.post(
                f"/api/functions/{fname}/invoke",
                params={"mode": "async", "idempotency_key": f"n-{n}"},
                json={"n": n},
            )
            assert response.status_code == 202
            accepted[n] = response.json()["invocation_id"]
    deadline = time.monotonic() + 90
    unfinished = (
        "SELECT count(*) FROM jobs WHERE function_name = ? AND status NOT IN ('succeeded', 'failed', 'timed_out')"
    )
    while query(hearth, unfinished, fname)[0][0]:
        assert time.monotonic() < deadline, "jobs did not finish after the restart"
        time.sleep(0.25)

    rows = query(
        hearth,
        "SELECT id, status, result, attempts, interruptions, idempotency_key, finished_at, last_record_id "
        "FROM jobs WHERE function_name = ?",
        fname,
    )
    assert len(rows) == 1000 and {row[0] for row in rows} == set(accepted.values())
    by_n = {int(row[5][2:]): row for row in rows}
    assert set(by_n) == set(range(1000))
    assert {row[1] for row in rows} == {"succeeded"}
    assert all(json.loads(row[2]) == n for n, row in by_n.items())
    assert all(row[3] == row[4] + 1 for row in rows)  # interrupted attempts show, and only one ran through
    interrupted = [row for row in rows if row[4]]
    assert interrupted, "no job was running at the kill: the test proves nothing"
    # the final attempt of every job that finished after the restart has its record (written behind)
    after = {row[7] for row in rows if row[6] > restarted_at}
    assert after
    for record_id in after:
        assert record_of(hearth, record_id)["status"] == "ok"
    sample = job_of(hearth, interrupted[0][0])
    assert sample["status"] == "succeeded" and sample["interruptions"] >= 1 and sample["attempts"] >= 2
