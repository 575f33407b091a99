"""Isolation backends side by side (`python -m bench.run --only backends`): start, first call, warm, memory.

Every backend is measured in the same run with the same functions, and each figure of a backend other
than docker (runc) is also given as a ratio to docker's. A backend this host cannot run is reported with
the reason GET /api/backends gives.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

from bench.harness import hearth_server, summary_ms, wrk
from hearth.engine.sandbox import Call, FunctionSpec, Purpose
from hearth.images import catalog, containers

NOOP_PY = "def handler(event, context):\n    return 1\n"
OCI_RUNTIME = {"docker": None, "gvisor": "runsc"}  # `docker run --runtime` of the baseline


def wait_for_stem_cell(server: Any, backend: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        key = f"{backend}/{catalog.default_runtime('python')}"  # stem cells are per runtime
        if server.client.get("/readyz").json()["stem_cells"].get(key, 0) >= 1:
            return
        time.sleep(0.1)
    raise RuntimeError(f"no {backend} stem cell became ready within {timeout_s} s")


def first_calls(server: Any, trials: int, prefix: str, expect_path: str, backend: str) -> dict[str, float]:
    """Deploy then invoke a new function `trials` times: the first call's latency as its caller sees it."""
    latencies = []
    for i in range(trials):
        if expect_path == "stem":  # as between real deploys: the stem cell taken by the last one has refilled
            wait_for_stem_cell(server, backend)
        time.sleep(0.1)
        name = f"{prefix}{i}"
        server.deploy(name, NOOP_PY)
        started = time.perf_counter()
        response = server.invoke(name)
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
        assert response.headers["X-Hearth-Path"] == expect_path, response.headers
        server.client.delete(f"/api/functions/{name}")
    return summary_ms(latencies)


def docker_run(runtime: str | None, trials: int) -> dict[str, float]:
    image = containers.image_ref("python")
    extra = ["--runtime", runtime] if runtime else []
    runs = []
    for _ in range(trials):
        started = time.perf_counter()
        subprocess.run(
            ["docker", "run", "--rm", "--network", "none", *extra, image, "python3", "-c", "pass"],
            check=True,
            capture_output=True,
        )
        runs.append((time.perf_counter() - started) * 1000)
    return summary_ms(runs)


def sandbox_round_trip(name: str, calls: int) -> dict[str, float]:
    """One warm sandbox driven in-process, no HTTP: serial invoke frames over the agent's channel."""
    from hearth.api.app import build_backends
    from hearth.config import Settings

    async def run() -> list[float]:
        backend = build_backends(Settings(), "bench-round-trip")[name]
        limits = backend.stem_limits("python")
        assert limits is not None
        code = Path(tempfile.mkdtemp(prefix="hearth-bench-rtt-"))
        (code / "main.py").write_text(NOOP_PY)
        spec = FunctionSpec(name="rtt", version=1, language="python", handler="handler", code_dir=code)
        sandbox = await backend.create("python", limits, Purpose.serve(spec))
        try:
            await sandbox.load(spec)
            times = []
            for i in range(calls + 200):
                started = time.perf_counter()
                (reply,) = await sandbox.invoke([Call(str(i), {})], 5)
                if i >= 200:  # the first calls warm up the agent and the channel
                    times.append((time.perf_counter() - started) * 1000)
                assert reply.ok, reply
            return times
        finally:
            await sandbox.stop()
            await backend.close()

    return summary_ms(asyncio.run(run()))


def idle_memory(server: Any, sandboxes: int) -> dict[str, float]:
    """Warm idle Python sandboxes: the container's memory cgroup (runsc's Sentry and Gofer included) + its shim."""
    from bench.run import _shim_rss_kb

    client = docker.from_env()
    try:
        server.deploy("dense", NOOP_PY, min_warm=sandboxes, max_instances=sandboxes)
        deadline = time.monotonic() + 120
        containers: list[Any] = []
        while time.monotonic() < deadline and len(containers) < sandboxes:
            time.sleep(1)
            containers = client.containers.list(filters={"name": "hearth-dense-v1-"})
        time.sleep(3)
        memory = [
            int(Path(f"/sys/fs/cgroup/memory/docker/{c.id}/memory.usage_in_bytes").read_text()) for c in containers
        ]
        shims = [_shim_rss_kb(str(c.id)) * 1024 for c in containers]
    finally:
        client.close()
    cgroup, shim = statistics.median(memory), statistics.median(shims)
    return {
        "sandboxes": len(containers),
        "cgroup_memory_mib_p50": round(cgroup / 2**20, 2),
        "shim_rss_mib_p50": round(shim / 2**20, 2),
        "per_sandbox_mib": round((cgroup + shim) / 2**20, 2),
    }


def bench_backend(name: str, trials: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # The backend under test is the default one, so its stem cells start at boot as docker's do.
    server = hearth_server({"HEARTH_DEFAULT_BACKEND": name, "HEARTH_STEM_CELLS": "1", "HEARTH_KEEP_ALIVE_S": "600"})
    try:
        entry = next(b for b in server.client.get("/api/backends").json()["backends"] if b["name"] == name)
        if not entry["available"]:
            return {"available": False, "reason": entry["reason"]}
        out["stem_cell_first_call"] = first_calls(server, trials, "s", "stem", name)
        server.deploy("noop", NOOP_PY, max_instances=4)
        url = f"{server.base_url}/fn/noop"
        wrk(url, 16, 2)  # start the instances: the figures below are warm
        out["warm"] = [wrk(url, connections, seconds) for connections in (1, 16)]
        out["idle_memory"] = idle_memory(server, 5)
        costs = next(b for b in server.client.get("/api/backends").json()["backends"] if b["name"] == name)
        out["sandbox_start_reported"] = costs["start_cost"]["by_runtime"].get("python")
    finally:
        server.stop()
    out["sandbox_round_trip"] = sandbox_round_trip(name, 2000)
    server = hearth_server({"HEARTH_DEFAULT_BACKEND": name, "HEARTH_STEM_CELLS": "0"})
    try:
        time.sleep(1)
        out["true_cold_first_call"] = first_calls(server, trials, "c", "cold", name)
    finally:
        server.stop()
    out["docker_run_baseline"] = docker_run(OCI_RUNTIME.get(name), trials)
    return out


def ratios(backend: dict[str, Any], docker_: dict[str, Any]) -> dict[str, float]:
    """Each figure of `backend` divided by docker's (latency and memory: > 1 is worse; rps: < 1 is worse)."""
    out = {}
    for key in ("stem_cell_first_call", "true_cold_first_call", "docker_run_baseline", "sandbox_round_trip"):
        out[f"{key}_p50"] = round(backend[key]["p50_ms"] / docker_[key]["p50_ms"], 2)
    for row, base in zip(backend["warm"], docker_["warm"], strict=True):
        c = row["connections"]
        out[f"warm_c{c}_rps"] = round(row["rps"] / base["rps"], 2)
        out[f"warm_c{c}_p50"] = round(row["p50_ms"] / base["p50_ms"], 2)
    out["idle_memory_per_sandbox"] = round(
        backend["idle_memory"]["per_sandbox_mib"] / docker_["idle_memory"]["per_sandbox_mib"], 2
    )
    return out


def bench_backends(trials: int, seconds: float, names: tuple[str, ...] = ("docker", "gvisor")) -> dict[str, Any]:
    out: dict[str, Any] = {name: bench_backend(name, trials, seconds) for name in names}
    base = out.get("docker", {})
    for name in names:
        if name != "docker" and out[name].get("available", True) and base.get("available", True):
            out[name]["ratio_to_docker"] = ratios(out[name], base)
    return out


def table(results: dict[str, Any]) -> str:
    """The figures as a Markdown table (README's performance section)."""
    lines = [
        "| backend | stem-cell first call p50 | true cold p50 | `docker run` p50 | warm rps c1 / c16 "
        "| warm p50 c1 ms | sandbox round trip p50 / p99 ms | idle MiB/sandbox |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        if not r.get("available", True):
            lines.append(f"| {name} | not available: {r['reason']} | | | | | | |")
            continue
        warm = {row["connections"]: row for row in r["warm"]}
        rtt = r["sandbox_round_trip"]
        lines.append(
            f"| {name} | {r['stem_cell_first_call']['p50_ms']:.0f} ms | {r['true_cold_first_call']['p50_ms']:.0f} ms "
            f"| {r['docker_run_baseline']['p50_ms']:.0f} ms | {warm[1]['rps']:.0f} / {warm[16]['rps']:.0f} "
            f"| {warm[1]['p50_ms']:.2f} | {rtt['p50_ms']:.2f} / {rtt['p99_ms']:.2f} "
            f"| {r['idle_memory']['per_sandbox_mib']:.1f} |"
        )
    return "\n".join(lines)
