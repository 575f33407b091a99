"""Synthetic invocation records for the metrics store's tests."""

from __future__ import annotations

import random
from typing import Any

NOW = 1_800_000_000.0
STATUSES = ["ok"] * 16 + ["error", "timeout", "oom", "crashed", "throttled"]


def synthetic_rows(count: int, span_s: float, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for k in range(count):
        rows.append(
            {
                "id": f"inv_{seed}_{k}",
                "function_name": rng.choice(["a", "b", "c"]),
                "version": 1,
                "mode": "sync",
                "started_at": NOW - rng.random() * span_s,
                "duration_ms": rng.lognormvariate(1.5, 1.2),
                "queue_ms": 0.0,
                "status": rng.choice(STATUSES),
                "path": rng.choice(["warm"] * 8 + ["cold", "stem"]),
                "backend": "docker",
                "sandbox_id": "s",
                "error_type": None,
                "error_message": None,
                "stdout": "",
                "stderr": "",
                "logs_truncated": False,
                "request_bytes": 10,
                "response_bytes": 10,
                "init_ms": None,
                "cpu_ms": rng.random(),
                "memory_peak_bytes": rng.randint(1, 10**8),
            }
        )
    return rows
