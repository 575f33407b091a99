"""Sync latency under an async flood: `python -m bench.async_flood [--seconds 8] [--rounds 2]`.

One function, 4 instances, concurrency 1. Sync traffic: wrk with 2 connections on its HTTP trigger
(the handler returns at once). The flood: async jobs of the same function, each sleeping 20 ms, so
that they compete for the same instances:

- `drain`: a backlog of queued jobs, drained by the scheduler while wrk runs;
- `drain+submit`: the same, plus a client submitting 100 more async jobs per second (HTTP API load);
- `share 1.0`: `drain` on a server with `HEARTH_ASYNC_SHARE=1` and `HEARTH_ASYNC_MAX_CONCURRENCY=8`,
  i.e. without the async share: what the default share (0.5) protects sync traffic from.

Each flood run is paired with a baseline run just before it (same server, empty queue); the figure
is the ratio of sync p95 with the flood to without, the median over the pairs. Written to
bench/results/async_flood.json.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.harness import hearth_server, wrk
from hearth.testing import HearthServer

RESULTS = Path(__file__).resolve().parent / "results"
HANDLER = "import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return 1\n"
JOB_SLEEP_S = 0.02
SYNC_CONNECTIONS = 2
SUBMIT_RATE = 100.0  # async submissions per second during `drain+submit`


def queued(server: HearthServer) -> int:
    with sqlite3.connect(server.data_dir / "hearth.db", timeout=30) as db:
        return int(db.execute("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0])


def finished(server: HearthServer) -> int:
    with sqlite3.connect(server.data_dir / "hearth.db", timeout=30) as db:
        return int(db.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0])


def fill(server: HearthServer, name: str, jobs: int) -> float:
    """Enqueue `jobs` async jobs (8 client threads); returns the submit rate."""
    started = time.perf_counter()

    def send(_: int) -> None:
        response = server.client.post(
            f"/api/functions/{name}/invoke", params={"mode": "async"}, json={"sleep": JOB_SLEEP_S}
        )
        assert response.status_code == 202, response.text

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(jobs)))
    return jobs / (time.perf_counter() - started)


def drop_backlog(server: HearthServer) -> None:
    """End the flood: what is still queued is marked failed in the store, so the next baseline runs
    on an empty queue without waiting for the backlog to drain (the scheduler claims only `queued`)."""
    with sqlite3.connect(server.data_dir / "hearth.db", timeout=30) as db:
        db.execute(
            "UPDATE jobs SET status = 'failed', finished_at = ?, error = '{\"type\": \"DroppedByBenchmark\"}' "
            "WHERE status = 'queued'",
            (time.time(),),
        )


def wait_empty(server: HearthServer, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while queued(server):
        if time.monotonic() > deadline:
            raise RuntimeError("the queue did not drain")
        time.sleep(0.5)


def flood_run(server: HearthServer, name: str, seconds: float, backlog: int, submit: bool) -> dict[str, Any]:
    url = f"{server.base_url}/fn/{name}"
    wait_empty(server)
    baseline = wrk(url, SYNC_CONNECTIONS, seconds)
    fill_rate = fill(server, name, backlog)
    stop = threading.Event()
    submitted = [0]

    def submitter() -> None:  # open loop: SUBMIT_RATE jobs/s whatever the answers take
        with httpx.Client(base_url=server.base_url, headers=server.client.headers, timeout=30) as client:
            start = time.monotonic()
            while not stop.is_set():
                client.post(f"/api/functions/{name}/invoke", params={"mode": "async"}, json={"sleep": JOB_SLEEP_S})
                submitted[0] += 1
                time.sleep(max(0.0, start + submitted[0] / SUBMIT_RATE - time.monotonic()))

    threads = [threading.Thread(target=submitter) for _ in range(1 if submit else 0)]
    for thread in threads:
        thread.start()
    done_before = finished(server)
    flooded = wrk(url, SYNC_CONNECTIONS, seconds)
    done_during = finished(server) - done_before
    left = queued(server)
    stop.set()
    for thread in threads:
        thread.join()
    drop_backlog(server)
    return {
        "baseline": baseline,
        "flood": flooded,
        "p95_ratio": round(flooded["p95_ms"] / baseline["p95_ms"], 2),
        "p50_ratio": round(flooded["p50_ms"] / baseline["p50_ms"], 2),
        "rps_ratio": round(flooded["rps"] / baseline["rps"], 2),
        "backlog": backlog,
        "backlog_submit_rate": round(fill_rate, 1),
        "jobs_done_per_s": round(done_during / seconds, 1),
        "submitted_per_s": round(submitted[0] / seconds, 1),
        "queue_left_at_end": left,  # > 0: the flood lasted the whole window
    }


def scenario(env: dict[str, str], runs: list[tuple[str, bool]], seconds: float, backlog: int) -> dict[str, Any]:
    server = hearth_server({"HEARTH_KEEP_ALIVE_S": "600", **env})
    try:
        server.deploy("flood", HANDLER, max_instances=4, concurrency=1, min_warm=4)
        url = f"{server.base_url}/fn/flood"
        wrk(url, 4, 2)  # warm
        out: dict[str, Any] = {}
        for label, submit in runs:
            out.setdefault(label, []).append(flood_run(server, "flood", seconds, backlog, submit))
            print(json.dumps({label: out[label][-1]}), flush=True)
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=6, help="baseline/flood pairs per scenario")
    parser.add_argument("--backlog", type=int, default=2500, help="jobs queued before each flood run")
    args = parser.parse_args()
    default = scenario({}, [("drain", False), ("drain+submit", True)] * args.rounds, args.seconds, args.backlog)
    unshared = scenario(
        {"HEARTH_ASYNC_SHARE": "1", "HEARTH_ASYNC_MAX_CONCURRENCY": "8"},
        [("share 1.0", False)] * args.rounds,
        args.seconds,
        args.backlog,
    )
    runs = {**default, **unshared}
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "setup": {
            "instances": 4,
            "sync_connections": SYNC_CONNECTIONS,
            "job_sleep_ms": JOB_SLEEP_S * 1000,
            "seconds": args.seconds,
            "defaults": "HEARTH_ASYNC_SHARE=0.5, HEARTH_ASYNC_MAX_CONCURRENCY=4",
        },
        "runs": runs,
        # medians over the pairs: other work on a shared machine swings single runs both ways
        "p95_ratio": {label: round(statistics.median(r["p95_ratio"] for r in rows), 2) for label, rows in runs.items()},
        "p50_ratio": {label: round(statistics.median(r["p50_ratio"] for r in rows), 2) for label, rows in runs.items()},
        "rps_ratio": {label: round(statistics.median(r["rps_ratio"] for r in rows), 2) for label, rows in runs.items()},
        "jobs_done_per_s": {
            label: round(statistics.median(r["jobs_done_per_s"] for r in rows), 1) for label, rows in runs.items()
        },
    }
    print()
    print("| scenario | sync p95 without -> with flood (ms) | p95 ratio | sync rps ratio | async jobs done/s |")
    print("| --- | --- | --- | --- | --- |")
    for label, rows in runs.items():
        for r in rows:
            print(
                f"| {label} | {r['baseline']['p95_ms']:.2f} -> {r['flood']['p95_ms']:.2f} | {r['p95_ratio']} | "
                f"{r['rps_ratio']} | {r['jobs_done_per_s']} |"
            )
    for key in ("p95_ratio", "p50_ratio", "rps_ratio", "jobs_done_per_s"):
        print(f"{key} (median over rounds): {json.dumps(result[key])}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "async_flood.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
