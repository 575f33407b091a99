"""Shared pieces of the benchmarks: servers to measure, a wrk driver, and statistics."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from hearth.testing import HearthServer, free_port

BENCH_DIR = Path(__file__).resolve().parent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(values_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "p50_ms": round(statistics.median(values_ms), 2),
        "p95_ms": round(percentile(values_ms, 95), 2),
        "p99_ms": round(percentile(values_ms, 99), 2),
    }


def wrk(url: str, connections: int, seconds: float, body: str = "{}") -> dict[str, Any]:
    """Run wrk (Debian's) against `url`; returns rps and latency percentiles in ms."""
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "-s",
            str(BENCH_DIR / "wrk_report.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "WRK_BODY": body},
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
    out = done.stdout
    line = next(line for line in out.splitlines() if line.startswith("JSON "))
    data = json.loads(line[5:])
    seconds_run = data["duration_us"] / 1e6
    return {
        "connections": connections,
        "rps": round(data["requests"] / seconds_run, 1),
        "errors": data["errors"],
        "p50_ms": data["p50_us"] / 1000,
        "p95_ms": data["p95_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
    }


class BaselineServer:
    """The bare FastAPI hello app, under uvicorn with the same loop and HTTP parser as Hearth."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hello"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BaselineServer:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.baseline_app:app",
                "--port",
                str(self.port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=BENCH_DIR.parent,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.post(self.url, timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("baseline app did not start")

    def __exit__(self, *_: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=10)


def hearth_server(env: dict[str, str] | None = None) -> HearthServer:
    data_dir = Path(tempfile.mkdtemp(prefix="hearth-bench-")) / "data"
    server = HearthServer(data_dir, env=env)
    server.start()
    return server
