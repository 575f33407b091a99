"""The metrics collector through the real API: records per failure kind, aggregates, logs, Prometheus."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hearth.testing import HearthServer

OUTCOMES = """
import os, time
def handler(event, context):
    kind = event.get("kind")
    print("start", kind)
    if kind == "error":
        raise ValueError("asked to fail")
    if kind == "timeout":
        time.sleep(5)
    if kind == "oom":
        blocks = []
        while True:
            blocks.append(bytearray(8 * 1024 * 1024))
    if kind == "crash":
        os._exit(3)
    if kind == "sleep":
        time.sleep(event["ms"] / 1000)
    return {"kind": kind}
"""

CHATTY = """
import time
def handler(event, context):
    for k in range(5):
        print(event["tag"], k)
        time.sleep(0.01)
    return event["tag"]
"""


def records(hearth: HearthServer, function: str, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = hearth.client.get(
            "/api/invocations",
            params={"function": function, "limit": 7, **params, **({"cursor": cursor} if cursor else {})},
        )
        assert page.status_code == 200, page.text
        body = page.json()
        found += body["invocations"]
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def wait_for_records(hearth: HearthServer, function: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        found = records(hearth, function)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_each_failure_kind_is_recorded_with_its_status(hearth: HearthServer, fname: str, backend: str) -> None:
    # Timeouts and out-of-memory kills, and their records' statuses, have their home in tests/api/test_invoke.py.
    hearth.deploy(fname, OUTCOMES, memory_mb=64, backend=backend)
    expected = {"ok": "ok", "error": "error", "crash": "crashed"}
    ids = {}
    for kind in expected:
        response = hearth.invoke(fname, {"kind": kind})
        ids[kind] = response.headers["X-Hearth-Invocation-Id"]
    for kind, status in expected.items():
        record = hearth.client.get(f"/api/invocations/{ids[kind]}").json()
        assert record["status"] == status, (kind, record)
        assert record["function"] == fname and record["version"] == 1 and record["backend"] == backend
        assert record["path"] in ("cold", "stem", "warm") and record["duration_ms"] >= 0
        assert record["request_bytes"] > 0
    ok = hearth.client.get(f"/api/invocations/{ids['ok']}").json()
    assert ok["stdout"] == "start ok\n" and ok["error"] is None
    assert ok["cpu_ms"] is not None and ok["memory_peak_bytes"] > 1_000_000
    error = hearth.client.get(f"/api/invocations/{ids['error']}").json()
    assert error["error"]["type"] == "ValueError" and "start error" in error["stdout"]
    # filters and paging
    assert {r["id"] for r in records(hearth, fname, status="crashed")} == {ids["crash"]}
    assert len(records(hearth, fname)) == 3
    assert hearth.client.get("/api/invocations", params={"status": "nope"}).status_code == 422
    assert hearth.client.get("/api/invocations/inv_missing").status_code == 404


def test_throttled_calls_are_recorded_and_counted_apart(fresh_hearth_throttling: HearthServer, fname: str) -> None:
    hearth = fresh_hearth_throttling
    hearth.deploy(fname, OUTCOMES, max_instances=1)
    hearth.invoke(fname, {"kind": "ok"})
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda _: hearth.invoke(fname, {"kind": "sleep", "ms": 600}).status_code, range(6)))
    assert 429 in statuses and 200 in statuses
    found = wait_for_records(hearth, fname, 7)
    throttled = [r for r in found if r["status"] == "throttled"]
    assert len(throttled) == statuses.count(429)
    summary = hearth.client.get("/api/metrics/summary", params={"window": "5m"}).json()
    row = next(r for r in summary["functions"] if r["function"] == fname)
    assert row["throttles"] == statuses.count(429)
    assert row["invocations"] == 1 + statuses.count(200)


@pytest.fixture
def fresh_hearth_throttling(tmp_path: Path, runtime_images: dict[str, str]):  # type: ignore[no-untyped-def]
    server = HearthServer(tmp_path / "data", env={"HEARTH_CAPACITY_WAIT_S": "0.2"})
    server.start()
    yield server
    server.stop()


def test_logs_of_concurrent_invocations_never_mix(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, CHATTY, concurrency=4, max_instances=2)
    tags = [f"tag{k:02d}" for k in range(16)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda tag: hearth.invoke(fname, {"tag": tag}), tags))
    assert all(r.status_code == 200 for r in responses)
    for tag, response in zip(tags, responses, strict=True):
        record = hearth.client.get(f"/api/invocations/{response.headers['X-Hearth-Invocation-Id']}").json()
        assert record["stdout"] == "".join(f"{tag} {k}\n" for k in range(5))
    lines = hearth.client.get(f"/api/functions/{fname}/logs", params={"limit": 1000}).json()["lines"]
    assert len(lines) == 80
    by_invocation: dict[str, set[str]] = {}
    for line in lines:
        by_invocation.setdefault(line["invocation_id"], set()).add(line["line"].split()[0])
    assert all(len(owners) == 1 for owners in by_invocation.values()) and len(by_invocation) == 16
    newest = hearth.client.get(f"/api/functions/{fname}/logs", params={"limit": 3}).json()["lines"]
    assert newest == lines[-3:]
    assert hearth.client.get("/api/functions/no-such-fn/logs").status_code == 404


def test_summary_and_series_equal_a_brute_force_computation(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, OUTCOMES)
    rng = np.random.default_rng(7)
    for ms in rng.integers(0, 40, size=30):
        assert hearth.invoke(fname, {"kind": "sleep", "ms": int(ms)}).status_code == 200
    hearth.invoke(fname, {"kind": "error"})
    found = wait_for_records(hearth, fname, 31)
    durations = np.array([r["duration_ms"] for r in found])
    summary = hearth.client.get("/api/metrics/summary", params={"window": "1h"}).json()
    assert summary["exact_percentiles"] is True
    row = next(r for r in summary["functions"] if r["function"] == fname)
    assert row["invocations"] == 31 and row["errors"] == 1
    assert row["error_rate"] == pytest.approx(1 / 31, abs=1e-4)
    assert row["cold_starts"] == sum(r["path"] != "warm" for r in found)
    for q, key in ((50, "p50_ms"), (95, "p95_ms"), (99, "p99_ms")):
        assert row[key] == pytest.approx(np.percentile(durations, q), abs=1e-3)
    assert summary["platform"]["functions"] >= 1 and summary["platform"]["host_memory_total_bytes"] > 0

    series = hearth.client.get(f"/api/functions/{fname}/metrics", params={"window": "10m", "step": "1m"}).json()
    assert len(series["buckets"]) == 10
    assert sum(b["count"] for b in series["buckets"]) == 31
    assert sum(b["errors"] for b in series["buckets"]) == 1
    fine = hearth.client.get(f"/api/functions/{fname}/metrics", params={"window": "5m", "step": "10s"}).json()
    assert len(fine["buckets"]) == 30 and sum(b["count"] for b in fine["buckets"]) == 31
    everything = hearth.client.get("/api/metrics/series", params={"window": "10m", "step": "5m"}).json()
    assert sum(b["count"] for b in everything["buckets"]) >= 31


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"window": "soon"}, "window"),
        ({"window": "0s"}, "window"),
        ({"window": "1h", "step": "1s"}, "step"),
        ({"window": "1h", "step": "2h"}, "step"),
    ],
)
def test_bad_windows_are_a_clear_422(hearth: HearthServer, fname: str, params: dict[str, str], field: str) -> None:
    hearth.deploy(fname, OUTCOMES)
    response = hearth.client.get(f"/api/functions/{fname}/metrics", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == field


def test_prometheus_exposition_parses_and_counts(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, OUTCOMES, timeout_s=1)
    for kind in ("ok", "ok", "error", "timeout"):
        hearth.invoke(fname, {"kind": kind})
    text = httpx.get(f"{hearth.base_url}/metrics", timeout=10).text  # no key: Prometheus scrapes it
    families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(family: str, sample: str, **labels: str) -> float:
        return sum(
            s.value
            for s in families[family].samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert value("hearth_invocations", "hearth_invocations_total", function=fname) == 4
    assert value("hearth_invocations", "hearth_invocations_total", function=fname, status="error") == 1
    assert value("hearth_timeouts", "hearth_timeouts_total", function=fname) == 1
    assert value("hearth_errors", "hearth_errors_total", function=fname) == 2
    assert value("hearth_invocation_duration_seconds", "hearth_invocation_duration_seconds_count", function=fname) == 4
    assert value("hearth_cold_starts", "hearth_cold_starts_total", function=fname) >= 1
    assert value("hearth_init_duration_seconds", "hearth_init_duration_seconds_count", function=fname) >= 1
    assert "hearth_sandboxes" in families and "hearth_stem_cells" in families and "hearth_queue_depth" in families


def test_sse_stream_delivers_new_log_lines(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, CHATTY)
    received: list[dict[str, Any]] = []
    connected = threading.Event()

    def follow() -> None:
        headers = {"Authorization": f"Bearer {hearth.api_key}"}
        with httpx.stream(
            "GET",
            f"{hearth.base_url}/api/functions/{fname}/logs/stream",
            headers=headers,
            timeout=httpx.Timeout(10, read=15),
        ) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in response.iter_lines():
                if line.startswith(": connected"):
                    connected.set()
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "log":
                    received.append(json.loads(line[5:]))
                    if len(received) >= 5:
                        return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert connected.wait(10)
    response = hearth.invoke(fname, {"tag": "live"})
    reader.join(15)
    assert [line["line"] for line in received] == [f"live {k}" for k in range(5)]
    assert {line["invocation_id"] for line in received} == {response.headers["X-Hearth-Invocation-Id"]}
