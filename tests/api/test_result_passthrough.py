"""A function's result reaches every caller as the bytes its agent encoded, never parsed and encoded again.

The Python agent writes 1e-7 as `1e-07` (Python's json); any re-encoding on the host (orjson) would
write `1e-7`. So each caller below gets `1e-07` only if the agent's bytes pass through: the HTTP
response of /api invoke, the HTTP trigger, the Lambda API, and the job store of async invocations.
"""

from __future__ import annotations

import sqlite3
import time

import httpx

from hearth.testing import HearthServer

CODE = "def handler(event, context):\n    return {'small': 1e-7, 'text': 'héllo'}\n"
AGENT_BYTES = '{"small":1e-07,"text":"héllo"}'.encode()
RESPONSE = "def handler(event, context):\n    return {'statusCode': 201, 'body': 'made', 'headers': {'X-A': 'b'}}\n"


def test_api_trigger_and_lambda_api_send_the_agents_bytes(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, CODE)
    via_api = hearth.invoke(fname)
    assert via_api.status_code == 200 and via_api.content == AGENT_BYTES
    via_trigger = httpx.get(f"{hearth.base_url}/fn/{fname}", timeout=60)
    assert via_trigger.status_code == 200 and via_trigger.content == AGENT_BYTES
    assert via_trigger.headers["content-type"] == "application/json"
    via_lambda = httpx.post(
        f"{hearth.base_url}/2015-03-31/functions/{fname}/invocations",
        content=b"{}",
        headers={"Authorization": f"Bearer {hearth.api_key}"},
        timeout=60,
    )
    assert via_lambda.status_code == 200 and via_lambda.content == AGENT_BYTES


def test_a_trigger_still_unpacks_a_response_object(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, RESPONSE)
    response = httpx.get(f"{hearth.base_url}/fn/{fname}", timeout=60)
    assert (response.status_code, response.text, response.headers["x-a"]) == (201, "made", "b")


def test_the_job_store_keeps_the_agents_bytes(hearth: HearthServer, fname: str) -> None:
    hearth.deploy(fname, CODE)
    queued = hearth.client.post(f"/api/functions/{fname}/invoke", params={"mode": "async"}, json={})
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["invocation_id"]
    job = hearth.wait_job(job_id)
    assert job["status"] == "succeeded" and job["result"] == {"small": 1e-7, "text": "héllo"}
    deadline = time.monotonic() + 30
    with sqlite3.connect(hearth.data_dir / "hearth.db") as db:
        while (stored := db.execute("SELECT result FROM jobs WHERE id = ?", (job_id,)).fetchone()) is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert stored[0].encode() == AGENT_BYTES
