"""Several Hearth nodes on one PostgreSQL database: each with its own data dir and sandboxes, sharing
functions, their code and dependency layers, keys, records and the async queue through the store."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hearth.testing import HearthServer, b64_zip

APP = {
    "app.py": (
        "import os\nimport six\n\n"
        "def handler(event, context):\n"
        "    return {'six': six.__version__, 'who': os.environ.get('WHO'), 'got': event.get('n')}\n"
    ),
    "requirements.txt": "six==1.16.0\n",
}
HELLO = "def handler(event, context):\n    return 'hello from ' + event.get('via', '?')\n"


def eventually(check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """`check()`'s first truthy value, polled (a node picks up others' changes every second by default)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def invoked(node: HearthServer, name: str, event: dict[str, Any]) -> Any:
    response = node.invoke(name, event)
    return response.json() if response.status_code == 200 else None


@pytest.fixture
def nodes(tmp_path: Path, postgres_url: str, runtime_images: dict[str, str]) -> Iterator[list[HearthServer]]:
    env = {"HEARTH_DATABASE_URL": postgres_url}
    first = HearthServer(tmp_path / "a-data", env=env)
    second = HearthServer(tmp_path / "b-data", env=env, api_key=first.api_key)
    first.start()
    second.start()
    yield [first, second]
    for node in (first, second):
        if node.proc is not None and node.proc.poll() is None:
            node.stop()


def test_two_nodes_serve_what_either_deploys(nodes: list[HearthServer], fname: str) -> None:
    a, b = nodes
    # Deployed through A with a dependency: B serves it with the code and layer fetched from the store.
    made = a.client.post(
        "/api/functions",
        json={"name": fname, "language": "python", "handler": "app.handler", "zip_base64": b64_zip(APP)},
    )
    assert made.status_code == 201, made.text
    fn = made.json()
    assert eventually(lambda: invoked(b, fname, {"n": 1})) == {"six": "1.16.0", "who": None, "got": 1}
    assert (b.data_dir / "code" / fn["code_sha256"]).is_dir()
    assert (b.data_dir / "code" / "layers" / fn["layer"] / "python" / "six.py").is_file()
    trigger = httpx.post(f"{b.base_url}/fn/{fname}", json={"n": 2}, timeout=60)
    assert trigger.status_code == 200 and trigger.json()["six"] == "1.16.0"  # an HTTP event: no "n"

    # Changed through B: A serves the new version, and retires its sandboxes of the old one.
    assert invoked(a, fname, {"n": 3})["who"] is None
    patched = b.client.patch(f"/api/functions/{fname}", json={"env": {"WHO": "b"}})
    assert patched.status_code == 200 and patched.json()["version"] == 2
    assert eventually(lambda: (invoked(a, fname, {}) or {}).get("who") == "b")

    # The async queue is one queue: jobs submitted to either node run once each, on either node.
    jobs = [
        node.client.post(f"/api/functions/{fname}/invoke", params={"mode": "async"}, json={"n": i}).json()
        for i, node in enumerate([a, b] * 6)
    ]
    finals = [a.wait_job(job["invocation_id"]) for job in jobs]
    assert [f["status"] for f in finals] == ["succeeded"] * 12
    assert sorted(f["result"]["got"] for f in finals) == list(range(12))
    assert all(f["attempts"] == 1 for f in finals)

    # Records and metrics from both nodes add up in one place (each node writes its records behind).
    calls = 4 + 12  # n=1 (B), trigger (B), n=3 (A), at least one polling call on A, 12 jobs

    def counted() -> tuple[int, int]:
        summary = a.client.get("/api/metrics/summary", params={"window": "1h"}).json()
        row = next((r for r in summary["functions"] if r["function"] == fname), {"invocations": 0})
        records = b.client.get("/api/invocations", params={"function": fname, "limit": 200}).json()["invocations"]
        return row["invocations"], len(records)

    assert eventually(lambda: (lambda n: n[0] >= calls and n[0] == n[1])(counted()), 10), counted()

    # Deleted through A: B stops serving it.
    assert a.client.delete(f"/api/functions/{fname}").status_code == 204
    assert eventually(lambda: b.invoke(fname, {}).status_code == 404)
    assert httpx.post(f"{b.base_url}/fn/{fname}", json={}, timeout=60).status_code == 404


def test_a_node_started_later_fetches_everything_at_start(nodes: list[HearthServer], fname: str) -> None:
    a, b = nodes
    assert invoked(a, "nothing-" + fname, {}) is None
    b.stop()
    shutil.rmtree(b.data_dir / "code")  # as a brand-new node would have it
    a.deploy(fname, HELLO)
    assert invoked(a, fname, {"via": "a"}) == "hello from a"
    b.start()
    assert invoked(b, fname, {"via": "b"}) == "hello from b"  # at once: loaded at start, not followed later
    # B's start cleaned up its own leftovers only: A's warm sandbox still serves.
    again = a.invoke(fname, {"via": "a"})
    assert again.status_code == 200 and again.headers["x-hearth-path"] == "warm"
