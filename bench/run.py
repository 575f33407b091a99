"""Hearth's fast-path benchmarks: `make bench` (or `python -m bench.run [--only warm,cold,...]`).

Every figure comes with its baseline measured in the same run (bare FastAPI app, `docker run --rm`,
batching off), printed and written to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import docker

from bench.backends import bench_backends, table
from bench.harness import BaselineServer, hearth_server, summary_ms, wrk
from bench.http_front import measured
from hearth.images import containers

RESULTS = Path(__file__).resolve().parent / "results"
NOOP_PY = "def handler(event, context):\n    return 1\n"
NOOP_JS = "exports.handler = async () => 1;\n"
SMALL_PY = "def handler(event, context):\n    return sum(event.get('xs', []))\n"
LARGE_PY = (  # ~12 KB of JSON: 200 small objects (bench/baseline_app.py's /large sends the same bytes)
    "ITEMS = [{'id': i, 'name': f'item {i}', 'tags': ['a', 'b'], 'price': i * 1.5} for i in range(200)]\n"
    "def handler(event, context):\n    return {'items': ITEMS}\n"
)


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as f:
        total_kb = int(f.readline().split()[1])
    return {"cpus": os.cpu_count(), "memory_gib": round(total_kb / 2**20, 1), "kernel": platform.release()}


WARM_ROUNDS = 3
WARM_CONNECTIONS = (1, 16, 64)


def bench_warm(seconds: float, rounds: int = WARM_ROUNDS) -> dict[str, Any]:
    """Warm no-op throughput and latency through /fn vs a bare FastAPI hello app, with each server
    process' CPU per request (it moves less than throughput on a machine others load).

    Both servers run throughout, and each connection count is measured `rounds` times on each target,
    taking turns (which goes first rotates): a drift of the machine's speed over the run falls on all
    alike, where measuring Hearth and then the bare app could set a slow minute against a fast one.
    Each figure is the median of its rounds; `rps_rounds` and `ratio_rounds` keep every round.
    """
    server = hearth_server({"HEARTH_KEEP_ALIVE_S": "600"})
    try:
        server.deploy("noop-py", NOOP_PY, max_instances=4)
        server.deploy("noop-js", NOOP_JS, language="javascript", max_instances=4)
        assert server.proc is not None
        targets = {
            "python": (server.proc.pid, f"{server.base_url}/fn/noop-py"),
            "javascript": (server.proc.pid, f"{server.base_url}/fn/noop-js"),
        }
        for _, url in targets.values():
            wrk(url, 64, 3)  # start the instances: the figures below are warm
        with BaselineServer() as baseline:
            assert baseline.proc is not None
            targets["baseline"] = (baseline.proc.pid, baseline.url)
            wrk(baseline.url, 16, 2)
            runs: dict[str, dict[int, list[dict[str, Any]]]] = {label: {} for label in targets}
            for round_ in range(rounds):
                items = list(targets.items())
                order = items[round_ % len(items) :] + items[: round_ % len(items)]
                for connections in WARM_CONNECTIONS:
                    for label, (pid, url) in order:
                        runs[label].setdefault(connections, []).append(measured(pid, url, connections, seconds))
    finally:
        server.stop()
    out: dict[str, Any] = {label: [_median_row(runs[label][c]) for c in WARM_CONNECTIONS] for label in targets}
    for runtime in ("python", "javascript"):
        for row, base, connections in zip(out[runtime], out["baseline"], WARM_CONNECTIONS, strict=True):
            row["ratio_to_baseline_rps"] = round(row["rps"] / base["rps"], 2)
            row["ratio_rounds"] = [
                round(mine["rps"] / theirs["rps"], 2)
                for mine, theirs in zip(runs[runtime][connections], runs["baseline"][connections], strict=True)
            ]
            row["added_p50_ms"] = round(row["p50_ms"] - base["p50_ms"], 3)
    return out


def _median_row(done: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"connections": done[0]["connections"], "rounds": len(done)}
    for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "server_cpu_us_per_request"):
        row[key] = round(statistics.median(run[key] for run in done), 3)
    row["errors"] = sum(run["errors"] for run in done)
    row["rps_rounds"] = [run["rps"] for run in done]
    return row


def bench_large_result(seconds: float) -> dict[str, Any]:
    """Warm throughput at 16 connections when the result is ~12 KB of JSON, vs the bare app sending those bytes.

    Where the host parses and re-encodes results, this is where it shows (docs/protocol.md: results pass through).
    """
    server = hearth_server({"HEARTH_KEEP_ALIVE_S": "600"})
    try:
        server.deploy("large-py", LARGE_PY, max_instances=4)
        url = f"{server.base_url}/fn/large-py"
        assert len(server.client.post("/api/functions/large-py/invoke").content) > 10_000
        wrk(url, 64, 3)
        hearth = wrk(url, 16, seconds)
    finally:
        server.stop()
    with BaselineServer() as baseline:
        url = baseline.url.replace("/hello", "/large")
        wrk(url, 16, 2)
        base = wrk(url, 16, seconds)
    hearth["ratio_to_baseline_rps"] = round(hearth["rps"] / base["rps"], 2)
    return {"python": hearth, "baseline": base}


def bench_cold(trials: int) -> dict[str, Any]:
    """First call of a freshly deployed function: from a stem cell, from nothing; vs `docker run --rm`."""
    out: dict[str, Any] = {}
    for label, stems in (("stem_cell", "1"), ("true_cold", "0")):
        server = hearth_server({"HEARTH_STEM_CELLS": stems})
        try:
            time.sleep(2)
            latencies = []
            for i in range(trials):
                server.deploy(f"c{i}", NOOP_PY)
                started = time.perf_counter()
                response = server.invoke(f"c{i}")
                latencies.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
                assert response.headers["X-Hearth-Path"] == ("stem" if stems == "1" else "cold")
                server.client.delete(f"/api/functions/c{i}")
                time.sleep(0.6 if stems == "1" else 0.1)  # let the stem cell refill, as between real deploys
            out[label] = summary_ms(latencies)
        finally:
            server.stop()
    image = containers.image_ref("python")
    runs = []
    for _ in range(trials):
        started = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", "--network", "none", image, "python3", "-c", "pass"], check=True)
        runs.append((time.perf_counter() - started) * 1000)
    out["docker_run_baseline"] = summary_ms(runs)
    base = out["docker_run_baseline"]["p50_ms"]
    out["stem_cell"]["ratio_to_docker_run_p50"] = round(out["stem_cell"]["p50_ms"] / base, 3)
    out["true_cold"]["ratio_to_docker_run_p50"] = round(out["true_cold"]["p50_ms"] / base, 3)
    return out


def bench_batching(seconds: float) -> dict[str, Any]:
    """A small handler at 64 concurrent clients, batching on vs off, same instances."""
    server = hearth_server()
    out: dict[str, Any] = {}
    body = json.dumps({"xs": list(range(10))})
    try:
        server.deploy("sum-off", SMALL_PY, max_instances=2)
        server.deploy("sum-on", SMALL_PY, max_instances=2, batch={"max_size": 32, "max_wait_ms": 2})
        for label, name in (("off", "sum-off"), ("on", "sum-on")):
            url = f"{server.base_url}/fn/{name}"
            wrk(url, 64, 2, body)
            out[label] = wrk(url, 64, seconds, body)
    finally:
        server.stop()
    out["throughput_ratio_on_vs_off"] = round(out["on"]["rps"] / out["off"]["rps"], 2)
    return out


def _shim_rss_kb(container_id: str) -> int:
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"containerd-shim" in cmdline and container_id.encode() in cmdline:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def bench_density(sandboxes: int) -> dict[str, Any]:
    """Warm Python sandboxes: memory each (cgroup + containerd shim), idle CPU, how many fit in 24 GiB."""
    server = hearth_server({"HEARTH_STEM_CELLS": "0"})
    client = docker.from_env()
    try:
        server.deploy("dense", NOOP_PY, min_warm=sandboxes, max_instances=sandboxes)
        deadline = time.monotonic() + 300
        containers: list[Any] = []
        while time.monotonic() < deadline:
            containers = client.containers.list(filters={"name": "hearth-dense-v1-"})
            if len(containers) >= sandboxes:
                break
            time.sleep(1)
        time.sleep(3)
        memory, shims, cpu_before = [], [], {}
        for container in containers:
            base = Path(f"/sys/fs/cgroup/memory/docker/{container.id}")
            memory.append(int((base / "memory.usage_in_bytes").read_text()))
            shims.append(_shim_rss_kb(container.id) * 1024)
            cpu_before[container.id] = int(
                Path(f"/sys/fs/cgroup/cpuacct/docker/{container.id}/cpuacct.usage").read_text()
            )
        time.sleep(10)
        idle_cpu_ns = sum(
            int(Path(f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage").read_text()) - before
            for cid, before in cpu_before.items()
        )
    finally:
        server.stop()
        client.close()
    per_sandbox = statistics.median(memory) + statistics.median(shims)
    return {
        "sandboxes": len(containers),
        "cgroup_memory_mib_p50": round(statistics.median(memory) / 2**20, 2),
        "shim_rss_mib_p50": round(statistics.median(shims) / 2**20, 2),
        "per_sandbox_mib": round(per_sandbox / 2**20, 2),
        "fit_in_24_gib": int(24 * 2**30 / per_sandbox),
        "idle_cpu_percent_all": round(idle_cpu_ns / 10e9 * 100, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="warm,large,front,cold,batching,density,backends,microvm,provided")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=WARM_ROUNDS, help="rounds of the warm comparison")
    parser.add_argument("--trials", type=int, default=30, help="cold-start trials")
    parser.add_argument("--sandboxes", type=int, default=40, help="warm sandboxes for the density figure")
    parser.add_argument("--backends", default="docker,gvisor", help="isolation backends compared (`backends`)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    results: dict[str, Any] = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "warm" in only:
        results["warm"] = bench_warm(args.seconds, args.rounds)
        print(json.dumps({"warm": results["warm"]}, indent=1), flush=True)
    if "large" in only:  # a ~12 KB result: what parsing and re-encoding results on the host would cost
        results["large"] = bench_large_result(args.seconds)
        print(json.dumps({"large": results["large"]}, indent=1), flush=True)
    if "front" in only:  # the HTTP front's bounds on vs off, same function, alternating rounds
        from bench import http_front

        results["front"] = http_front.bench_http_front(args.seconds)
        print(json.dumps({"front": results["front"]}, indent=1), flush=True)
        print(http_front.table(results["front"]), flush=True)
    if "cold" in only:
        results["cold"] = bench_cold(args.trials)
        print(json.dumps({"cold": results["cold"]}, indent=1), flush=True)
    if "batching" in only:
        results["batching"] = bench_batching(args.seconds)
        print(json.dumps({"batching": results["batching"]}, indent=1), flush=True)
    if "density" in only:
        results["density"] = bench_density(args.sandboxes)
        print(json.dumps({"density": results["density"]}, indent=1), flush=True)
    if "backends" in only:
        results["backends"] = bench_backends(args.trials, args.seconds, tuple(args.backends.split(",")))
        print(json.dumps({"backends": results["backends"]}, indent=1), flush=True)
        print(table(results["backends"]), flush=True)
    if "runtimes" in only:  # first calls per runtime (python3.11/3.13, nodejs18.x/20.x), boto3's import
        from bench import runtimes

        results["runtimes"] = runtimes.bench_runtimes(min(args.trials, 10))
        print(json.dumps({"runtimes": results["runtimes"]}, indent=1), flush=True)
        print(runtimes.table(results["runtimes"]), flush=True)
    if "microvm" in only:  # boot vs restore, first calls, round trip, idle memory: microvm next to docker
        from bench import microvm

        results["microvm"] = microvm.bench_microvm(min(args.trials, 10), args.seconds)
        print(json.dumps({"microvm": results["microvm"]}, indent=1), flush=True)
        print(microvm.table(results["microvm"]), flush=True)
    if "provided" in only:  # custom runtimes and image functions, next to Python and to AWS's RIE
        from bench import provided

        results["provided"] = provided.bench_provided(args.seconds, min(args.trials, 10))
        print(json.dumps({"provided": results["provided"]}, indent=1), flush=True)
        print(provided.table(results["provided"]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    latest = RESULTS / "latest.json"
    # Sections not run this time (`--only`) keep their last figures.
    previous = json.loads(latest.read_text()) if latest.exists() else {}
    latest.write_text(json.dumps({**previous, **results}, indent=1))
    print(f"written to {latest}")


if __name__ == "__main__":
    main()
