"""Metrics store benchmark: `python -m bench.metrics_store [--rows 10000000]`.

Loads synthetic invocation records into a fresh SQLite file through the recorder's real write path
(raw rows + per-minute aggregates in one transaction), printing the ingest rate, then times the
queries the dashboard makes: summary over 5m/1h/24h, a function's series 1h/1m and 24h/5m, an
invocation page and the log tail. Baseline: a bare `SELECT count(*)` over the same window.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from hearth.config import Settings
from hearth.metrics.queries import MetricsQueries
from hearth.metrics.record_store import store_records
from hearth.store.db import make_engine, make_sessionmaker, migrate
from hearth.store.models import Invocation

SPAN_S = 86400.0
FUNCTIONS = [f"fn-{k:02d}" for k in range(20)]
STATUSES = ["ok"] * 95 + ["error", "error", "timeout", "crashed", "throttled"]
BATCH = 5000


def rows_for(start: int, count: int, now: float, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for k in range(start, start + count):
        status = rng.choice(STATUSES)
        out.append(
            {
                "id": f"inv_{k:012x}",
                "function_name": rng.choice(FUNCTIONS),
                "version": 1,
                "mode": "http",
                # oldest first, like a live server writes them
                "started_at": now - SPAN_S + SPAN_S * k / TOTAL[0],
                "duration_ms": rng.lognormvariate(0.5, 1.0),
                "queue_ms": 0.01,
                "status": status,
                "path": "warm" if rng.random() > 0.01 else "cold",
                "backend": "docker",
                "sandbox_id": "abc",
                "error_type": None,
                "error_message": None,
                "stdout": "line\n" if k % 10 == 0 else "",
                "stderr": "",
                "logs_truncated": False,
                "request_bytes": 20,
                "response_bytes": 20,
                "init_ms": None,
                "cpu_ms": 0.1,
                "memory_peak_bytes": 9000000,
            }
        )
    return out


TOTAL = [0]


def timed(label: str, work: Callable[[], Any], repeat: int = 5) -> dict[str, Any]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        work()
        times.append((time.perf_counter() - t0) * 1000)
    result = {"query": label, "median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}
    print(f"  {label:<40} median {result['median_ms']:>8.1f} ms   max {result['max_ms']:>8.1f} ms", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite file goes (default: a temp dir)")
    parser.add_argument("--queries-only", action="store_true", help="time the queries of an already loaded --dir")
    args = parser.parse_args()
    TOTAL[0] = args.rows
    directory = args.dir or Path(tempfile.mkdtemp(prefix="hearth-bench-metrics-"))
    url = f"sqlite:///{directory / 'hearth.db'}"
    migrate(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    rng = random.Random(1)
    now = time.time()
    print(f"loading {args.rows:,} invocation records over {SPAN_S / 3600:.0f} h into {directory}", flush=True)
    t0 = time.perf_counter()
    written = args.rows if args.queries_only else 0
    ingest_rate = None
    while written < args.rows:
        batch = rows_for(written, min(BATCH, args.rows - written), now, rng)
        store_records(sessions, batch)  # what the invocation writer does per flush: rows + rollups, one transaction
        written += len(batch)
        if written % 500_000 == 0 or written == args.rows:
            rate = written / (time.perf_counter() - t0)
            ingest_rate = ingest_rate or rate
            print(f"  {written:>11,} rows  {rate:,.0f} rows/s", flush=True)
    load_s = time.perf_counter() - t0
    rate = args.rows / load_s
    if not args.queries_only:
        print(f"ingest: {rate:,.0f} records/s through store_records (batches of {BATCH})", flush=True)

    results = []
    with sessions() as session:
        settings = Settings()
        queries = MetricsQueries(
            session, raw_retention_s=settings.metrics_raw_retention_s, exact_rows=settings.metrics_exact_percentile_rows
        )
        name = FUNCTIONS[3]
        at = float(session.scalar(select(func.max(Invocation.started_at))) or time.time()) + 1.0  # the data's now
        for window in (300, 3600, 86400):
            count = select(func.count()).select_from(Invocation).where(Invocation.started_at >= at - window)
            results.append(timed(f"baseline count(*) {window}s", lambda c=count: session.scalar(c)))
            results.append(timed(f"summary window={window}s", lambda w=window: queries.summary(w, at, FUNCTIONS)))
        results.append(timed("series 1h step 1m", lambda: queries.series(name, 3600, 60, at)))
        results.append(timed("series 24h step 5m", lambda: queries.series(name, 86400, 300, at)))
        results.append(timed("series 5m step 10s", lambda: queries.series(name, 300, 10, at)))
        results.append(timed("platform series 1h step 1m", lambda: queries.series(None, 3600, 60, at)))
        results.append(
            timed(
                "invocations page (50, one function)",
                lambda: queries.invocations(function=name, status=None, since=None, limit=50, cursor=None),
            )
        )
        results.append(
            timed(
                "invocations page (50, status=error)",
                lambda: queries.invocations(function=None, status="error", since=None, limit=50, cursor=None),
            )
        )
        results.append(timed("log tail (100 lines)", lambda: queries.log_lines(name, None, 100)))
    size_mb = (directory / "hearth.db").stat().st_size / 2**20
    print(f"database: {size_mb:,.0f} MiB for {args.rows:,} rows", flush=True)
    out = {
        "rows": args.rows,
        "ingest_rows_per_s": None if args.queries_only else round(rate),
        "db_mib": round(size_mb),
        "queries": results,
    }
    (Path(__file__).resolve().parent / "results").mkdir(exist_ok=True)
    (Path(__file__).resolve().parent / "results" / "metrics_store.json").write_text(json.dumps(out, indent=1))
    engine.dispose()


if __name__ == "__main__":
    main()
