"""First calls per runtime (`python -m bench.run --only runtimes`): what the bigger images and the SDKs cost.

For each runtime: the first call of a freshly deployed function from a stem cell (the default
runtimes keep stem cells; the others start cold) and from nothing (`HEARTH_STEM_CELLS=0`); then the
first call of a Python function that imports boto3 (and makes a client) at module level, next to one
that does not: the import is paid only by handlers that import it.
"""

from __future__ import annotations

import time
from typing import Any

from bench.harness import hearth_server, summary_ms
from hearth.images import catalog
from hearth.testing import HearthServer

NOOP = {"python": "def handler(event, context):\n    return 1\n", "javascript": "exports.handler = async () => 1;\n"}
BOTO3 = {
    "plain": NOOP["python"],
    "import boto3": "import boto3\n\ndef handler(event, context):\n    return 1\n",
    "boto3.client('s3')": (
        "import boto3\n\ns3 = boto3.client('s3', region_name='us-east-1')\n\n"
        "def handler(event, context):\n    return 1\n"
    ),
}
STEM_WAIT_S = 30.0


# The agents' runtimes: provided (custom runtimes, a bootstrap of one's own) is measured by bench/provided.py.
AGENT_RUNTIMES: tuple[str, ...] = tuple(r for r in catalog.RUNTIMES if catalog.language_of(r) in catalog.LANGUAGES)


def wait_for_stem_cell(server: HearthServer, runtime: str) -> None:
    deadline = time.monotonic() + STEM_WAIT_S
    while time.monotonic() < deadline:
        if server.client.get("/api/backends/docker").json()["stem_cells"].get(runtime, 0) >= 1:
            return
        time.sleep(0.05)


def first_calls(server: HearthServer, runtime: str, code: str, trials: int, stems: bool) -> dict[str, Any]:
    latencies, paths = [], set()
    has_stem_cells = runtime in {catalog.default_runtime(language) for language in catalog.LANGUAGES}
    for i in range(trials):
        if stems and (has_stem_cells or i > 0):  # other runtimes get stem cells once first used
            wait_for_stem_cell(server, runtime)  # as between real deploys: the refill has happened
        name = f"r{i}"
        response = server.client.post("/api/functions", json={"name": name, "runtime": runtime, "code": code})
        assert response.status_code == 201, response.text
        started = time.perf_counter()
        response = server.invoke(name)
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
        paths.add(response.headers["X-Hearth-Path"])
        server.client.delete(f"/api/functions/{name}")
    return {**summary_ms(latencies), "paths": sorted(paths)}


def bench_runtimes(trials: int) -> dict[str, Any]:
    out: dict[str, Any] = {"stem_cells_on": {}, "stem_cells_off": {}, "python_boto3_first_call": {}}
    for label, stems in (("stem_cells_on", True), ("stem_cells_off", False)):
        server = hearth_server({"HEARTH_STEM_CELLS": "1" if stems else "0"})
        try:
            time.sleep(2)
            for runtime in AGENT_RUNTIMES:
                code = NOOP[catalog.language_of(runtime)]
                out[label][runtime] = first_calls(server, runtime, code, trials, stems)
        finally:
            server.stop()
    server = hearth_server({"HEARTH_STEM_CELLS": "1"})
    try:
        time.sleep(2)
        for label, code in BOTO3.items():
            out["python_boto3_first_call"][label] = first_calls(
                server, catalog.default_runtime("python"), code, trials, True
            )
    finally:
        server.stop()
    return out


def table(figures: dict[str, Any]) -> str:
    rows = ["| runtime | first call, stem cells on (p50) | first call, stem cells off (p50) |", "| --- | --- | --- |"]
    for runtime in AGENT_RUNTIMES:
        on, off = figures["stem_cells_on"][runtime], figures["stem_cells_off"][runtime]
        rows.append(f"| `{runtime}` | {on['p50_ms']:.0f} ms ({'/'.join(on['paths'])}) | {off['p50_ms']:.0f} ms |")
    for label, row in figures["python_boto3_first_call"].items():
        rows.append(f"| python, `{label}` at module level | {row['p50_ms']:.0f} ms | |")
    return "\n".join(rows)
