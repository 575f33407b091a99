"""What the HTTP front's bounds cost the warm path (`python -m bench.run --only front`).

Three Hearth servers side by side, the same warm no-op function on each: one with the default bounds
(header size and time, body time, connection cap), one with all of them off (`0`: uvicorn's httptools
protocol without bounds), and a control bounded like the first. Rounds rotate which goes first, so drift on
a shared machine falls on all; what the two identical servers differ by is the noise the on/off
difference is read against. Besides requests per second, the server process' CPU time per request
(user + system, from /proc) is reported: on a machine others load, it moves less than throughput.
The same three-way comparison on the bare FastAPI hello app (no sandbox behind it) isolates the
front itself.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bench.harness import hearth_server, wrk
from hearth.testing import free_port

NOOP_PY = "def handler(event, context):\n    return 1\n"
BOUNDS_OFF = {
    "HEARTH_HTTP_MAX_HEADER_BYTES": "0",
    "HEARTH_HTTP_HEADER_TIMEOUT_S": "0",
    "HEARTH_HTTP_BODY_TIMEOUT_S": "0",
    "HEARTH_HTTP_MAX_CONNECTIONS": "0",
}
CONNECTIONS = (1, 16, 64)
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def measured(pid: int, url: str, connections: int, seconds: float) -> dict[str, Any]:
    """One wrk run, plus the server process' CPU microseconds per request during it."""
    before = cpu_s(pid)
    run = wrk(url, connections, seconds)
    requests = run["rps"] * max(1, round(seconds))
    run["server_cpu_us_per_request"] = round((cpu_s(pid) - before) / requests * 1e6, 1)
    return run


def compare(targets: dict[str, tuple[int, str]], seconds: float, rounds: int) -> list[dict[str, Any]]:
    """wrk on each (pid, url) target, rounds rotating which goes first; a row per connection count."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {label: {c: [] for c in CONNECTIONS} for label in targets}
    for round_ in range(rounds):
        items = list(targets.items())
        order = items[round_ % len(items) :] + items[: round_ % len(items)]  # each goes first in turn
        for connections in CONNECTIONS:
            for label, (pid, url) in order:
                runs[label][connections].append(measured(pid, url, connections, seconds))
    rows = []
    for connections in CONNECTIONS:
        row: dict[str, Any] = {"connections": connections}
        for label in targets:
            done = runs[label][connections]
            rps = [run["rps"] for run in done]
            row[f"{label}_rps"] = round(statistics.median(rps), 1)
            row[f"{label}_rps_rounds"] = rps
            row[f"{label}_p50_ms"] = round(statistics.median(run["p50_ms"] for run in done), 3)
            row[f"{label}_errors"] = sum(run["errors"] for run in done)
            row[f"{label}_cpu_us_per_request"] = round(
                statistics.median(run["server_cpu_us_per_request"] for run in done), 1
            )
        row["ratio_bounded_to_unbounded_rps"] = round(row["bounded_rps"] / row["unbounded_rps"], 3)
        row["ratio_bounded_to_control_rps"] = round(row["bounded_rps"] / row["bounded_control_rps"], 3)
        row["added_cpu_us_per_request"] = round(
            row["bounded_cpu_us_per_request"] - row["unbounded_cpu_us_per_request"], 1
        )
        row["control_cpu_us_difference"] = round(
            row["bounded_cpu_us_per_request"] - row["bounded_control_cpu_us_per_request"], 1
        )
        rows.append(row)
    return rows


@contextmanager
def bare_app(mode: str) -> Iterator[tuple[int, str]]:
    """The bare hello app under the bounded protocol or uvicorn's own: (pid, url)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.front_app", str(port), mode])
    url = f"http://127.0.0.1:{port}/hello"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the bare app did not start"
                time.sleep(0.1)
        yield proc.pid, url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def bench_http_front(seconds: float, rounds: int = 4) -> dict[str, Any]:
    servers = {
        "bounded": hearth_server({"HEARTH_KEEP_ALIVE_S": "600"}),
        "unbounded": hearth_server({"HEARTH_KEEP_ALIVE_S": "600", **BOUNDS_OFF}),
        "bounded_control": hearth_server({"HEARTH_KEEP_ALIVE_S": "600"}),
    }
    try:
        targets = {}
        for label, server in servers.items():
            assert server.proc is not None
            server.deploy("noop-py", NOOP_PY, max_instances=4)
            targets[label] = (server.proc.pid, f"{server.base_url}/fn/noop-py")
            wrk(targets[label][1], 64, 3)  # start the instances: the figures below are warm
        hearth_rows = compare(targets, seconds, rounds)
    finally:
        for server in servers.values():
            server.stop()
    with bare_app("bounded") as bounded, bare_app("off") as unbounded, bare_app("bounded") as control:
        bare_rows = compare({"bounded": bounded, "unbounded": unbounded, "bounded_control": control}, seconds, rounds)
    return {"rounds": rounds, "seconds_per_run": seconds, "hearth_warm_noop": hearth_rows, "bare_app": bare_rows}


def table(result: dict[str, Any]) -> str:
    return "\n\n".join(
        f"{title}:\n{rows_table(result[key])}"
        for key, title in (("hearth_warm_noop", "warm no-op through /fn"), ("bare_app", "bare FastAPI hello app"))
    )


def rows_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| connections | rps bounded / off / control | bounded ÷ off (rps) | bounded ÷ control (noise) | "
        "p50 ms bounded / off | server CPU µs per request bounded / off / control |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['connections']} | {row['bounded_rps']:,.0f} / {row['unbounded_rps']:,.0f} / "
            f"{row['bounded_control_rps']:,.0f} | {row['ratio_bounded_to_unbounded_rps']:.2f} | "
            f"{row['ratio_bounded_to_control_rps']:.2f} | "
            f"{row['bounded_p50_ms']:.2f} / {row['unbounded_p50_ms']:.2f} | "
            f"{row['bounded_cpu_us_per_request']:.0f} / {row['unbounded_cpu_us_per_request']:.0f} / "
            f"{row['bounded_control_cpu_us_per_request']:.0f} |"
        )
    return "\n".join(lines)
