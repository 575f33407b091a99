"""The metrics store on a real SQLite file: write-behind, rollups, histograms, retention."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from tests.metrics.rows import NOW, synthetic_rows

from hearth.metrics import histogram
from hearth.metrics.queries import MetricsQueries
from hearth.metrics.recorder import InvocationRecorder
from hearth.metrics.retention import RetentionPolicy, apply_retention
from hearth.metrics.writer import RecordWriter
from hearth.store.db import make_engine, make_sessionmaker, migrate
from hearth.store.models import Invocation, InvocationRollup, ResourceSample


@pytest.fixture
def sessions(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'hearth.db'}"
    migrate(url)
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


def writer_for(sessions) -> RecordWriter:  # type: ignore[no-untyped-def]
    return RecordWriter(sessions.kw["bind"].url.render_as_string(hide_password=False))


def record(sessions, rows: list[dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        recorder = InvocationRecorder(writer_for(sessions), interval_s=0.05, batch=97)
        recorder.start()
        for row in rows:
            recorder.add(row)
        await recorder.close()  # a clean shutdown flushes everything
        assert recorder.written == len(rows)

    asyncio.run(go())


def test_records_are_stored_as_given(sessions) -> None:  # type: ignore[no-untyped-def]
    """Every value of every record reads back unchanged, across several INSERT statements in one flush; a
    record without the optional columns gets their defaults."""
    rows = synthetic_rows(1000, 60, seed=5)
    rows[7].update(
        stdout='it\'s "quoted" ü ✓ 🔥\n' * 50,
        error_type="Err",
        error_message="%s ? ?1 :x",
        logs_truncated=True,
        init_ms=12.25,
        memory_peak_bytes=2**40,
        cpu_ms=None,
    )
    for key in ("queue_ms", "stdout", "stderr", "logs_truncated", "request_bytes", "response_bytes"):
        del rows[9][key]

    async def go() -> None:
        recorder = InvocationRecorder(writer_for(sessions), interval_s=60, batch=10**6)
        for row in rows:
            recorder.add(row)
        await recorder.flush()  # one flush of 1,000 rows
        assert recorder.written == len(rows)
        await recorder.close()

    asyncio.run(go())
    columns = [column.name for column in Invocation.__table__.columns]
    with sessions() as session:
        stored = {inv.id: inv for inv in session.scalars(select(Invocation))}
    assert len(stored) == len(rows)
    defaults = {
        "queue_ms": 0.0,
        "stdout": "",
        "stderr": "",
        "logs_truncated": False,
        "request_bytes": 0,
        "response_bytes": 0,
    }
    for row in rows:
        got = stored[row["id"]]
        assert {name: getattr(got, name) for name in columns} == {**defaults, **row}


def test_histogram_percentiles_stay_within_their_promised_error() -> None:
    rng = np.random.default_rng(3)
    for values in (rng.lognormal(1, 2, 5000), rng.uniform(0.01, 5, 777), np.array([42.0]), rng.exponential(300, 50)):
        half: dict[int, int] = {}
        rest: dict[int, int] = {}
        histogram.add(half, values[: len(values) // 2].tolist())
        histogram.add(rest, values[len(values) // 2 :].tolist())
        stored = histogram.to_dense(rest, histogram.to_dense(half))  # stored, then merged on write
        counts = histogram.new_counts()
        histogram.add_dense(counts, stored)
        got = histogram.quantiles_from_counts(counts, (0.5, 0.95, 0.99))
        for q, value in zip((50, 95, 99), got, strict=True):
            reference = np.percentile(values, q, method="inverted_cdf")
            assert value == pytest.approx(reference, rel=histogram.RELATIVE_ERROR), (q, value, reference)
        exact = histogram.exact_quantiles(values.tolist(), (0.5, 0.95, 0.99))
        assert exact == pytest.approx([np.percentile(values, q) for q in (50, 95, 99)])


@pytest.mark.parametrize("width", [60, 3600])
def test_rollups_match_the_raw_records(sessions, width: int) -> None:  # type: ignore[no-untyped-def]
    rows = synthetic_rows(3000, 4 * 3600)
    record(sessions, rows)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Invocation)) == 3000
        minutes = list(session.scalars(select(InvocationRollup).where(InvocationRollup.width_s == width)))
    assert all(m.start % width == 0 for m in minutes)
    ran = [r for r in rows if r["status"] != "throttled"]
    assert sum(m.count for m in minutes) == len(ran)
    assert sum(m.throttles for m in minutes) == len(rows) - len(ran)
    assert sum(m.errors for m in minutes) == sum(r["status"] in ("error", "timeout", "oom", "crashed") for r in ran)
    assert sum(m.cold_starts for m in minutes) == sum(r["path"] != "warm" for r in ran)
    assert sum(m.duration_sum_ms for m in minutes) == pytest.approx(sum(r["duration_ms"] for r in ran))
    for m in minutes:
        assert sum(m.histogram[1:]) == m.count


def test_summary_exact_and_from_histograms(sessions) -> None:  # type: ignore[no-untyped-def]
    rows = synthetic_rows(4000, 1800, seed=2)
    record(sessions, rows)
    ran = [r for r in rows if r["status"] != "throttled" and r["function_name"] == "b"]
    reference = [np.percentile([r["duration_ms"] for r in ran], q) for q in (50, 95, 99)]
    with sessions() as session:
        exact = MetricsQueries(session, raw_retention_s=86400, exact_rows=10**6).summary(3600, NOW)
        approx = MetricsQueries(session, raw_retention_s=86400, exact_rows=10).summary(3600, NOW)
        hourly = MetricsQueries(session, raw_retention_s=86400, exact_rows=10).summary(7 * 3600, NOW)
    assert exact["exact_percentiles"] and not approx["exact_percentiles"]
    for body in (exact, approx, hourly):
        row = next(r for r in body["functions"] if r["function"] == "b")
        assert row["invocations"] == len(ran)
        assert row["throttles"] == sum(r["status"] == "throttled" and r["function_name"] == "b" for r in rows)
    row = next(r for r in exact["functions"] if r["function"] == "b")
    assert [row["p50_ms"], row["p95_ms"], row["p99_ms"]] == pytest.approx(reference, abs=1e-3)
    row = next(r for r in approx["functions"] if r["function"] == "b")
    nearest = [np.percentile([r["duration_ms"] for r in ran], q, method="inverted_cdf") for q in (50, 95, 99)]
    assert [row["p50_ms"], row["p95_ms"], row["p99_ms"]] == pytest.approx(nearest, rel=histogram.RELATIVE_ERROR)


def test_retention_rolls_up_without_losing_counts(sessions) -> None:  # type: ignore[no-untyped-def]
    record(sessions, synthetic_rows(2000, 2 * 86400, seed=4))
    samples = [
        {
            "ts": NOW - 86400 - 600 + 5 * k,
            "step_s": 5.0,
            "function_name": "a",
            "sandboxes": 1,
            "cpu_percent": float(k % 10),
            "memory_bytes": 1000 * (k % 7),
            "memory_peak_bytes": 9000,
            "memory_total_bytes": None,
        }
        for k in range(240)
    ]
    with sessions.begin() as session:
        session.execute(ResourceSample.__table__.insert(), samples)
    policy = RetentionPolicy(raw_s=86400, aggregate_s=30 * 86400, sample_rollup_s=3600)

    def snapshot() -> tuple[dict[str, Any], dict[str, Any]]:
        with sessions() as session:
            queries = MetricsQueries(session, raw_retention_s=0, exact_rows=0)  # force the aggregate path
            summary = queries.summary(3 * 86400, NOW)
            return (
                {
                    r["function"]: (r["invocations"], r["errors"], r["throttles"], r["cold_starts"])
                    for r in summary["functions"]
                },
                queries.resources(0),
            )

    before_counts, before_resources = snapshot()
    with sessions.begin() as session:
        result = apply_retention(session, policy, NOW)
    assert result.invocations_deleted > 500 and result.samples_rolled == 240
    after_counts, after_resources = snapshot()
    assert after_counts == before_counts
    before, after = before_resources["a"], after_resources["a"]
    assert after["mean_memory_bytes"] == pytest.approx(before["mean_memory_bytes"], abs=1)  # whole bytes a minute
    assert after["mean_cpu_percent"] == pytest.approx(before["mean_cpu_percent"], abs=0.01)
    assert after["peak_memory_bytes"] == before["peak_memory_bytes"]
    with sessions() as session:
        oldest = session.scalar(select(func.min(Invocation.started_at)))
        assert oldest >= NOW - 86400
        # 240 samples of 5 s: 20 whole minutes
        assert session.scalar(select(func.count()).select_from(ResourceSample)) == 20
    # and aggregates themselves expire
    with sessions.begin() as session:
        apply_retention(session, policy, NOW + 40 * 86400)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(InvocationRollup)) == 0


def test_resources_of_several_nodes_add_up(sessions) -> None:  # type: ignore[no-untyped-def]
    def samples(node: str, memory: int, cpu: float, host_cpu: float) -> list[dict[str, Any]]:
        rows = []
        for k in range(24):  # two minutes of 5 s samples, an hour ago
            ts = NOW - 3600 + 5 * k
            rows.append(
                {
                    "ts": ts,
                    "step_s": 5.0,
                    "function_name": "a",
                    "sandboxes": 1,
                    "cpu_percent": cpu,
                    "memory_bytes": memory,
                    "memory_peak_bytes": memory,
                    "memory_total_bytes": None,
                    "node": node,
                }
            )
            rows.append(
                {
                    "ts": ts,
                    "step_s": 5.0,
                    "function_name": "",
                    "sandboxes": 1,
                    "cpu_percent": host_cpu,
                    "memory_bytes": 10 * memory,
                    "memory_peak_bytes": 10 * memory,
                    "memory_total_bytes": 100 * memory,
                    "node": node,
                }
            )
        return rows

    with sessions.begin() as session:
        rows = samples("n1", 1000, 10.0, 20.0) + samples("n2", 3000, 30.0, 60.0)
        session.execute(ResourceSample.__table__.insert(), rows)

    def figures() -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        with sessions() as session:
            queries = MetricsQueries(session, raw_retention_s=0, exact_rows=0)
            resources = queries.resources(NOW - 7200)
            series = queries.series("a", 7200, 60, NOW)["buckets"]
            return resources["a"], resources[""], [(b["memory_bytes"], b["cpu_percent"]) for b in series]

    function, host, buckets = figures()
    # the function's sandboxes on both nodes add up; the host's CPU share is the nodes' mean
    assert function == {"mean_memory_bytes": 4000, "peak_memory_bytes": 4000, "mean_cpu_percent": 40.0}
    assert host["mean_memory_bytes"] == 40000 and host["mean_cpu_percent"] == 40.0
    assert [b for b in buckets if b[0] is not None] == [(4000, 40.0), (4000, 40.0)]
    with sessions.begin() as session:  # rolled into minutes per node: the same figures
        result = apply_retention(session, RetentionPolicy(raw_s=86400, aggregate_s=30 * 86400, sample_rollup_s=60), NOW)
    assert result.samples_rolled == 4 * 24
    with sessions() as session:
        # nodes x functions x minutes
        assert session.scalar(select(func.count()).select_from(ResourceSample)) == 2 * 2 * 2
    assert figures() == (function, host, buckets)
