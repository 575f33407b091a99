"""Custom runtimes (language `provided`) over the Lambda Runtime API, with clients no one here wrote.

A shell `bootstrap` in the shape of AWS's custom-runtime tutorial (a `curl` loop), a Go program using
only Go's standard library, and hostile bootstraps; all in real sandboxes of a real Hearth server.
"""

from __future__ import annotations

import base64
import io
import json
import time
import zipfile
from typing import Any

import httpx
import pytest

from hearth.testing import HearthServer, b64_zip

pytestmark = pytest.mark.usefixtures("provided_images")
MICROVM = pytest.param("microvm", marks=pytest.mark.slow)  # QEMU microvm: TCG here, slow

# The structure of AWS's tutorial (docs.aws.amazon.com/lambda/latest/dg/runtimes-walkthrough.html):
# `source` the handler's script named by $_HANDLER, then loop: curl the next event, scrape the request
# id from the headers, run the handler function, curl its output back as the response.
TUTORIAL_BOOTSTRAP = """#!/bin/sh
set -euo pipefail

source $LAMBDA_TASK_ROOT/"$(echo $_HANDLER | cut -d. -f1).sh"

while true
do
  HEADERS="$(mktemp)"
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  RESPONSE=$($(echo "$_HANDLER" | cut -d. -f2) "$EVENT_DATA")
  curl -sS "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/response" -d "$RESPONSE"
done
"""
TUTORIAL_FUNCTION = """function handler () {
  EVENT_DATA=$1
  echo "$EVENT_DATA" 1>&2;
  RESPONSE="Echoing request: '$EVENT_DATA'"

  echo $RESPONSE
}
"""


def invocation_record(server: HearthServer, invocation_id: str, timeout_s: float = 10) -> dict[str, Any]:
    """The stored record of an invocation (written shortly after it ends)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = server.client.get(f"/api/invocations/{invocation_id}")
        if response.status_code == 200:
            return dict(response.json())
        assert time.monotonic() < deadline, response.text
        time.sleep(0.1)


def sandbox_of(server: HearthServer, reply: httpx.Response) -> str:
    return str(invocation_record(server, reply.headers["x-hearth-invocation-id"])["sandbox_id"])


def go_zip(binary: bytes) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bootstrap", binary)
    return base64.b64encode(buffer.getvalue()).decode()


def deploy_go(server: HearthServer, name: str, binary: bytes, **settings: Any) -> dict[str, Any]:
    body = {"name": name, "language": "provided", "zip_base64": go_zip(binary), **settings}
    response = server.client.post("/api/functions", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.parametrize("backend", ["docker", "gvisor", MICROVM], indirect=True)
def test_tutorial_shell_bootstrap_with_curl(hearth: HearthServer, fname: str, backend: str) -> None:
    files = {"bootstrap": TUTORIAL_BOOTSTRAP, "function.sh": TUTORIAL_FUNCTION}
    response = hearth.client.post(
        "/api/functions",
        json={"name": fname, "language": "provided", "handler": "function.handler", "zip_base64": b64_zip(files),
              "backend": backend},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    for n in range(2):
        reply = hearth.invoke(fname, {"n": n})
        assert reply.status_code == 200, reply.text
        # curl -d posts the handler's text, which is not JSON: it comes back as a JSON string
        assert reply.json() == f"Echoing request: '{{\"n\":{n}}}'"
        if n:
            assert reply.headers["x-hearth-path"] == "warm"
        record = invocation_record(hearth, reply.headers["x-hearth-invocation-id"])
        assert record["stderr"] == f'{{"n":{n}}}\n'  # the handler's `echo ... 1>&2`, this invocation's own


def test_no_dependency_build_for_provided(hearth: HearthServer, fname: str) -> None:
    """A provided bundle brings what its bootstrap runs: requirements.txt / package.json are just files."""
    files = {
        "bootstrap": TUTORIAL_BOOTSTRAP,
        "function.sh": TUTORIAL_FUNCTION,
        "requirements.txt": "six==1.16.0\n",
        "package.json": '{"dependencies": {"left-pad": "1.3.0"}}',
    }
    body = {"name": fname, "runtime": "provided.al2023", "handler": "function.handler", "zip_base64": b64_zip(files)}
    response = hearth.client.post("/api/functions", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["language"], created["runtime"]) == ("provided", "provided")  # the alias means provided
    assert created["layer"] is None and created["build_id"] is None
    assert hearth.client.get(f"/api/functions/{fname}/builds").json()["builds"] == []
    reply = hearth.invoke(fname, {"n": 1})
    assert reply.status_code == 200 and reply.json() == "Echoing request: '{\"n\":1}'", reply.text


def test_gomaxprocs_follows_the_cpu_quota_unless_the_function_sets_it(hearth: HearthServer, fname: str) -> None:
    """Go runtimes size themselves by the host's cores; Hearth sets GOMAXPROCS to the sandbox's CPUs,
    rounded up, and the function's own `env` wins."""
    files = {"bootstrap": TUTORIAL_BOOTSTRAP, "function.sh": 'function handler () {\n  echo "$GOMAXPROCS"\n}\n'}
    for name, settings, expected in (
        (fname, {"cpus": 0.5}, 1),
        (f"{fname}-2", {"cpus": 1.5}, 2),
        (f"{fname}-3", {"cpus": 0.5, "env": {"GOMAXPROCS": "4"}}, 4),
    ):
        body = {"name": name, "language": "provided", "handler": "function.handler", "zip_base64": b64_zip(files)}
        response = hearth.client.post("/api/functions", json={**body, **settings})
        assert response.status_code == 201, response.text
        reply = hearth.invoke(name, {})
        assert reply.status_code == 200 and reply.json() == expected, reply.text  # `echo 1`: the JSON 1


@pytest.mark.parametrize("backend", ["docker", MICROVM], indirect=True)
def test_go_runtime_headers_env_logs_and_errors(
    hearth: HearthServer, fname: str, go_runtime: bytes, backend: str
) -> None:
    settings = {"handler": "my.handler", "timeout_s": 7, "memory_mb": 96, "env": {"GREETING": "hi"}}
    deploy_go(hearth, fname, go_runtime, backend=backend, **settings)
    before_ms = time.time() * 1000
    reply = hearth.invoke(fname, {"n": 1, "s": "é"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    invocation_id = reply.headers["x-hearth-invocation-id"]
    assert body["event"] == {"n": 1, "s": "é"}
    assert body["request_id"] == invocation_id
    assert before_ms + 5000 < int(body["deadline_ms"]) <= time.time() * 1000 + 7000
    assert body["arn"].endswith(f":function:{fname}") and body["arn"].startswith("arn:aws:lambda:")
    assert body["trace"].startswith("Root=1-")
    assert body["env"] == {
        "AWS_LAMBDA_FUNCTION_NAME": fname,
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "96",
        "_HANDLER": "my.handler",
        "LAMBDA_TASK_ROOT": "/hearth/code",
        "GREETING": "hi",
    }  # and no HEARTH_AGENT_SOCKET: the host's socket is the relay's, not the runtime's
    assert body["uid"] == 65534
    record = invocation_record(hearth, invocation_id)
    assert (record["stdout"], record["stderr"]) == (f"go got {invocation_id}\n", f"go err {invocation_id}\n")

    failed = hearth.invoke(fname, {"error": True})
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert (error["type"], error["message"]) == ("GoError", "the event asked for an error")
    assert error["traceback"] == "main.go:handle\nmain.go:main"
    # the runtime saw 202 Accepted for its POST .../error, and the same sandbox serves on
    again = hearth.invoke(fname, {"n": 2})
    assert again.json()["last_post"] == {"status": 202, "body": '{"status":"OK"}'}
    assert again.json()["pid"] == body["pid"]


def test_go_runtime_large_chunked_and_too_large_responses(hearth: HearthServer, fname: str, go_runtime: bytes) -> None:
    deploy_go(hearth, fname, go_runtime)
    big = hearth.invoke(fname, {"big": 5 * 1024 * 1024})
    assert big.status_code == 200 and big.json() == "x" * (5 * 1024 * 1024)
    streamed = hearth.invoke(fname, {"chunked": 200})
    assert streamed.status_code == 200 and streamed.json() == {"chunks": list(range(200))}
    too_large = hearth.invoke(fname, {"big": 7 * 1024 * 1024})  # over the 6 MiB result limit
    assert too_large.status_code == 500 and too_large.json()["error"]["type"] == "ResultTooLarge"
    after = hearth.invoke(fname, {"n": 3})
    assert after.status_code == 200
    assert after.json()["last_post"]["status"] == 413  # what the Runtime API told the runtime
    assert '"errorType":"RequestEntityTooLarge"' in after.json()["last_post"]["body"]


@pytest.mark.parametrize("backend", ["docker", MICROVM], indirect=True)
def test_go_runtime_init_error_crash_and_timeout_get_fresh_sandboxes(
    hearth: HearthServer, fname: str, go_runtime: bytes, backend: str
) -> None:
    deploy_go(hearth, fname, go_runtime, backend=backend, timeout_s=2, env={"GO_INIT_ERROR": "no database"})
    failed = hearth.invoke(fname, {})
    assert failed.status_code == 500
    error = failed.json()["error"]
    assert (error["type"], error["message"], error.get("phase")) == ("GoInitError", "no database", "init")

    patch = hearth.client.patch(f"/api/functions/{fname}", json={"env": {}})
    assert patch.status_code == 200, patch.text
    first = hearth.invoke(fname, {})
    assert first.status_code == 200, first.text
    crashed = hearth.invoke(fname, {"exit": 3})
    assert crashed.status_code == 500, crashed.text
    assert crashed.json()["error"]["type"] == "Runtime.ExitError"
    assert "exit status 3" in crashed.json()["error"]["message"]
    fresh = hearth.invoke(fname, {})
    assert fresh.status_code == 200 and fresh.headers["x-hearth-path"] != "warm", fresh.text
    assert sandbox_of(hearth, fresh) != sandbox_of(hearth, first)

    slow = hearth.invoke(fname, {"sleep_ms": 5000})
    assert slow.status_code == 504, slow.text
    after = hearth.invoke(fname, {})
    assert after.status_code == 200 and after.headers["x-hearth-path"] != "warm"
    assert sandbox_of(hearth, after) != sandbox_of(hearth, fresh)


def test_batched_items_run_one_after_another(hearth: HearthServer, fname: str, go_runtime: bytes) -> None:
    deploy_go(hearth, fname, go_runtime, batch={"max_size": 4, "max_wait_ms": 200}, max_instances=1)
    with httpx.Client(base_url=hearth.base_url, headers=hearth.client.headers, timeout=60) as client:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            replies = list(pool.map(lambda n: client.post(f"/api/functions/{fname}/invoke", json={"n": n}), range(4)))
    assert [r.status_code for r in replies] == [200] * 4
    assert sorted(r.json()["event"]["n"] for r in replies) == [0, 1, 2, 3]
    assert all(r.json()["request_id"] == r.headers["x-hearth-invocation-id"] for r in replies)


# ------------------------------------------------------------------------------------ hostile runtimes


@pytest.mark.parametrize("backend", ["docker", MICROVM], indirect=True)
def test_wrong_request_id_and_early_next_get_aws_errors(
    hearth: HearthServer, fname: str, go_runtime: bytes, backend: str
) -> None:
    deploy_go(hearth, fname, go_runtime, backend=backend)
    reply = hearth.invoke(fname, {"wrong_id": True})
    assert reply.status_code == 200, reply.text
    report = reply.json()
    assert report["wrong_status"] == 400
    assert report["wrong_body"] == '{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}'
    assert report["next_status"] == 403 and '"errorType":"InvalidStateTransition"' in report["next_body"]


@pytest.mark.parametrize("backend", ["docker", MICROVM], indirect=True)
def test_bootstrap_that_never_asks_for_work(hearth: HearthServer, fname: str, go_runtime: bytes, backend: str) -> None:
    deploy_go(hearth, fname, go_runtime, backend=backend, timeout_s=1, env={"HOSTILE": "idle"})
    started = time.monotonic()
    reply = hearth.invoke(fname, {})
    assert reply.status_code == 500, reply.text
    error = reply.json()["error"]
    assert error["type"] == "Runtime.InitTimeout" and error.get("phase") == "init"
    assert "not asking for work" in error.get("traceback", "")  # what it printed meanwhile
    assert time.monotonic() - started < 25


def test_bootstrap_that_floods_the_api(hearth: HearthServer, fname: str, go_runtime: bytes) -> None:
    deploy_go(hearth, fname, go_runtime, timeout_s=3, env={"HOSTILE": "flood"}, max_instances=2)
    for _ in range(3):  # each call is answered, or fails cleanly by the timeout: the pool is never wedged
        reply = hearth.invoke(fname, {"n": 1})
        assert reply.status_code in (200, 504), reply.text
    other = f"{fname}-ok"
    deploy_go(hearth, other, go_runtime)
    assert hearth.invoke(other, {"n": 2}).status_code == 200
    assert hearth.client.get("/healthz").status_code == 200


# ------------------------------------------------------------------------------------------- refusals


def test_provided_refused_where_it_cannot_run(hearth: HearthServer, fname: str) -> None:
    body = {"name": fname, "language": "provided", "code": TUTORIAL_BOOTSTRAP}
    concurrent = hearth.client.post("/api/functions", json={**body, "concurrency": 4})
    assert concurrent.status_code == 422 and "concurrency" in concurrent.text
    # The microVM backend runs custom runtimes (below), but no function with a network
    microvm = hearth.client.post("/api/functions", json={**body, "backend": "microvm", "network": True})
    assert microvm.status_code == 422
    assert "network" in microvm.json()["error"]["message"] or "not available" in microvm.text
    python_image = hearth.client.post("/api/functions", json={"name": fname, "language": "python", "image": "x:1"})
    assert python_image.status_code == 422


def test_provided_stem_cells_start_once_needed_and_take_the_functions_limits(
    hearth: HearthServer, fname: str, go_runtime: bytes, docker_client: Any
) -> None:
    deploy_go(hearth, fname, go_runtime)
    assert hearth.invoke(fname, {}).status_code == 200  # a provided function was started on docker: cells follow
    deadline = time.monotonic() + 60
    while hearth.client.get("/readyz").json()["stem_cells"].get("docker/provided", 0) < 1:
        assert time.monotonic() < deadline, "no provided stem cell started"
        time.sleep(0.2)
    second = f"{fname}-2"
    deploy_go(hearth, second, go_runtime, memory_mb=96, env={"GREETING": "stem"})
    reply = hearth.invoke(second, {"n": 1})
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-hearth-path"] == "stem"
    assert reply.json()["env"]["GREETING"] == "stem" and reply.json()["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "96"
    [container] = docker_client.containers.list(filters={"name": sandbox_of(hearth, reply)})
    cgroup = f"/sys/fs/cgroup/memory/docker/{container.id}/memory.limit_in_bytes"
    with open(cgroup) as limit:
        assert int(limit.read()) == 96 * 1024 * 1024


def test_boto3_provided_al2023_zip_with_client_context(hearth: HearthServer, fname: str, go_runtime: bytes) -> None:
    boto3 = pytest.importorskip("boto3")
    aws = boto3.client(
        "lambda",
        endpoint_url=hearth.base_url,
        region_name="eu-west-1",
        aws_access_key_id="hearth",
        aws_secret_access_key=hearth.api_key,
    )
    created = aws.create_function(
        FunctionName=fname,
        Runtime="provided.al2023",
        Handler="bootstrap",
        Role="arn:aws:iam::000000000000:role/x",
        Code={"ZipFile": base64.b64decode(go_zip(go_runtime))},
    )
    assert created["Runtime"] == "provided"  # Lambda's alias is accepted; the function reports what runs
    context = {"custom": {"tenant": "t1"}, "client": {"app_title": "tests"}}
    result = aws.invoke(
        FunctionName=fname,
        Payload=b'{"via": "boto3"}',
        ClientContext=base64.b64encode(json.dumps(context, indent=2).encode()).decode(),
    )
    assert "FunctionError" not in result, result
    body = json.loads(result["Payload"].read())
    assert body["event"] == {"via": "boto3"} and json.loads(body["client_context"]) == context
    assert body["env"]["_HANDLER"] == "bootstrap"
