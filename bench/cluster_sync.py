"""How fast a change made through one node reaches another: `python -m bench.cluster_sync [--rounds 15]`.

Two Hearth nodes, each with its own data dir, on one database (a SQLite file outside both data dirs,
with HEARTH_SHARE_CODE on: the follower and the code blobs work the same on PostgreSQL). Per round:

- `deploy`: a new function is created through node A; from the 201, both nodes are polled (every
  20 ms) until each serves it. Node A's time is the baseline (a cold start); node B's adds the wait
  for its follower (every HEARTH_SYNC_INTERVAL_S, 1 s by default) and fetching the code.
- `update`: the function's env is changed through A; both nodes are polled until each answers
  with the new value (B had a warm sandbox of the old version to retire).

Each change waits a random fraction of the sync interval first, so that it does not always land
just after B's last look. Figures: medians and p95 per node, and the ratio of B's median to A's. Written to
bench/results/cluster_sync.json.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.harness import summary_ms
from hearth.testing import HearthServer

RESULTS = Path(__file__).resolve().parent / "results"
HANDLER = "import os\ndef handler(event, context):\n    return os.environ.get('MARK', 'none')\n"
POLL_S = 0.02


def until_served(node: HearthServer, name: str, expected: str, since: float, timeout_s: float = 60) -> float:
    """Milliseconds from `since` until `node` answers `expected` for `name`."""
    while time.perf_counter() - since < timeout_s:
        response = node.invoke(name, {})
        if response.status_code == 200 and response.json() == expected:
            return (time.perf_counter() - since) * 1000
        time.sleep(POLL_S)
    raise TimeoutError(f"{node.base_url} did not serve {name} within {timeout_s} s")


def both_served(a: HearthServer, b: HearthServer, name: str, expected: str, since: float) -> tuple[float, float]:
    with ThreadPoolExecutor(2) as pool:
        on_a = pool.submit(until_served, a, name, expected, since)
        on_b = pool.submit(until_served, b, name, expected, since)
        return on_a.result(), on_b.result()


def run(rounds: int, sync_interval_s: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="hearth-cluster-bench-"))
    env = {
        "HEARTH_DATABASE_URL": f"sqlite:///{root / 'shared.db'}",
        "HEARTH_SHARE_CODE": "true",
        "HEARTH_SYNC_INTERVAL_S": str(sync_interval_s),
    }
    a = HearthServer(root / "a-data", env=env)
    b = HearthServer(root / "b-data", env=env, api_key=a.api_key)
    a.start()
    b.start()
    times: dict[str, dict[str, list[float]]] = {"deploy": {"a": [], "b": []}, "update": {"a": [], "b": []}}
    try:
        for _ in range(rounds):
            name = "sync-" + secrets.token_hex(3)
            time.sleep(random.uniform(0, sync_interval_s))  # else every round starts just after B's tick
            created = a.client.post("/api/functions", json={"name": name, "language": "python", "code": HANDLER})
            assert created.status_code == 201, created.text
            since = time.perf_counter()
            for node, ms in zip("ab", both_served(a, b, name, "none", since), strict=True):
                times["deploy"][node].append(ms)
            time.sleep(random.uniform(0, sync_interval_s))
            patched = a.client.patch(f"/api/functions/{name}", json={"env": {"MARK": "v2"}})
            assert patched.status_code == 200, patched.text
            since = time.perf_counter()
            for node, ms in zip("ab", both_served(a, b, name, "v2", since), strict=True):
                times["update"][node].append(ms)
            assert a.client.delete(f"/api/functions/{name}").status_code == 204
    finally:
        a.stop()
        b.stop()
    result: dict[str, Any] = {"rounds": rounds, "sync_interval_s": sync_interval_s}
    for change, per_node in times.items():
        result[change] = {
            "node_a_baseline": summary_ms(per_node["a"]),
            "node_b_follower": summary_ms(per_node["b"]),
            "ratio_b_to_a_p50": round(statistics.median(per_node["b"]) / statistics.median(per_node["a"]), 2),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sync-interval", type=float, default=1.0, help="HEARTH_SYNC_INTERVAL_S of both nodes")
    args = parser.parse_args()
    result = run(args.rounds, args.sync_interval)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster_sync.json").write_text(json.dumps(result, indent=2) + "\n")
    for change in ("deploy", "update"):
        figures = result[change]
        a, b = figures["node_a_baseline"], figures["node_b_follower"]
        print(
            f"{change:7s} node A (baseline) p50 {a['p50_ms']:8.1f} ms  p95 {a['p95_ms']:8.1f} ms | "
            f"node B p50 {b['p50_ms']:8.1f} ms  p95 {b['p95_ms']:8.1f} ms | B/A {figures['ratio_b_to_a_p50']}x"
        )


if __name__ == "__main__":
    main()
