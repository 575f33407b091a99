"""One invocation record per call, built by the engine, whichever way the call came in: the API's
invoke, the HTTP trigger, Lambda's Invoke and the async queue each leave a record with their mode
and the call's request and result sizes."""

from __future__ import annotations

import time
from typing import Any

import boto3
import httpx
import orjson

from hearth.testing import HearthServer

ECHO = "def handler(event, context):\n    return {'echo': event}\n"


def record_of(hearth: HearthServer, record_id: str) -> dict[str, Any]:
    """A record reaches the store from the recorder's write-behind buffer: it may take a moment."""
    deadline = time.monotonic() + 10
    while (response := hearth.client.get(f"/api/invocations/{record_id}")).status_code == 404:
        assert time.monotonic() < deadline, f"no record {record_id}"
        time.sleep(0.1)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_every_entry_point_leaves_one_record_with_its_mode_and_sizes(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, ECHO)
    event = {"n": 12345, "s": "héllo ✓"}  # sizes are bytes, not characters
    request = orjson.dumps(event)
    result_size = len(orjson.dumps({"echo": event}))

    api = hearth.client.post(f"/api/functions/{fname}/invoke", content=request)
    assert api.status_code == 200, api.text
    trigger = httpx.post(f"{hearth.base_url}/fn/{fname}", content=b"plain text body", timeout=30)
    assert trigger.status_code == 200, trigger.text
    aws = boto3.client(
        "lambda",
        endpoint_url=hearth.base_url,
        region_name="us-east-1",
        aws_access_key_id="hearth",
        aws_secret_access_key=hearth.api_key,
    )
    lambda_call = aws.invoke(FunctionName=fname, Payload=request)
    assert lambda_call["StatusCode"] == 200
    queued = hearth.client.post(f"/api/functions/{fname}/invoke", params={"mode": "async"}, content=request)
    assert queued.status_code == 202, queued.text
    job = hearth.wait_job(queued.json()["invocation_id"])
    assert job["status"] == "succeeded", job

    by_mode = {
        "sync": record_of(hearth, api.headers["X-Hearth-Invocation-Id"]),
        "http": record_of(hearth, trigger.headers["X-Hearth-Invocation-Id"]),
        "lambda": record_of(hearth, lambda_call["ResponseMetadata"]["RequestId"]),
        "async": record_of(hearth, job["last_record_id"]),
    }
    for via, record in by_mode.items():
        assert record["function"] == fname and record["status"] == "ok", (via, record)
        assert record["mode"] == ("sync" if via == "lambda" else via), (via, record)
    for via in ("sync", "lambda", "async"):  # the event as sent (the queue's stored copy is the same JSON)
        assert by_mode[via]["request_bytes"] == len(request), (via, by_mode[via])
        assert by_mode[via]["response_bytes"] == result_size, (via, by_mode[via])
    assert by_mode["http"]["request_bytes"] == len(b"plain text body")
    assert by_mode["http"]["response_bytes"] > len(b"plain text body")  # the result holds the whole event
    # exactly one record per call
    listed = hearth.client.get("/api/invocations", params={"function": fname}).json()["invocations"]
    assert sorted(r["id"] for r in listed) == sorted(r["id"] for r in by_mode.values())
