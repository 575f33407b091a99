"""Hostile functions are contained: the offender gets a clear status, the platform and others carry on."""

from __future__ import annotations

import time

import httpx
import pytest

from hearth.testing import HearthServer

FORK_BOMB = """
import os
def handler(event, context):
    while True:
        try:
            os.fork()
        except OSError:
            pass
"""
STDOUT_FLOOD = """
import sys
def handler(event, context):
    for _ in range(100_000):
        print("x" * 1000)
        print("y" * 1000, file=sys.stderr)
    return "done"
"""
FD_FLOOD = """
import os
def handler(event, context):
    for _ in range(2000):
        os.write(1, b"z" * 100_000)
    return "done"
"""
FILL_TMP = """
def handler(event, context):
    try:
        with open("/tmp/big", "wb") as f:
            for _ in range(1000):
                f.write(b"z" * 1024 * 1024)
    except OSError as exc:
        return {"stopped": exc.errno}
    return "wrote a gigabyte"
"""
KILL_AGENT = "import os, signal\ndef handler(event, context):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
CLOSE_PROTOCOL = """
import os
def handler(event, context):
    for fd in range(3, 32):
        try:
            os.close(fd)
        except OSError:
            pass
    return "closed"
"""
GARBAGE_FRAMES = """
import os
def handler(event, context):
    for fd in range(3, 16):
        try:
            os.write(fd, b"\\xff\\xff\\xff\\xff garbage")
        except OSError:
            pass
    return "sent"
"""
HUGE_RESULT = "def handler(event, context):\n    return 'a' * (100 * 1024 * 1024)\n"
ASYNC_FOREVER = "import asyncio\nasync def handler(event, context):\n    await asyncio.sleep(10**6)\n"
JS_FOREVER = "exports.handler = () => new Promise(() => {});\n"
JS_SPIN = "exports.handler = async () => { for (;;) {} };\n"


@pytest.fixture(scope="module")
def bystander(hearth: HearthServer) -> str:
    hearth.deploy("bystander", "def handler(event, context):\n    return 'fine'\n")
    assert hearth.invoke("bystander").json() == "fine"
    return "bystander"


def assert_platform_healthy(hearth: HearthServer, bystander: str) -> None:
    assert httpx.get(f"{hearth.base_url}/readyz", timeout=10).status_code == 200
    response = hearth.invoke(bystander)
    assert (response.status_code, response.json()) == (200, "fine")


CASES = [
    # name, code, language, settings, expected status, expected error type (None: success)
    ("fork-bomb", FORK_BOMB, "python", {"timeout_s": 3, "memory_mb": 64}, {502, 504}, {"OutOfMemory", "Timeout"}),
    ("huge-result-oom", HUGE_RESULT, "python", {"memory_mb": 64}, {502}, {"OutOfMemory"}),
    ("huge-result", HUGE_RESULT, "python", {"memory_mb": 512}, {500}, {"ResultTooLarge"}),
    ("kill-agent", KILL_AGENT, "python", {}, {502}, {"SandboxCrashed"}),
    ("close-protocol", CLOSE_PROTOCOL, "python", {}, {502}, {"SandboxCrashed"}),
    ("garbage-frames", GARBAGE_FRAMES, "python", {}, {502}, {"SandboxCrashed"}),
    ("async-forever", ASYNC_FOREVER, "python", {"timeout_s": 1}, {504}, {"Timeout"}),
    ("js-forever", JS_FOREVER, "javascript", {"timeout_s": 1}, {504}, {"Timeout"}),
    ("js-spin", JS_SPIN, "javascript", {"timeout_s": 1}, {504}, {"Timeout"}),
]


@pytest.mark.parametrize(
    ("name", "code", "language", "settings", "statuses", "types"), CASES, ids=[c[0] for c in CASES]
)
def test_hostile_function_gets_a_clear_error(
    hearth: HearthServer,
    bystander: str,
    fname: str,
    backend: str,
    name: str,
    code: str,
    language: str,
    settings: dict[str, object],
    statuses: set[int],
    types: set[str],
) -> None:
    hearth.deploy(fname, code, language=language, backend=backend, **settings)
    response = hearth.invoke(fname)
    assert response.status_code in statuses, response.text[:300]
    assert response.json()["error"]["type"] in types, response.text[:300]
    assert_platform_healthy(hearth, bystander)


def test_output_floods_are_capped_and_marked(hearth: HearthServer, bystander: str, fname: str, backend: str) -> None:
    cap = 64 * 1024  # HEARTH_MAX_LOG_BYTES' default, per stream
    hearth.deploy(fname, STDOUT_FLOOD, backend=backend)
    flooded = hearth.invoke(fname)
    assert flooded.json() == "done"
    record = record_of(hearth, flooded)
    assert record["logs_truncated"] is True
    # 200 MB written to each stream; the record keeps the first `cap` characters of each
    assert record["stdout"] == ("x" * 1000 + "\n") * (cap // 1001) + "x" * (cap % 1001)
    assert record["stderr"] == ("y" * 1000 + "\n") * (cap // 1001) + "y" * (cap % 1001)
    hearth.deploy(fname + "-fd", FD_FLOOD, backend=backend)
    straight = hearth.invoke(fname + "-fd")
    assert straight.json() == "done"  # straight to fd 1: the container's capped log, not the record
    assert len(record_of(hearth, straight)["stdout"]) <= cap
    assert_platform_healthy(hearth, bystander)


def record_of(hearth: HearthServer, response: httpx.Response) -> dict[str, object]:
    invocation_id = response.headers["X-Hearth-Invocation-Id"]
    record: dict[str, object] = hearth.client.get(f"/api/invocations/{invocation_id}").json()
    return record


def test_filling_tmp_stops_at_its_size(hearth: HearthServer, bystander: str, fname: str, backend: str) -> None:
    hearth.deploy(fname, FILL_TMP, memory_mb=256, backend=backend)
    response = hearth.invoke(fname)
    assert response.status_code == 200
    assert response.json() == {"stopped": 28}  # ENOSPC at the tmpfs limit (64 MiB by default)
    assert_platform_healthy(hearth, bystander)


def test_daemons_stay_inside_the_sandbox_and_die_with_it(  # type: ignore[no-untyped-def]
    hearth: HearthServer, fname: str, backend: str, docker_client
) -> None:
    code = (
        "import subprocess\n"
        "def handler(event, context):\n"
        "    subprocess.Popen(['sleep', '1000'])\n"
        "    return 'spawned'\n"
    )
    hearth.deploy(fname, code, backend=backend)
    assert hearth.invoke(fname).json() == "spawned"
    assert hearth.client.delete(f"/api/functions/{fname}").status_code == 204
    deadline = time.monotonic() + 10
    named = {"name": f"hearth-{fname}-v"}
    while docker_client.containers.list(filters=named, ignore_removed=True) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert docker_client.containers.list(all=True, filters={"name": f"hearth-{fname}-v"}, ignore_removed=True) == []


def test_what_persists_between_calls_of_one_warm_instance(hearth: HearthServer, fname: str, backend: str) -> None:
    """Like Lambda: globals, env changes and /tmp persist within one instance; a new version starts clean."""
    code = (
        "import os\n"
        "calls = 0\n"
        "def handler(event, context):\n"
        "    global calls\n"
        "    calls += 1\n"
        "    seen = os.environ.get('MARK')\n"
        "    os.environ['MARK'] = 'set'\n"
        "    tmp = os.path.exists('/tmp/mark')\n"
        "    open('/tmp/mark', 'w').close()\n"
        "    return [calls, seen, tmp]\n"
    )
    hearth.deploy(fname, code, max_instances=1, backend=backend)
    assert hearth.invoke(fname).json() == [1, None, False]
    assert hearth.invoke(fname).json() == [2, "set", True]
    hearth.client.patch(f"/api/functions/{fname}", json={"timeout_s": 5})
    assert hearth.invoke(fname).json() == [1, None, False]
