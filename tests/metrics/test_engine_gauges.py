"""The gauges read from the engine's snapshot: sandboxes by function and state, and waiting calls,
in Prometheus' exposition and the API's platform summary, while a call runs and one waits, and after."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from hearth.testing import HearthServer

SLOW = "import time\ndef handler(event, context):\n    time.sleep(event.get('s', 0))\n    return 'done'\n"


def gauges(hearth: HearthServer) -> dict[str, list[Any]]:
    text = httpx.get(f"{hearth.base_url}/metrics", timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def sandboxes(hearth: HearthServer, function: str) -> dict[str, float]:
    return {s.labels["state"]: s.value for s in gauges(hearth)["hearth_sandboxes"] if s.labels["function"] == function}


def platform(hearth: HearthServer) -> dict[str, Any]:
    return dict(hearth.client.get("/api/metrics/summary", params={"window": "5m"}).json()["platform"])


def test_sandbox_and_waiting_gauges_follow_the_engine(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, SLOW, max_instances=1, concurrency=1)
    assert hearth.invoke(fname, {"s": 0}).status_code == 200  # warm: one idle sandbox
    assert sandboxes(hearth, fname) == {"warm": 1, "busy": 0, "starting": 0}

    calls = [threading.Thread(target=hearth.invoke, args=(fname, {"s": 3})) for _ in range(2)]
    for call in calls:
        call.start()
    deadline = time.monotonic() + 10
    while sandboxes(hearth, fname).get("busy") != 1 or platform(hearth)["waiting_calls"] < 1:
        assert time.monotonic() < deadline, (sandboxes(hearth, fname), platform(hearth))
        time.sleep(0.1)
    assert sandboxes(hearth, fname) == {"warm": 0, "busy": 1, "starting": 0}
    assert sum(s.value for s in gauges(hearth)["hearth_waiting_calls"]) >= 1
    assert platform(hearth)["busy_sandboxes"] >= 1
    for call in calls:
        call.join()
    assert sandboxes(hearth, fname) == {"warm": 1, "busy": 0, "starting": 0}
