"""Pool behaviour with real containers: stem cells, keep-alive, capacity, concurrency, batching, versions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import httpx
import pytest

from hearth.images import catalog
from hearth.testing import HearthServer


def containers_named(client: docker.DockerClient, prefix: str) -> list[object]:
    # ignore_removed: a container may go between the listing and its inspection (the very thing awaited)
    return client.containers.list(filters={"name": prefix}, ignore_removed=True)


def sandboxes_of(hearth: HearthServer, *responses: httpx.Response) -> list[str]:
    """The sandbox that served each of these invocations, from their records."""
    ids = [r.headers["X-Hearth-Invocation-Id"] for r in responses]
    return [hearth.client.get(f"/api/invocations/{i}").json()["sandbox_id"] for i in ids]


def wait_until(predicate, timeout_s: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def short_lived(tmp_path: Path, runtime_images: dict[str, str]) -> Iterator[HearthServer]:
    """A server with a 1 s keep-alive and a 1 s wait for capacity."""
    server = HearthServer(
        tmp_path / "data", env={"HEARTH_KEEP_ALIVE_S": "1", "HEARTH_CAPACITY_WAIT_S": "1", "HEARTH_STEM_CELLS": "1"}
    )
    server.start()
    yield server
    server.stop()


def test_stem_cell_is_taken_and_refilled(hearth: HearthServer, fname: str, backend: str) -> None:
    def stems() -> int:
        key = f"{backend}/{catalog.default_runtime('python')}"  # stem cells are per runtime
        return int(httpx.get(f"{hearth.base_url}/readyz").json()["stem_cells"].get(key, 0))

    if backend != "docker":  # stem cells of a backend other than the default start once it is first used
        hearth.deploy(fname + "-0", "def handler(e, c):\n    return 'zero'\n", backend=backend)
        assert hearth.invoke(fname + "-0").json() == "zero"
    assert wait_until(lambda: stems() == 1, timeout_s=30), "one stem cell per runtime should be ready"
    hearth.deploy(fname, "def handler(e, c):\n    return 'first'\n", backend=backend)
    first = hearth.invoke(fname)
    assert (first.json(), first.headers["X-Hearth-Path"], first.headers["X-Hearth-Cold"]) == ("first", "stem", "true")
    assert wait_until(lambda: stems() == 1, timeout_s=30), "the stem cell taken was replaced"
    hearth.deploy(fname + "-2", "def handler(e, c):\n    return 'second'\n", backend=backend)
    second = hearth.invoke(fname + "-2")
    assert (second.json(), second.headers["X-Hearth-Path"]) == ("second", "stem")
    assert second.headers["X-Hearth-Invocation-Id"] != first.headers["X-Hearth-Invocation-Id"]
    # A stem cell serves one function for life: the two functions run in different sandboxes.
    third = hearth.invoke(fname)
    assert third.headers["X-Hearth-Path"] == "warm"
    first_box, second_box, third_box = sandboxes_of(hearth, first, second, third)
    assert first_box != second_box and third_box == first_box


def test_keep_alive_expiry_stops_idle_sandboxes(
    short_lived: HearthServer, fname: str, docker_client: docker.DockerClient
) -> None:
    short_lived.deploy(fname, "def handler(e, c):\n    return 1\n")
    assert short_lived.invoke(fname).headers["X-Hearth-Cold"] == "true"
    assert short_lived.invoke(fname).headers["X-Hearth-Path"] == "warm"
    # A stem cell is renamed after its function in the background: until then no container has that name,
    # so the pool's own count is what says the instance was evicted.
    idle = {"warm": 0, "busy": 0, "starting": 0}
    assert wait_until(
        lambda: short_lived.client.get(f"/api/functions/{fname}").json()["instances"] == idle, timeout_s=10
    )
    assert wait_until(lambda: not containers_named(docker_client, f"hearth-{fname}-v1-"), timeout_s=10)
    assert short_lived.invoke(fname).headers["X-Hearth-Cold"] == "true"


def test_min_warm_keeps_instances_past_the_keep_alive(
    short_lived: HearthServer, fname: str, docker_client: docker.DockerClient
) -> None:
    short_lived.deploy(fname, "def handler(e, c):\n    return 1\n", min_warm=1)
    assert wait_until(lambda: len(containers_named(docker_client, f"hearth-{fname}-v1-")) == 1)
    [kept] = containers_named(docker_client, f"hearth-{fname}-v1-")
    # A function without min_warm, used after it: once its instance is evicted, the keep-alive has passed.
    short_lived.deploy(fname + "-x", "def handler(e, c):\n    return 1\n")
    assert short_lived.invoke(fname + "-x").json() == 1
    assert wait_until(lambda: not containers_named(docker_client, f"hearth-{fname}-x-v1-"), timeout_s=15)
    # the same container, not an evicted one started again
    assert [c.id for c in containers_named(docker_client, f"hearth-{fname}-v1-")] == [kept.id]  # type: ignore[attr-defined]
    assert short_lived.invoke(fname).headers["X-Hearth-Path"] == "warm"


def test_max_instances_under_a_burst_throttles_and_loses_nothing(
    short_lived: HearthServer, fname: str, docker_client: docker.DockerClient
) -> None:
    code = "import time\ndef handler(event, context):\n    time.sleep(0.6)\n    return event['n']\n"
    short_lived.deploy(fname, code, max_instances=2)
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda n: short_lived.invoke(fname, {"n": n}), range(12)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 2 and statuses.count(429) >= 1, statuses
    for n, response in enumerate(responses):
        if response.status_code == 200:
            assert response.json() == n
        else:
            assert response.json()["error"]["type"] == "TooManyRequests"
            assert int(response.headers["Retry-After"]) >= 1
    assert len(containers_named(docker_client, f"hearth-{fname}-v1-")) <= 2


def test_a_burst_within_the_wait_limit_is_all_served(hearth: HearthServer, fname: str, backend: str) -> None:
    code = "import time\ndef handler(event, context):\n    time.sleep(0.1)\n    return event['n']\n"
    hearth.deploy(fname, code, max_instances=2, backend=backend)
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda n: hearth.invoke(fname, {"n": n}), range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    assert [r.json() for r in responses] == list(range(16))
    function = hearth.client.get(f"/api/functions/{fname}").json()
    assert sum(function["instances"].values()) <= 2


@pytest.mark.parametrize("language", ["python", "javascript"])
def test_concurrency_runs_invocations_in_parallel_in_one_instance(
    hearth: HearthServer, fname: str, language: str, backend: str
) -> None:
    # Four calls meet at a barrier: they only all return if they really run at the same time.
    if language == "python":
        code = (
            "import threading\n"
            "barrier = threading.Barrier(4, timeout=10)\n"
            "def handler(event, context):\n"
            "    barrier.wait()\n"
            "    return event['n']\n"
        )
    else:
        code = (
            "let waiting = [];\n"
            "exports.handler = (event) => new Promise((resolve, reject) => {\n"
            "  waiting.push(() => resolve(event.n));\n"
            "  if (waiting.length === 4) { waiting.forEach((go) => go()); waiting = []; }\n"
            "  setTimeout(() => reject(new Error('not concurrent')), 10000);\n"
            "});\n"
        )
    hearth.deploy(fname, code, language=language, concurrency=4, max_instances=1, min_warm=1, backend=backend)
    # Warm first: callers queued behind a start wait at most the 10 s capacity wait, and a JavaScript microVM
    # under TCG on a loaded host can take longer to start.
    deadline = time.monotonic() + 120
    while hearth.client.get(f"/api/functions/{fname}").json()["instances"].get("warm", 0) < 1:
        assert time.monotonic() < deadline, "the instance never became warm"
        time.sleep(0.2)
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda n: hearth.invoke(fname, {"n": n}), range(4)))
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    assert sorted(r.json() for r in responses) == [0, 1, 2, 3]
    assert len(set(sandboxes_of(hearth, *responses))) == 1


def test_logs_of_concurrent_invocations_do_not_mix(hearth: HearthServer, fname: str) -> None:
    code = (
        "import time\n"
        "def handler(event, context):\n"
        "    for i in range(20):\n"
        "        print(event['n'], i)\n"
        "        time.sleep(0.002)\n"
        "    return event['n']\n"
    )
    hearth.deploy(fname, code, concurrency=4, max_instances=1)
    with ThreadPoolExecutor(4) as pool:
        ids = dict(pool.map(lambda n: (hearth.invoke(fname, {"n": n}).headers["X-Hearth-Invocation-Id"], n), range(4)))
    import sqlite3

    rows: list[tuple[str, str]] = []
    assert wait_until(
        lambda: (
            len(rows) == 4
            or bool(rows.clear())
            or (
                bool(
                    rows.extend(
                        sqlite3.connect(hearth.data_dir / "hearth.db")
                        .execute("SELECT id, stdout FROM invocations WHERE function_name = ?", (fname,))
                        .fetchall()
                    )
                )
                and len(rows) == 4
            )
        ),
        timeout_s=5,
    )
    for inv_id, stdout in rows:
        n = ids[inv_id]
        assert stdout == "".join(f"{n} {i}\n" for i in range(20))


@pytest.mark.parametrize("language", ["python", "javascript"])
def test_batching_keeps_results_and_errors_per_item(
    hearth: HearthServer, fname: str, language: str, backend: str
) -> None:
    # Each item holds its sandbox 0.2 s: unbatched, eight calls at once would need several sandboxes.
    if language == "python":
        code = (
            "import time\n"
            "def handler(event, context):\n"
            "    print('item', event['n'])\n"
            "    time.sleep(0.2)\n"
            "    if event['n'] == 3:\n"
            "        raise ValueError('item 3 is bad')\n"
            "    return event['n'] * 10\n"
        )
    else:
        code = (
            "exports.handler = async (event) => {\n"
            "  console.log('item', event.n);\n"
            "  await new Promise((resolve) => setTimeout(resolve, 200));\n"
            "  if (event.n === 3) throw new RangeError('item 3 is bad');\n"
            "  return event.n * 10;\n"
            "};\n"
        )
    # The window is long and the size is the burst's: the eighth call closes the one batch.
    batch = {"max_size": 8, "max_wait_ms": 10_000}
    hearth.deploy(fname, code, language=language, batch=batch, max_instances=8, backend=backend)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda n: hearth.invoke(fname, {"n": n}), range(8)))
    for n, response in enumerate(responses):
        if n == 3:
            assert response.status_code == 500
            assert response.json()["error"]["message"] == "item 3 is bad"
        else:
            assert (response.status_code, response.json()) == (200, n * 10), response.text
    assert len(set(sandboxes_of(hearth, *responses))) == 1  # one batch: one round trip to one sandbox
    for n, response in enumerate(responses):  # and each item's own log
        record = hearth.client.get(f"/api/invocations/{response.headers['X-Hearth-Invocation-Id']}").json()
        assert f"item {n}\n" in record["stdout"] and f"item {(n + 1) % 8}\n" not in record["stdout"], record


def test_batch_handler_receives_the_whole_list(hearth: HearthServer, fname: str) -> None:
    code = "def handler(events, context):\n    return [{'n': e['n'], 'batch': len(events)} for e in events]\n"
    hearth.deploy(fname, code, batch={"max_size": 6, "max_wait_ms": 500, "batch_handler": True})
    hearth.invoke(fname, {"n": -1})  # start the instance first, so the burst below is one batch
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda n: hearth.invoke(fname, {"n": n}), range(6)))
    assert [r.json()["n"] for r in responses] == list(range(6))
    assert max(r.json()["batch"] for r in responses) > 1, [r.json() for r in responses]


def test_updated_function_is_never_served_by_the_old_version(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, "def handler(e, c):\n    return 0\n", max_instances=3)
    stop = False

    def hammer() -> list[tuple[int, object, int]]:
        """(status, result, version) of every call, in the order this client made them."""
        seen: list[tuple[int, object, int]] = []
        with httpx.Client(base_url=hearth.base_url) as client:
            while not stop:
                response = client.post(f"/fn/{fname}", json={})
                seen.append((response.status_code, response.json(), int(response.headers.get("X-Hearth-Version", 0))))
        return seen

    with ThreadPoolExecutor(2) as pool:
        background = [pool.submit(hammer) for _ in range(2)]
        try:
            for version in range(1, 6):
                code = f"def handler(e, c):\n    return {version}\n"
                updated = hearth.client.patch(f"/api/functions/{fname}", json={"code": code})
                assert updated.json()["version"] == version + 1
                for _ in range(3):
                    response = hearth.invoke(fname)
                    assert (response.json(), response.headers["X-Hearth-Version"]) == (version, str(version + 1))
        finally:
            stop = True
        for future in background:
            seen = future.result()
            assert seen, "a background client made no call"
            # every call during the updates answered, by the version its header names, and no client
            # was ever served by an older version after a newer one had answered it
            assert all(status == 200 and result == version - 1 for status, result, version in seen), seen
            versions = [version for _, _, version in seen]
            assert versions == sorted(versions), versions
